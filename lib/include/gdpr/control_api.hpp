#pragma once
// The operator control API on $CONTROL/gdpr/v1 (the dynamic-security convention): a JSON document
// {"commands":[{"command": ..., "correlationData": ..., ...}]} answered on
// $CONTROL/gdpr/v1/response with {"responses":[{"command": ..., "correlationData": ...,
// "data" | "error": ...}]}, one response per command, in order. Each command succeeds or fails on
// its own. Broker thread only.
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "gdpr/audit_crypto.hpp"
#include "gdpr/classifier.hpp"
#include "gdpr/consent_store.hpp"
#include "gdpr/erasure.hpp"
#include "gdpr/log.hpp"
#include "gdpr/processing_record.hpp"
#include "gdpr/residency_guard.hpp"
#include "gdpr/schema_changes.hpp"
#include "gdpr/storage_worker.hpp"
#include "gdpr/subject_quota.hpp"

namespace gdpr {

inline constexpr std::string_view CONTROL_TOPIC = "$CONTROL/gdpr/v1";
inline constexpr std::string_view CONTROL_RESPONSE_TOPIC = "$CONTROL/gdpr/v1/response";

// Who sent a control message, as the broker knows them.
struct requester {
    std::string client_id;
    std::string username;
    std::string certificate_cn;
};

// Clients named in the plugin options (operators, gateways) by certificate CN, username or client
// id. Identity is only as strong as the broker's authentication of the name used.
struct named_clients {
    std::vector<std::string> usernames;
    std::vector<std::string> client_ids;
    std::vector<std::string> certificate_cns;

    bool empty() const { return usernames.empty() && client_ids.empty() && certificate_cns.empty(); }
    // The name a client is recognised and recorded under ("username:ann"), or "" when not named.
    std::string identify(const requester& r) const;
};

class control_api {
public:
    static constexpr std::size_t MAX_PAYLOAD = 256 * 1024;
    static constexpr std::size_t MAX_COMMANDS = 100;
    static constexpr std::size_t MAX_NESTING = 16;
    // The answer to one message is built and sent on the broker thread: past about this size the
    // remaining commands are not run but answered with an error (100 getErasure of a large fleet
    // would otherwise make hundreds of megabytes). One command's answer alone may exceed it.
    static constexpr std::size_t MAX_ANSWER_BYTES = 16 * 1024 * 1024;
    void limit_answer_bytes(std::size_t bytes) { max_answer_bytes_ = bytes; }
    // Each command's name and whether it succeeded, in order, beside the response: the response can
    // hold an export of megabytes, not to be read again on the broker thread.
    using command_outcomes = std::vector<std::pair<std::string, bool>>;
    using reply_fn = std::function<void(const std::string& response_json, const command_outcomes& outcomes)>;

    control_api(classifier& engine, consent_store& store, const purpose_registry& purposes, named_clients operators,
                logger& log);

    // Of the records an export holds: each schema tag with the residency a record states ("" for
    // none; nothing when the record does not say).
    using export_holdings = std::set<std::pair<std::string, std::optional<std::string>>>;
    // Whether the asking connection may receive a subject's export (its region may not receive
    // data resident in another, GDPR Art. 44). `refusal`: why not, known before anything is read;
    // `check` (broker thread), given what the export holds: why not, once that is known (records
    // of schemas no longer in use among them). Empty: it may.
    struct export_gate {
        std::string refusal;
        std::function<std::string(const export_holdings& holdings)> check;
    };
    // Handles one control message. Its commands run in order, each after the previous one's change
    // is durable. `reply` is called exactly once, on the broker thread, possibly later (from
    // consent_store::drain).
    void handle(const requester& who, std::string_view payload, reply_fn reply, export_gate gate = {});

