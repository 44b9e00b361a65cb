#include "gdpr/classifier.hpp"

#include "gdpr/errors.hpp"
#include "gdpr/secret_file.hpp"
#include "gdpr/topic_filter.hpp"

namespace gdpr {

std::unique_ptr<classifier> classifier::load(const plugin_options& options, logger& log) {
    check_schema_directory(options.schemas_dir);
    purpose_registry purposes = load_purposes(options.purposes_file);
    schema_set schemas = load_schema_directory(options.schemas_dir, purposes);
    std::unique_ptr<pseudonymiser> pseudonyms;
    if (!options.pseudonym_key_file.empty()) {
        const std::string key =
            read_secret_file("pseudonym_key_file", options.pseudonym_key_file, pseudonymiser::MIN_KEY_BYTES);
        pseudonyms = std::make_unique<pseudonymiser>(key);
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

void classifier::replace_definitions(definitions&& next) noexcept {
    // purposes_ is assigned, not replaced: control_api keeps a reference to it.
    purposes_ = std::move(next.purposes);
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

namespace {
// The rule that covers the member at `tokens`, wildcards included; null when none does.
const field_rule* rule_at(const schema& s, const std::vector<std::string>& tokens) {
    std::int32_t node = 0;
    for (const auto& token : tokens) {
        node = s.tree.child(node, token);
        if (node == field_tree::NONE) return nullptr;
    }
    const std::int32_t rule = s.tree.nodes[static_cast<std::size_t>(node)].rule;
    return rule == field_tree::NONE ? nullptr : &s.fields[static_cast<std::size_t>(rule)];
}
} // namespace

bool classifier::pseudonymises_consent_subject() const {
    for (const auto& s : schemas_.schemas) {
        if (!s.needs_consent || s.subject.kind != subject_kind::field) continue;
        const field_rule* rule = rule_at(s, s.subject.pointer_tokens);
        if (rule && rule->action == field_action::pseudonymise) return true;
    }
    return false;
}

stored_check classifier::recheck_stored(std::string_view topic, std::string_view payload) {
    stored_check c;
    c.matched = schemas_.route(topic);
    if (!c.matched || !c.matched->needs_consent || payload.empty()) return c;
    const schema& s = *c.matched;
    // The broker does not say who published a stored message, so bound subjects are unknown.
    if (s.subject.kind != subject_kind::topic_level && s.subject.kind != subject_kind::field) return c;
    bool by_pseudonym = false;
    if (s.subject.kind == subject_kind::field) {
        const field_rule* rule = rule_at(s, s.subject.pointer_tokens);
        const field_action action = rule ? rule->action : (s.unclassified == unclassified_policy::keep ? field_action::keep
                                                                                                     : field_action::drop);
        if (action != field_action::keep && action != field_action::pseudonymise) return c;  // not in the stored copy
        by_pseudonym = action == field_action::pseudonymise;
    }
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
    const schema* s = schemas_.route(topic);
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
