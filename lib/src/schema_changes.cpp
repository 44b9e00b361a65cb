#include "gdpr/schema_changes.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "gdpr/topic_moves.hpp"

namespace gdpr {

namespace {

constexpr std::int32_t NONE = field_tree::NONE;

// How `rule` treats a value that needed consent to `was`'s purpose: nothing when it still needs
// that consent or does not pass (dropped, or masked: a fixed value); else what it passes under
// ("" when its purpose is the same and left consent).
std::optional<std::string> passing_under(const field_rule& was, const field_rule& rule) {
    if (rule.action == field_action::drop || rule.action == field_action::mask) return std::nullopt;
    if (rule.purpose == was.purpose) return rule.consent_bit >= 0 ? std::nullopt : std::optional<std::string>("");
    // GDPR Art. 6(1)(a), 7: consent is given to a purpose; consent to another one does not stand in.
    if (rule.consent_bit >= 0) return rule.purpose + " (consent)";
    return rule.purpose.empty() ? std::string("not personal") : rule.purpose;
}

// Walks the rule trees of two schemas together over the same payload positions, as the payload
// filter walks a payload: a member goes by its exact rule, else by "*"; the first rule met governs
// the whole value; what no rule names is unclassified. Wherever a rule of `was` needed consent,
// finds how `now` lets that value, or a part of it, pass without it.
class consent_comparison {
public:
    consent_comparison(const schema& was, const schema& now) : was_(was), now_(now) {}

    // Index of each `was` rule that needed consent and no longer does -> how it passes now.
    std::map<std::int32_t, std::string> run() {
        walk(0, 0);
        return found_;
    }

private:
    const field_tree::node& old_node(std::int32_t i) const { return was_.tree.nodes[static_cast<std::size_t>(i)]; }
    const field_tree::node& new_node(std::int32_t i) const { return now_.tree.nodes[static_cast<std::size_t>(i)]; }
    const field_rule& old_rule(std::int32_t i) const { return was_.fields[static_cast<std::size_t>(i)]; }

    void note(std::int32_t rule, std::optional<std::string> became) {
        if (became) found_.emplace(rule, std::move(*became));  // the first way found names it
    }

    // Every rule of `was` at or below `old_at` that needed consent, where `now` classifies the
    // whole value at `new_at` (NONE: unclassified).
    void note_rules_within(std::int32_t old_at, std::int32_t new_at) {
        const auto& o = old_node(old_at);
        if (o.rule != NONE && old_rule(o.rule).consent_bit >= 0) note(o.rule, passing_within(old_rule(o.rule), new_at));
        for (const auto& member : o.members) note_rules_within(member.second, new_at);
        if (o.wildcard != NONE) note_rules_within(o.wildcard, new_at);
    }

    // How `now` lets a value it classifies at `node` (NONE: unclassified) pass without `was`'s
    // consent: its rule, else the rules inside it and what they leave unclassified.
    std::optional<std::string> passing_within(const field_rule& was, std::int32_t node) const {
        if (node != NONE) {
            const auto& n = new_node(node);
            if (n.rule != NONE) return passing_under(was, now_.fields[static_cast<std::size_t>(n.rule)]);
            for (const auto& member : n.members)
                if (auto became = passing_within(was, member.second)) return became;
            if (n.wildcard != NONE) return passing_within(was, n.wildcard);
        }
        if (now_.unclassified == unclassified_policy::keep) return std::string("unclassified, kept");
        return std::nullopt;
    }

    void walk(std::int32_t old_at, std::int32_t new_at) {
        if (old_at == NONE) return;  // unclassified before: nothing needed consent
        const auto& o = old_node(old_at);
        if (o.rule != NONE) {
            if (old_rule(o.rule).consent_bit >= 0) note(o.rule, passing_within(old_rule(o.rule), new_at));
            return;
        }
        if (new_at == NONE || new_node(new_at).rule != NONE) {  // unclassified now, or under one rule
            note_rules_within(old_at, new_at);
            return;
        }
        const auto& n = new_node(new_at);
        std::set<std::string_view> names;
        for (const auto& member : o.members) names.insert(member.first);
        for (const auto& member : n.members) names.insert(member.first);
        for (const auto name : names) walk(was_.tree.child(old_at, name), now_.tree.child(new_at, name));
        walk(o.wildcard, n.wildcard);  // every other member
    }

    const schema& was_;
    const schema& now_;
    std::map<std::int32_t, std::string> found_;
};

// Appends "id /pointer (purpose -> ...)<suffix>" for each field of `was` that needed consent and,
// where `now` classifies the payload, passes without it.
void compare_fields(const schema& was, const schema& now, const std::string& now_prefix, const std::string& suffix,
                    std::vector<std::string>& out) {
    for (const auto& [rule, became] : consent_comparison(was, now).run()) {
        const field_rule& r = was.fields[static_cast<std::size_t>(rule)];
        const std::string how = now_prefix.empty() ? became : now_prefix + (became.empty() ? "" : ": " + became);
        out.push_back(was.id + " " + r.pointer + " (" + r.purpose + (how.empty() ? "" : " -> " + how) + ")" + suffix);
    }
}

// Fields that needed consent on topics another schema (or none) classifies now; the same
// schema's rules are compared by compare_schema_sets.
void compare_topic_moves(const schema_set& before, const schema_set& after, unmatched_policy unmatched,
                         std::vector<std::string>& out) {
    for (const auto& move : find_topic_moves(before, after, unmatched, [](const schema& s) { return s.needs_consent; })) {
        if (move.to) {
            compare_fields(*move.from, *move.to, move.to->id, " on " + move.filter, out);
            continue;
        }
        for (const auto& rule : move.from->fields)
            if (rule.consent_bit >= 0)
                out.push_back(move.from->id + " " + rule.pointer + " (" + rule.purpose + " -> no schema, passed) on " +
                              move.filter);
    }
}

} // namespace

schema_changes compare_schema_sets(const schema_set& before, const schema_set& after, unmatched_policy unmatched) {
    schema_changes c;
    std::map<std::string, const schema*> old_by_id;
    for (const auto& s : before.schemas) old_by_id[s.id] = &s;
    for (const auto& s : after.schemas) {
        c.topic_filters += s.topics.size();
        const auto it = old_by_id.find(s.id);
        if (it == old_by_id.end()) {
            c.added.push_back(s.tag());
            continue;
        }
        compare_fields(*it->second, s, "", "", c.fields_leaving_consent);
        if (s.version < it->second->version) c.older_versions.push_back(it->second->tag() + " -> " + s.tag());
        else if (it->second->version != s.version) c.new_versions.push_back(it->second->tag() + " -> " + s.tag());
        else if (it->second->content_hash != s.content_hash) c.edited_unversioned.push_back(s.tag());
        old_by_id.erase(it);
    }
    for (const auto& [id, s] : old_by_id) c.removed.push_back(s->tag());
    compare_topic_moves(before, after, unmatched, c.fields_leaving_consent);
    c.schemas = after.schemas.size();
    for (auto* list : {&c.added, &c.removed, &c.new_versions, &c.edited_unversioned, &c.older_versions,
                       &c.fields_leaving_consent})
        std::sort(list->begin(), list->end());
    return c;
}

} // namespace gdpr
