#pragma once
// The classification engine the plugin drives: topic -> schema -> filtered payload, plus the
// decision for wills. Owns the loaded schemas and the pseudonymisation key. Broker thread only,
// but for load_definitions, which reads only what is fixed at construction.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gdpr/consent_store.hpp"
#include "gdpr/log.hpp"
#include "gdpr/payload_filter.hpp"
#include "gdpr/plugin_options.hpp"
#include "gdpr/pseudonymiser.hpp"
#include "gdpr/schema_loader.hpp"
#include "gdpr/wiped_memory.hpp"

namespace gdpr {

enum class publish_action {
    pass,      // forward the original payload untouched
    replace,   // forward the filtered payload (classifier's output buffer)
    deny,      // refuse the publish (MQTT v5 reason code 135 for QoS > 0)
};

struct publish_verdict {
    publish_action action = publish_action::pass;
    const schema* matched = nullptr;  // null when no schema covers the topic
    filter_result filter;             // meaningful when matched
    std::string_view reason;          // for deny: why, without payload content
};

struct classifier_stats {
    std::uint64_t messages = 0;
    std::uint64_t classified = 0;
    std::uint64_t unmatched = 0;
    std::uint64_t refused_invalid = 0;
    std::uint64_t refused_unmatched = 0;
    std::uint64_t fields_dropped = 0;
    std::uint64_t fields_transformed = 0;
    std::uint64_t fields_unsupported = 0;
    std::uint64_t fields_unclassified_dropped = 0;
    std::uint64_t fields_no_consent = 0;
    std::uint64_t no_subject = 0;  // classified publishes needing consent whose subject was unknown
    std::uint64_t wills_refused = 0;
    std::uint64_t stored_withdrawn = 0;   // deliveries of stored messages refused: consent withdrawn since
    std::uint64_t stored_unreadable = 0;  // deliveries of stored messages refused: not the JSON the schema describes
    std::uint64_t stored_schema_changed = 0;  // deliveries of stored messages refused: filtered under rules a reload replaced
};

// A message stored before now, checked again against today's consent and schemas before a delivery.
enum class stored_consent : std::uint8_t {
    not_checked,  // no schema, no purpose resting on consent, or the subject cannot be told from
                  // the stored message (device bindings; a subject field the schema removes)
    still_given,  // every field it carries is still covered
    withdrawn,    // some fields' consent has been withdrawn since: rechecked() holds it without them
    unreadable,   // not the JSON the schema describes: nothing can be vouched for
    reclassified, // filtered under rules a schema reload has replaced since, and the rules in use
                  // filter it otherwise: rechecked() holds it as they do
    unmatched,    // a schema reload left its topic to no schema, and unmatched topics are refused
};

struct stored_check {
    const schema* matched = nullptr;
    stored_consent outcome = stored_consent::not_checked;
    std::uint32_t fields_withdrawn = 0;  // members rechecked() leaves out for consent
};

class classifier {
public:
    // Loads purposes, schemas and (when needed) the pseudonymisation key named by `options`, and
    // logs a summary. Throws config_error / schema_error naming the option or file at fault.
    // `pseudonym_key`, when given, receives the key file's bytes, so that other keys derived from
    // it come from the same read.
    static std::unique_ptr<classifier> load(const plugin_options& options, logger& log,
                                            wiped_string* pseudonym_key = nullptr);

    classifier(schema_set schemas, unmatched_policy unmatched, std::unique_ptr<pseudonymiser> pseudonyms,
               purpose_registry purposes = {});

    // Consent and device bindings to check fields against; without a store nobody has consented,
    // so every field whose purpose rests on consent is dropped.
    void attach_consent(const consent_store* store) { consent_ = store; }

    // Classifies one publish from `client_id`. On `replace`, filtered() holds the payload to
    // forward until the next call. An empty payload is passed untouched (it carries no data and
    // clears retained messages).
    publish_verdict classify(std::string_view topic, std::string_view payload, std::string_view client_id = {});

    // The data subjects of a publish, as the schema declares them (payload field, topic level, or
    // the publishing client's device bindings). Empty when none can be resolved.
    std::vector<std::string> subjects_of(const schema& s, std::string_view topic, std::string_view payload,
                                         std::string_view client_id) const;
    const std::string& filtered() const { return out_; }

    // With details on (the audit trail needs them), classify() also resolves the subjects of
    // every classified publish and notes what happened to each field; both are valid until the
    // next call.
    void keep_details(bool on) { detailed_ = on; }
    // With subjects kept (the data map needs them), classify() resolves the subjects of every
    // classified publish, as last_subjects().
    void keep_subjects(bool on) { keep_subjects_ = on; }
    // Called with each subject as soon as it is known, before consent is looked up: lets the
    // data map start loading the subject's entry while the consent lookup waits on memory.
    void prefetch_subjects_with(std::function<void(std::string_view)> fn) { prefetch_subject_ = std::move(fn); }
    const std::vector<std::string>& last_subjects() const { return subjects_; }  // empty when not classified
    const std::vector<field_outcome>& last_outcomes() const { return outcomes_; }

    // A will message cannot be rewritten at the only point the broker shows it (the ACL WRITE
    // check), so a will that classification would change or refuse is refused whole. Fields are
    // checked as if nobody had consented: the will was set when the client connected. Details
    // and subjects are kept as for classify(); on pass the will goes out as it is.
    publish_verdict classify_will(std::string_view topic, std::string_view payload, std::string_view client_id = {});

