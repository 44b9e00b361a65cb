#pragma once
// Turns what the broker reports into audit records: sessions, subscriptions, publishes,
// deliveries, control commands and consent changes. Broker thread only; the records go to the
// audit_log's queue. Clear-text parts name topics (with a subject level redacted), schema ids,
// field names and counts, never values; the forwarded payload and subject ids are sealed per
// subject, and not stored at all when personal data has no known subject.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gdpr/audit_log.hpp"
#include "gdpr/classifier.hpp"
#include "gdpr/json_text.hpp"
#include "gdpr/schema_changes.hpp"

namespace gdpr {

enum class delivery_recording { all, refusals, none };

struct connection_info {
    std::string client_id;
    std::string username;
    std::string address;
    int protocol_version = 0;  // 3 (3.1), 4 (3.1.1), 5
    std::string transport;     // "mqtt" or "websockets"
};

class session_recorder {
public:
    session_recorder(audit_log& log, const classifier& engine, delivery_recording deliveries);

    // Sessions are keyed by the broker's connection object. The broker re-runs authentication for
    // every client on SIGHUP: a known connection with the same client id keeps its session.
    // Returns the session id (the session_start record's seq), 0 when the connection is unknown.
    std::int64_t session_of(const void* connection, std::string_view client_id) const;
    std::int64_t start_session(const void* connection, const connection_info& info, std::string_view observed_at);
    // Ends the connection's session; a second call (the broker reports a takeover twice) is a no-op.
    void end_session(const void* connection, std::string_view reason);
    std::size_t live_sessions() const { return sessions_.size(); }
    // Ends every open session (the broker is stopping).
    void end_all(std::string_view reason);

    void subscription(std::int64_t session, std::string_view client_id, bool unsubscribe, std::string_view filter,
                      int qos, std::string_view outcome);
    // After classify(): records the publish as forwarded (or refused). `forwarded_identity` is the
    // payload pointer the broker will deliver, so that deliveries can refer to the publish.
    void publish(std::int64_t session, std::string_view client_id, std::string_view topic, int qos, bool retain,
                 std::size_t original_size, const publish_verdict& verdict, std::string_view forwarded,
                 const void* forwarded_identity);
    // After classify_will(): a will message, sent as it is or refused, recorded as a publish with
    // "will": true. The broker stores a will anew before delivering it: `identity` is what the
    // caller passes as delivery()'s `payload` for its deliveries.
    void will(std::int64_t session, std::string_view client_id, std::string_view topic, int qos, bool retain,
              const publish_verdict& verdict, std::string_view payload, const void* identity);
    bool records_delivery(bool refused) const {
        return deliveries_ == delivery_recording::all || (refused && deliveries_ == delivery_recording::refusals);
    }
    // Deliveries checked after this are not those of the last publish (call from other events).
    void forget_last_publish() { last_forwarded_ = nullptr; }
    void delivery(std::int64_t session, std::string_view client_id, std::string_view topic, const void* payload,
                  int qos, bool refused, std::string_view reason);
    // A control message's commands, by name, and whether each succeeded.
    void control(std::string_view client_id, std::string_view operator_id,
                 const std::vector<std::pair<std::string, bool>>& outcomes);
    // A reload changed purposes.json, or let fields pass without consent (GDPR Art. 5(2), 30: the
    // lawful basis each publish was filtered under must be traceable). A control record.
    void purposes_changed(std::string_view requested_by, bool basis_changes_allowed, const schema_changes& changes);
    // A reload changed the residency rules (GDPR Art. 30(1)(e): transfers to other regions).
    void residency_changed(std::string_view requested_by, bool transfer_changes_allowed, const residency_changes& changes);
    // A step of an erasure request; `detail_json` names no subject (see erasure_effects::record).
    void erasure(std::string_view step, const std::string& detail_json);
    void consent_change(std::string_view change, const std::string& subject, const std::string& detail_json,
                        const std::string& personal_json);
    // The classifier's schemas were replaced: what was rendered for the previous ones goes, and so
    // does how the last publish's topic was shown (the new schemas may say it names its subject).
    void forget_schemas();

private:
    struct session {
        std::int64_t id;
        std::string client_id;
    };

    // What classification did to the fields, rendered once per schema and outcome list: most
    // publishes on a topic come out the same way, and the broker thread renders every one.
    struct rendered_outcomes {
        std::vector<field_outcome> outcomes;
        std::string text;
    };
    void record_publish(std::int64_t session, std::string_view client_id, std::string_view topic, int qos, bool retain,
                        std::size_t original_size, const publish_verdict& verdict, std::string_view forwarded,
                        const void* forwarded_identity, bool will);
    const std::string& outcomes_text(const schema& matched, const std::vector<field_outcome>& outcomes);

    audit_log& log_;
    const classifier& engine_;
    std::unordered_map<const schema*, rendered_outcomes> rendered_;
    delivery_recording deliveries_;
    std::unordered_map<const void*, session> sessions_;
    std::int64_t last_publish_seq_ = 0;
    const void* last_forwarded_ = nullptr;
    std::string last_topic_;
    bool last_topic_masked_ = false;  // last_topic_ names its subject: records show last_shown_topic_
    std::string last_shown_topic_;
    std::string masked_topic_;  // scratch
    std::string scratch_;
};


} // namespace gdpr
