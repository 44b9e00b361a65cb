#pragma once
// One entry of the audit trail, as the broker thread hands it to the writer. Everything outside
// `personal` is stored in clear and must never hold personal data; `personal` is sealed with the
// data key of each subject in `subjects` (GDPR Art. 32), and is dropped when no subject is known.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gdpr {

enum class audit_kind : std::uint8_t {
    session_start,
    session_end,
    subscribe,
    unsubscribe,
    publish,
    publish_refused,
    delivery,
    delivery_refused,
    control,
    consent,
    gap,            // records dropped by the opt-in overflow policy: a declared hole in the trail
    retention,      // the sweeper removed expired records; anchors the chain
    key_shredded,   // a subject's data key was destroyed (GDPR Art. 17)
    writer_started, // the plugin started recording; the previous head is carried over
    erasure,        // a step of an erasure request (GDPR Art. 17), and its receipt
};

std::string_view to_string(audit_kind kind);
// Throws std::invalid_argument for an unknown name.
audit_kind audit_kind_from_string(std::string_view name);

struct audit_record {
    std::int64_t at_ms = 0;      // Unix time, milliseconds
    audit_kind kind = audit_kind::publish;
    std::int64_t session = 0;    // seq of the session_start record; 0 when not about a session
    std::string client_id;
    std::string schema;          // "id@version" of the classification, when one applies
    std::string detail;          // a JSON object without personal data
    bool has_payload = false;    // `payload` is stored in clear (it holds no personal data)
    std::string payload;
    std::string personal;        // JSON object sealed per subject (topic, payload, subject id)
    std::vector<std::string> subjects;
    std::int32_t retention_days = 0;  // 0: the plugin's default retention

    // Back to a default record, keeping the strings' memory for the next one.
    void clear();
};

} // namespace gdpr