    std::uint64_t refused_requests() const { return refused_requests_; }
    // eraseSubject, getErasure and listErasures answer only with a manager attached.
    void attach_erasure(erasure_manager* erasure) { erasure_ = erasure; }
    // getStats reports residency refusals per region pair once a guard is attached.
    void attach_residency(const residency_guard* residency) { residency_ = residency; }
    // describeProcessing describes these beside the schemas (from the plugin's options).
    void attach_safeguards(const processing_safeguards& safeguards) { safeguards_ = safeguards; }
    // The operator's processing details file as last read (start, schema reload); none: unset.
    void attach_processing_details(std::optional<processing_details> details) { details_ = std::move(details); }
    // getStats reports publishes refused for bringing too many new data subjects.
    void attach_subject_quota(const subject_quota* quota, const subject_quota* gateway_quota = nullptr) {
        quota_ = quota;
        gateway_quota_ = gateway_quota;
    }
    // An export larger than this is refused with a pointer to gdprctl export (offline, no limit):
    // the answer is sent (and copied once) on the broker thread, though read and written elsewhere.
    static constexpr std::size_t MAX_EXPORT_BYTES = 4 * 1024 * 1024;
    // exportSubject answers once the audit trail can be read: `reader` is a worker with a read-only
    // connection to the plugin's database (batching::none), `keys` the audit trail's keys
    // (GDPR Art. 15, 20), `topic_opener` opens the data map's sealed retained topics (used on the
    // reader's thread only).
    void attach_export(storage_worker* reader, std::shared_ptr<const audit_keys> keys,
                       std::size_t max_bytes = MAX_EXPORT_BYTES, std::shared_ptr<topic_sealer> topic_opener = nullptr) {
        export_reader_ = reader;
        export_keys_ = std::move(keys);
        export_max_bytes_ = max_bytes;
        export_topic_opener_ = std::move(topic_opener);
    }
    // exportSubject also opens retained topics sealed under the key that named subjects before the
    // audit key (used on the export thread only).
    void attach_earlier_topic_opener(std::shared_ptr<topic_sealer> opener) { export_earlier_opener_ = std::move(opener); }
    // exportSubject looks the subject's holders up in the data map under each name this gives
    // (data_map::names_of); without it, under the audit key's reference alone.
    using subject_names_fn = std::function<std::vector<std::string>(std::string_view subject)>;
    void attach_data_map_names(subject_names_fn names) { data_map_names_ = std::move(names); }
    // Stops exports in progress at their next chunk and drops queued ones (the broker is stopping).
    void cancel_exports();
    // reloadSchemas answers once a reload is attached: it starts reading the schemas directory
    // again, and later calls `done` on the broker thread with what changed once the new set is in
    // use, or with the reason nothing changed. Its arguments: who asked, for the log
    // ("reloadSchemas by client:ops"), and which changes were asked for explicitly.
    using schema_reload_done = std::function<void(const schema_changes* changes, const std::string& error)>;
    using schema_reload_fn =
        std::function<void(const std::string& requested_by, reload_permissions allowed, schema_reload_done done)>;
    void attach_schema_reload(schema_reload_fn reload) { reload_schemas_ = std::move(reload); }
    // The clock erasure requests are stamped with (tests set their own).
    void set_clock(std::function<std::int64_t()> now_ms) { now_ms_ = std::move(now_ms); }

private:
    struct pending_reply;
    void advance(const std::shared_ptr<pending_reply>& pending);
    // Runs command `i`; false when it finishes later, from a completion that calls advance().
    bool run_command(const std::shared_ptr<pending_reply>& pending, std::size_t i);
    bool run_erasure_command(const std::shared_ptr<pending_reply>& pending, std::size_t i, const std::string& name);

    classifier& engine_;
    consent_store& store_;
    const purpose_registry& purposes_;
    named_clients operators_;
    logger& log_;
    erasure_manager* erasure_ = nullptr;
    const residency_guard* residency_ = nullptr;
    processing_safeguards safeguards_;
    std::optional<processing_details> details_;
    const subject_quota* quota_ = nullptr;
    const subject_quota* gateway_quota_ = nullptr;
    storage_worker* export_reader_ = nullptr;
    std::shared_ptr<const audit_keys> export_keys_;
    std::shared_ptr<topic_sealer> export_topic_opener_;
    std::shared_ptr<topic_sealer> export_earlier_opener_;
    std::size_t export_max_bytes_ = MAX_EXPORT_BYTES;
    std::size_t max_answer_bytes_ = MAX_ANSWER_BYTES;
    subject_names_fn data_map_names_;
    std::shared_ptr<std::atomic<bool>> exports_cancelled_ = std::make_shared<std::atomic<bool>>(false);
    std::function<std::int64_t()> now_ms_;
    schema_reload_fn reload_schemas_;
    std::uint64_t refused_requests_ = 0;
};

// Milliseconds since the Unix epoch as RFC 3339 UTC text ("2026-11-23T17:30:00.123Z").
std::string format_utc_ms(std::int64_t ms);

} // namespace gdpr
