#include "gdpr/schema_changes.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "gdpr/topic_filter.hpp"
#include "gdpr/topic_router.hpp"

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

    // Every rule of `was` at or below `node` that needed consent.
    template <class Judge> void each_consent_rule(std::int32_t node, const Judge& judge) {
        const auto& n = old_node(node);
        if (n.rule != NONE && old_rule(n.rule).consent_bit >= 0) note(n.rule, judge(old_rule(n.rule)));
        for (const auto& member : n.members) each_consent_rule(member.second, judge);
        if (n.wildcard != NONE) each_consent_rule(n.wildcard, judge);
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
            each_consent_rule(old_at, [&](const field_rule& was) { return passing_within(was, new_at); });
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

// Example topics of a filter, routed through both sets to find where its topics go: a "+" stands
// as a level no filter of either set names, and a trailing '#' as zero, one, ... such levels, up
// to one past the deepest filter that overlaps it (past that, only '#' filters match).
class example_topics {
public:
    example_topics(const schema_set& before, const schema_set& after) {
        std::set<std::string_view> named;
        for (const auto* set : {&before, &after})
            for (const auto& s : set->schemas)
                for (const auto& filter : s.topics) {
                    const auto levels = split_topic_levels(filter);
                    named.insert(levels.begin(), levels.end());
                    filters_.add(filter, levels.size());
                }
        while (named.count(unnamed_)) unnamed_ += '~';
    }

    template <class Visit> void each(std::string_view filter, const Visit& visit) const {
        auto levels = split_topic_levels(filter);
        const bool open_ended = levels.back() == "#";
        if (open_ended) levels.pop_back();
        std::string topic;
        for (std::size_t i = 0; i < levels.size(); ++i) {
            if (i) topic += '/';
            topic += levels[i] == "+" ? std::string_view(unnamed_) : levels[i];
        }
        if (!topic.empty()) visit(topic);  // "/#" leaves "", which is no topic
        if (!open_ended) return;
        std::size_t deepest = 0;
        filters_.each_overlapping(filter, [&](std::string_view, std::size_t depth) { deepest = std::max(deepest, depth); });
        for (std::size_t depth = levels.size(); depth <= deepest; ++depth) {
            topic += (depth ? "/" : "") + unnamed_;
            visit(topic);
        }
    }

private:
    std::string unnamed_ = "~";
    overlap_index filters_;  // every filter of both sets -> its number of levels
};

// Fields that needed consent on topics another schema (or none) classifies now. Both sets route
// example topics of every old filter of a schema that needs consent, and of its overlaps with
// other schemas' new filters; the same schema's rules are compared by compare_schema_sets. Each
// pair of schemas is compared once, named with the first topics found going from one to the other.
void compare_topic_moves(const schema_set& before, const schema_set& after, unmatched_policy unmatched,
                         std::vector<std::string>& out) {
    std::set<std::string_view> kept_ids;
    for (const auto& s : after.schemas) kept_ids.insert(s.id);
    const example_topics examples(before, after);
    overlap_index new_filters;
    for (std::size_t i = 0; i < after.schemas.size(); ++i)
        for (const auto& filter : after.schemas[i].topics) new_filters.add(filter, i);
    constexpr std::size_t NO_SCHEMA = SIZE_MAX;
    std::set<std::pair<std::size_t, std::size_t>> compared;  // indexes into before, after
    auto check = [&](const std::string& filter) {
        examples.each(filter, [&](const std::string& topic) {
            const auto was = before.router.route(topic);
            if (was == topic_router::NO_ROUTE || !before.schemas[static_cast<std::size_t>(was)].needs_consent) return;
            const schema& old = before.schemas[static_cast<std::size_t>(was)];
            const auto now = after.router.route(topic);
            if (now != topic_router::NO_ROUTE && after.schemas[static_cast<std::size_t>(now)].id == old.id) return;
            // Refused where unmatched topics are; a removed schema's topics matching nothing is the
            // removal itself, which has a permission of its own.
            if (now == topic_router::NO_ROUTE && (unmatched == unmatched_policy::deny || !kept_ids.count(old.id))) return;
            const std::size_t now_index = now == topic_router::NO_ROUTE ? NO_SCHEMA : static_cast<std::size_t>(now);
            if (!compared.emplace(static_cast<std::size_t>(was), now_index).second) return;
            if (now_index != NO_SCHEMA) {
                const schema& taker = after.schemas[now_index];
                compare_fields(old, taker, taker.id, " on " + filter, out);
                return;
            }
            for (const auto& rule : old.fields)
                if (rule.consent_bit >= 0)
                    out.push_back(old.id + " " + rule.pointer + " (" + rule.purpose + " -> no schema, passed) on " + filter);
        });
    };
    for (const auto& old : before.schemas) {
        if (!old.needs_consent) continue;
        for (const auto& filter : old.topics) {
            // Overlaps first: they name the topics another schema takes more closely.
            new_filters.each_overlapping(filter, [&](std::string_view other_filter, std::size_t other) {
                if (after.schemas[other].id == old.id) return;
                if (auto shared = intersect_filters(filter, other_filter)) check(*shared);
            });
            check(filter);
        }
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
