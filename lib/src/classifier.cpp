#include "gdpr/classifier.hpp"

#include <algorithm>
#include <tuple>

#include "gdpr/errors.hpp"
#include "gdpr/field_path.hpp"
#include "gdpr/secret_file.hpp"
#include "gdpr/topic_filter.hpp"

namespace gdpr {

std::unique_ptr<classifier> classifier::load(const plugin_options& options, logger& log, wiped_string* pseudonym_key) {
    check_schema_directory(options.schemas_dir);
    purpose_registry purposes = load_purposes(options.purposes_file);
    schema_set schemas = load_schema_directory(options.schemas_dir, purposes);
    std::unique_ptr<pseudonymiser> pseudonyms;
    if (!options.pseudonym_key_file.empty()) {
        wiped_string key = read_secret_file("pseudonym_key_file", options.pseudonym_key_file, pseudonymiser::MIN_KEY_BYTES);
        pseudonyms = std::make_unique<pseudonymiser>(key);
        if (pseudonym_key) *pseudonym_key = std::move(key);
    } else if (schemas.needs_pseudonym_key()) {
        throw config_error("pseudonym_key_file", "required because a schema uses action \"pseudonymise\", but it is not set");
    }
    std::size_t filters = 0;
    for (const auto& s : schemas.schemas) filters += s.topics.size();
    log.notice("loaded " + std::to_string(schemas.schemas.size()) + " schemas (" + std::to_string(filters) +
               " topic filters) and " + std::to_string(purposes.size()) + " purposes from " + options.schemas_dir);
    if (schemas.schemas.empty()) log.warning("no schema files in " + options.schemas_dir + ": nothing will be classified");
    auto c = std::make_unique<classifier>(std::move(schemas), options.unmatched, std::move(pseudonyms), std::move(purposes));
    c->log_schema_warnings(log);
    return c;
}

void classifier::log_schema_warnings(logger& log) const {
    for (const auto& s : schemas_.schemas) {
        if (s.needs_consent && s.subject.kind == subject_kind::none)
            log.warning("schema " + s.tag() + " has fields whose purpose rests on consent but declares no \"subject\": "
                        "those fields will always be dropped");
    }
    for (const auto& w : schemas_.warnings) log.warning(w);
}

classifier::definitions classifier::load_definitions(const std::string& purposes_file, const std::string& dir) const {
    definitions next;
    next.purposes = load_purposes(purposes_file);
    next.schemas = load_schema_directory(dir, next.purposes);
    if (next.schemas.needs_pseudonym_key() && !pseudonyms_)
        throw config_error("pseudonym_key_file", "required because a schema uses action \"pseudonymise\", but it was "
                                                 "not set when the broker started (restart the broker to add it)");
    return next;
}

namespace {
bool any_consent_fields(const schema_set& set) {
    for (const auto& s : set.schemas)
        if (s.needs_consent) return true;
    return false;
}
} // namespace

namespace {
// Which rules rest on consent: purposes.json may change that without a schema edit.
std::string consent_signature(const schema& s) {
    std::string sig;
    for (const auto& rule : s.fields) sig.push_back(rule.consent_bit >= 0 ? 'c' : '-');
    return sig;
}

// As consent_signature() compares them, without building it: stored deliveries ask this.
bool same_rules(const schema& a, const schema& b) {
    if (a.tag() != b.tag() || a.content_hash != b.content_hash || a.fields.size() != b.fields.size()) return false;
    for (std::size_t i = 0; i < a.fields.size(); ++i)
        if ((a.fields[i].consent_bit >= 0) != (b.fields[i].consent_bit >= 0)) return false;
    return true;
}

// The same schemas (by id, version, rules and the purposes that need consent), whatever their order.
bool same_rules(const schema_set& a, const schema_set& b) {
    if (a.schemas.size() != b.schemas.size()) return false;
    std::vector<std::tuple<std::string_view, std::size_t, std::string>> x, y;
    for (const auto& s : a.schemas) x.emplace_back(s.tag(), s.content_hash, consent_signature(s));
    for (const auto& s : b.schemas) y.emplace_back(s.tag(), s.content_hash, consent_signature(s));
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    return x == y;
}
} // namespace

void classifier::replace_definitions(definitions&& next) noexcept {
    // purposes_ is assigned, not replaced: control_api keeps a reference to it.
    purposes_ = std::move(next.purposes);
    bool same = false;
    try {
        same = same_rules(schemas_, next.schemas);
    } catch (...) {  // out of memory: count them as different, which only checks more
    }
    if (!same) {
        if (retired_.size() == MAX_RETIRED) {
            retired_.erase(retired_.begin());
            retired_forgotten_ = true;
        }
        retired_.push_back(std::move(schemas_));  // capacity reserved: does not allocate
    }
    schemas_ = std::move(next.schemas);
    has_consent_fields_ = any_consent_fields(schemas_);
    subjects_.clear();
    outcomes_.clear();  // they name fields of the previous schemas
}

classifier::classifier(schema_set schemas, unmatched_policy unmatched, std::unique_ptr<pseudonymiser> pseudonyms,
                       purpose_registry purposes)
    : schemas_(std::move(schemas)), purposes_(std::move(purposes)), unmatched_(unmatched), pseudonyms_(std::move(pseudonyms)),
      filter_(pseudonyms_.get()) {
    out_.reserve(4096);
    retired_.reserve(MAX_RETIRED);
    has_consent_fields_ = any_consent_fields(schemas_);
}

publish_verdict classifier::classify(std::string_view topic, std::string_view payload, std::string_view client_id) {
    ++stats_.messages;
    subjects_.clear();
    if (detailed_) outcomes_.clear();
    publish_verdict v;
    v.matched = schemas_.route(topic);
    if (!v.matched) {
        ++stats_.unmatched;
        if (unmatched_ == unmatched_policy::deny) {
            ++stats_.refused_unmatched;
            v.action = publish_action::deny;
            v.reason = "no schema covers the topic (unmatched_topics deny)";
        }
        return v;
    }
    ++stats_.classified;
    if (payload.empty()) return v;
    std::uint64_t consented = 0;
    const bool consent_check = v.matched->needs_consent && consent_;
    if (consent_check || detailed_ || keep_subjects_) subjects_ = subjects_of(*v.matched, topic, payload, client_id);
    // Hundreds of thousands of subjects outgrow the caches: each lookup below waits on memory,
    // so all of them are started together.
    for (const auto& subject : subjects_) {
        if (consent_check) consent_->prefetch(subject);
        if (prefetch_subject_) prefetch_subject_(subject);
    }
    if (consent_check) {
        // GDPR Art. 6(1)(a), 7: a field passes only with the consent of every subject it is about;
        // no known subject means no consent.
        if (subjects_.empty()) ++stats_.no_subject;
        for (std::size_t i = 0; i < subjects_.size(); ++i) {
            const auto mask = consent_->granted_mask(subjects_[i]);
            consented = i == 0 ? mask : (consented & mask);
        }
    }
    v.filter = filter_.run(*v.matched, consented, payload, out_, detailed_ ? &outcomes_ : nullptr);
    if (v.filter.status != filter_status::ok) {
        ++stats_.refused_invalid;
        v.action = publish_action::deny;
        v.reason = to_string(v.filter.status);
        return v;
    }
    stats_.fields_dropped += v.filter.dropped;
    stats_.fields_transformed += v.filter.transformed;
    stats_.fields_unsupported += v.filter.unsupported;
    stats_.fields_unclassified_dropped += v.filter.unclassified_dropped;
    stats_.fields_no_consent += v.filter.no_consent;
    v.action = v.filter.changed() ? publish_action::replace : publish_action::pass;
    return v;
}

std::vector<std::string> classifier::subjects_of(const schema& s, std::string_view topic, std::string_view payload,
                                                std::string_view client_id) const {
    std::vector<std::string> subjects;
    switch (s.subject.kind) {
    case subject_kind::field: {
        std::string value;
        if (payload_filter::find_scalar(payload, s.subject.pointer_tokens, value) && !value.empty())
            subjects.push_back(std::move(value));
        break;
    }
    case subject_kind::topic_level: {
        const auto levels = split_topic_levels(topic);
        const auto i = static_cast<std::size_t>(s.subject.topic_level);
        if (i < levels.size() && !levels[i].empty()) subjects.emplace_back(levels[i]);
        break;
    }
    case subject_kind::binding:
        if (consent_) {
            if (const auto* bound = consent_->subjects_bound_to(client_id)) subjects = *bound;
        }
        break;
    case subject_kind::none: break;
    }
    return subjects;
}

bool classifier::pseudonymises_consent_subject() const {
    for (const auto& s : schemas_.schemas) {
        if (!s.needs_consent || s.subject.kind != subject_kind::field) continue;
        if (subject_pseudonymised(s, rule_covering(s, s.subject.pointer_tokens))) return true;
    }
    return false;
}

namespace {
// Whether every rule that governs a member `tokens` can reach from `node` of `s` (a rule on an
// enclosing value covers all of it, as the payload filter applies it; "*" reaches every member,
// the ones a literal rule names too) satisfies `ok`. A member no rule governs fails.
template <typename Ok>
bool governed_everywhere(const schema& s, std::int32_t node, const std::vector<std::string>& tokens, std::size_t at,
                         const Ok& ok) {
    const auto& n = s.tree.nodes[static_cast<std::size_t>(node)];
    if (n.rule != field_tree::NONE) return ok(s.fields[static_cast<std::size_t>(n.rule)]);
    if (at == tokens.size()) return false;
    if (tokens[at] == field_path::WILDCARD) {
        if (n.wildcard == field_tree::NONE || !governed_everywhere(s, n.wildcard, tokens, at + 1, ok)) return false;
        for (const auto& member : n.members)
            if (!governed_everywhere(s, member.second, tokens, at + 1, ok)) return false;
        return true;
    }
    const std::int32_t child = s.tree.child(node, tokens[at]);
    return child != field_tree::NONE && governed_everywhere(s, child, tokens, at + 1, ok);
}

bool same_subject(const subject_source& a, const subject_source& b) {
    return a.kind == b.kind && a.pointer == b.pointer && a.topic_level == b.topic_level;
}

// The stored message names its subject where the schema in use keeps it there: a topic level, or
// the subject field kept or pseudonymised.
bool subject_in_stored_copy(const schema& s) {
    if (s.subject.kind == subject_kind::topic_level) return true;
    if (s.subject.kind != subject_kind::field) return false;
    const field_rule* rule = rule_covering(s, s.subject.pointer_tokens);
    if (!rule) return s.unclassified == unclassified_policy::keep;
    return rule->action == field_action::keep || subject_pseudonymised(s, rule);
}
} // namespace

classifier::earlier_filtering classifier::filtered_earlier(std::string_view topic, const schema* current) {
    earlier_filtering f;
    // Forgotten sets may have had any rules, or a schema for any topic but the broker's own.
    f.otherwise = retired_forgotten_;
    f.had_schema = retired_forgotten_ && !topic.empty() && topic.front() != '$';
    const bool vouched = current && current->needs_consent && !subject_in_stored_copy(*current);
    if (vouched) stored_consent_unknown_.assign(current->fields.size(), retired_forgotten_);
    field_path path;
    for (const auto& earlier : retired_) {
        const schema* then = earlier.route(topic);
        f.had_schema = f.had_schema || then;
        if (then == current) continue;  // both null
        if (then && current && same_rules(*then, *current)) continue;
        f.otherwise = true;
        if (!vouched) continue;
        for (std::size_t i = 0; i < current->fields.size(); ++i) {
            const field_rule& rule = current->fields[i];
            if (rule.consent_bit < 0 || stored_consent_unknown_[i]) continue;
            // Checked at publish only if the rules then took the subject from the same place and
            // made the member rest on the same purpose.
            const bool checked = then && same_subject(then->subject, current->subject) &&
                                 parse_field_path(rule.pointer, path).empty() &&
                                 governed_everywhere(*then, 0, path.tokens, 0, [&](const field_rule& r) {
                                     return r.consent_bit >= 0 && r.purpose == rule.purpose;
                                 });
            stored_consent_unknown_[i] = !checked;
        }
    }
    return f;
}

stored_check classifier::refilter_stored(std::string_view topic, std::string_view payload, bool had_schema,
                                         stored_check c) {
    if (!c.matched) {
        // GDPR Art. 5(1)(c): what no schema vouches for does not go out where unmatched topics are refused.
        if (had_schema && unmatched_ == unmatched_policy::deny) c.outcome = stored_consent::unmatched;
        return c;
    }
    const schema& s = *c.matched;
    // Consent as at publish: the subject read from the stored message (its identifier, or its
    // pseudonym: either is found); none found, none given. Where the schema in use leaves no
    // subject in a stored message (bound to the publishing device, or a subject field it removes),
    // what the rules then checked stands, and the rest counts as not given.
    std::uint64_t consented = ~std::uint64_t{0};
    const bool vouched = s.needs_consent && !subject_in_stored_copy(s);
    if (!vouched) {
        consented = 0;
        const auto subjects = subjects_of(s, topic, payload, {});
        if (consent_ && !subjects.empty()) {
            consented = consent_->granted_mask(subjects[0]);
            if (consented == 0 && s.subject.kind == subject_kind::field && consent_->indexes_pseudonyms())
                consented = consent_->granted_mask_by_pseudonym(subjects[0]);
        }
    }
    const filter_result r =
        filter_.refilter_stored(s, consented, payload, vouched ? &stored_consent_unknown_ : nullptr, recheck_out_);
    if (r.status != filter_status::ok) {
        c.outcome = stored_consent::unreadable;
        return c;
    }
    // Filtering writes JSON without the publisher's whitespace: what it leaves as it was is told
    // by comparing with the stored message written the same way.
    const filter_result same = filter_.remove_withdrawn(s, ~std::uint64_t{0}, payload, canonical_);
    if (same.status == filter_status::ok && recheck_out_ == canonical_) {
        c.outcome = stored_consent::still_given;
    } else {
        c.outcome = stored_consent::reclassified;
        c.fields_withdrawn = r.no_consent;
    }
    return c;
}

stored_check classifier::recheck_stored(std::string_view topic, std::string_view payload) {
    stored_check c;
    c.matched = schemas_.route(topic);
    if (payload.empty()) return c;
    if (!retired_.empty()) {
        const earlier_filtering earlier = filtered_earlier(topic, c.matched);
        if (earlier.otherwise) return refilter_stored(topic, payload, earlier.had_schema, c);
    }
    if (!c.matched || !c.matched->needs_consent || !consent_) return c;
    const schema& s = *c.matched;
    // The broker does not say who published a stored message, so bound subjects are unknown, and
    // a subject field the schema removes is not in the stored copy.
    if (!subject_in_stored_copy(s)) return c;
    const field_rule* subject_rule =
        s.subject.kind == subject_kind::field ? rule_covering(s, s.subject.pointer_tokens) : nullptr;
    const bool by_pseudonym = subject_pseudonymised(s, subject_rule);
    // No subject in the stored copy leaves the mask at 0: no known subject, no consent (as at publish).
    std::uint64_t consented = 0;
    const auto subjects = subjects_of(s, topic, payload, {});
    if (consent_ && !subjects.empty())
        consented = by_pseudonym ? consent_->granted_mask_by_pseudonym(subjects[0]) : consent_->granted_mask(subjects[0]);
    const filter_result r = filter_.remove_withdrawn(s, consented, payload, recheck_out_);
    if (r.status != filter_status::ok) {
        c.outcome = stored_consent::unreadable;
    } else if (r.no_consent > 0) {
        c.outcome = stored_consent::withdrawn;
        c.fields_withdrawn = r.no_consent;
    } else {
        c.outcome = stored_consent::still_given;
    }
    return c;
}

std::string classifier::loggable_topic(std::string_view topic) const {
    // A shared subscription's filter: the group stays, the filter the broker matches is hidden.
    if (const auto shared = parse_shared_subscription(topic); shared && !shared->filter.empty())
        return "$share/" + std::string(shared->group) + "/" + loggable_topic(shared->filter);
    const schema* s = schemas_.route(topic);
    // A reload may have left a topic that names its subject to another schema, or to none: the
    // level stays hidden while stored messages on it may still be refused and logged.
    for (auto earlier = retired_.rbegin(); earlier != retired_.rend() && !(s && s->subject.kind == subject_kind::topic_level);
         ++earlier) {
        const schema* then = earlier->route(topic);
        if (then && then->subject.kind == subject_kind::topic_level) s = then;
    }
    if (!s || s->subject.kind != subject_kind::topic_level) return std::string(topic);
    const auto levels = split_topic_levels(topic);
    std::string out;
    for (std::size_t i = 0; i < levels.size(); ++i) {
        if (i) out.push_back('/');
        out.append(static_cast<int>(i) == s->subject.topic_level ? std::string_view("<subject>") : levels[i]);
    }
    return out;
}

const schema* classifier::personal_data_in(std::string_view topic, std::string_view payload) {
    const schema* s = schemas_.route(topic);
    if (!s) return nullptr;
    if (s->subject.kind == subject_kind::topic_level) return s;  // the topic itself names a person
    if (!s->has_personal || payload.empty()) return nullptr;
    // Every consent bit set: a field the delivered payload still holds was allowed when published.
    const auto r = filter_.run(*s, ~std::uint64_t{0}, payload, scratch_);
    // A payload the filter cannot read is treated as personal: fail closed.
    return r.status != filter_status::ok || r.personal_forwarded > 0 ? s : nullptr;
}

publish_verdict classifier::classify_will(std::string_view topic, std::string_view payload, std::string_view client_id) {
    subjects_.clear();
    if (detailed_) outcomes_.clear();
    publish_verdict v;
    v.matched = schemas_.route(topic);
    if (!v.matched) {
        if (unmatched_ != unmatched_policy::pass) {
            v.action = publish_action::deny;
            v.reason = "no schema covers the topic (unmatched_topics deny)";
        }
    } else if (!payload.empty()) {
        if (detailed_ || keep_subjects_) subjects_ = subjects_of(*v.matched, topic, payload, client_id);
        // A will cannot be rewritten: anything consent would have to remove refuses it.
        v.filter = filter_.run(*v.matched, 0, payload, out_, detailed_ ? &outcomes_ : nullptr);
        if (v.filter.status != filter_status::ok) {
            v.action = publish_action::deny;
            v.reason = to_string(v.filter.status);
        } else if (v.filter.changed()) {
            v.action = publish_action::deny;
            v.reason = "a will cannot be rewritten, and classification would remove or change fields";
        }
    }
    if (v.action == publish_action::deny) ++stats_.wills_refused;
    return v;
}

} // namespace gdpr