    // The schema covering `topic` when the message is personal data: `payload` (as the broker
    // delivers it: already filtered, or a will) carries personal fields of that schema, or the
    // schema takes its subject from a topic level; null otherwise. For residency checks on
    // deliveries that are not the current publish (retained messages, queued messages, wills).
    const schema* personal_data_in(std::string_view topic, std::string_view payload);

    // GDPR Art. 7(3): a retained message, or one queued for an offline client, was filtered with
    // the consent given when it was published. Before the broker delivers it, the fields whose
    // consent has been withdrawn since are found again (the subject from the topic level, or from
    // the subject field, kept or pseudonymised; see consent_store::index_pseudonyms). On
    // `withdrawn`, rechecked() holds the message without them until the next call.
    // GDPR Art. 5(1)(c): on a topic that a schema reload since this classifier was made has given
    // other rules, a stored message may have been filtered by any of them: it is filtered again by
    // the rules in use (refilter_stored), and on `reclassified` rechecked() holds the result.
    stored_check recheck_stored(std::string_view topic, std::string_view payload);
    const std::string& rechecked() const { return recheck_out_; }
    // A delivery refused on recheck_stored()'s answer (the caller may answer from a cache).
    void count_stored_refusal(stored_consent outcome) {
        if (outcome == stored_consent::withdrawn) ++stats_.stored_withdrawn;
        if (outcome == stored_consent::unreadable) ++stats_.stored_unreadable;
        if (outcome == stored_consent::reclassified || outcome == stored_consent::unmatched) ++stats_.stored_schema_changed;
    }
    // A schema reload has put other rules in use since this classifier was made: stored messages
    // are then checked against them (recheck_stored), whatever consent says.
    bool schemas_replaced() const { return !retired_.empty(); }
    // Some schema in use pseudonymises the subject field it takes consent from: recheck_stored()
    // then needs the consent store's pseudonym index.
    bool pseudonymises_consent_subject() const;
    // Some schema in use has a field whose purpose rests on consent.
    bool has_consent_fields() const { return has_consent_fields_; }

    // `topic` as it may appear in a log line: when the matching schema (or, failing that, one an
    // earlier schema set routed it to) takes the data subject from a topic level, that level is
    // replaced by "<subject>" (it identifies a person).
    std::string loggable_topic(std::string_view topic) const;

    // The pseudonym subscribers see in place of `subject` where a schema pseudonymises it; "" when
    // no pseudonymisation key is loaded.
    std::string pseudonym_of(std::string_view subject) const { return pseudonyms_ ? pseudonyms_->pseudonym(subject) : ""; }

    const schema_set& schemas() const { return schemas_; }
    // A schema reload reads purposes.json and the schemas directory again, as load() does.
    struct definitions {
        purpose_registry purposes;
        schema_set schemas;
    };
    // Reads and checks both without touching what is in use. Throws schema_error, or config_error
    // when a schema pseudonymises and no key is loaded. Safe on another thread while the broker
    // thread classifies: of the classifier it reads only whether a key is loaded, which never changes.
    definitions load_definitions(const std::string& purposes_file, const std::string& dir) const;
    // Puts `next` in use. Every pointer to a schema of the previous set (publish_verdict::matched,
    // personal_data_in's answer, residency_rules) is invalid from here on; pointers to the
    // schemas of `next` stay valid (its vector moves, its elements do not). The consent store
    // must number consent purposes as `next.purposes` does (consent_store::use_purposes).
    // When its rules differ, the set in use is kept as an earlier one: stored messages may have
    // been filtered by it (recheck_stored).
    void replace_definitions(definitions&& next) noexcept;
    // What the schemas in use deserve a warning for (at start and after a reload): consent
    // purposes without a subject, overlapping topic filters.
    void log_schema_warnings(logger& log) const;
    const purpose_registry& purposes() const { return purposes_; }
    unmatched_policy unmatched() const { return unmatched_; }
    const classifier_stats& stats() const { return stats_; }

private:
    // How the schema sets in use earlier filtered `topic`, against `current` (the schema in use
    // for it, or null).
    struct earlier_filtering {
        bool otherwise = false;   // some set had other rules for it (or forgotten sets may have)
        bool had_schema = false;  // some set had a schema for it
    };
    // For a `current` whose subjects are bound to the publishing device, also fills
    // stored_consent_unknown_: per rule resting on consent, whether some earlier set did not
    // check that consent for the member (a stored message does not say who published it).
    earlier_filtering filtered_earlier(std::string_view topic, const schema* current);
    stored_check refilter_stored(std::string_view topic, std::string_view payload, bool had_schema, stored_check c);

    // The schema sets in use earlier in this process, oldest first, at most MAX_RETIRED: stored
    // messages may have been filtered by any of them. Past that, the oldest are forgotten and
    // every stored message on a classified topic counts as filtered otherwise.
    static constexpr std::size_t MAX_RETIRED = 16;
    std::vector<schema_set> retired_;
    bool retired_forgotten_ = false;
    std::vector<bool> stored_consent_unknown_;
    std::string canonical_;  // a stored message as filtering it with nothing to change writes it
    schema_set schemas_;
    purpose_registry purposes_;
    unmatched_policy unmatched_;
    std::unique_ptr<pseudonymiser> pseudonyms_;
    const consent_store* consent_ = nullptr;
    payload_filter filter_;
    std::string out_;
    std::string scratch_;  // personal_data_in's output: out_ may still hold the current publish
    std::string recheck_out_;
    bool has_consent_fields_ = false;
    bool detailed_ = false;
    bool keep_subjects_ = false;
    std::function<void(std::string_view)> prefetch_subject_;
    std::vector<std::string> subjects_;
    std::vector<field_outcome> outcomes_;
    classifier_stats stats_;
};

} // namespace gdpr
