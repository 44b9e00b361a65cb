#pragma once
#include <chrono>
#include <functional>
#include <vector>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "broker_api.hpp"
#include "gdpr/audit_log.hpp"
#include "gdpr/classifier.hpp"
#include "gdpr/clock_watch.hpp"
#include "gdpr/consent_store.hpp"
#include "gdpr/control_api.hpp"
#include "gdpr/data_map.hpp"
#include "gdpr/erasure.hpp"
#include "gdpr/log.hpp"
#include "gdpr/plugin_options.hpp"
#include "gdpr/residency_guard.hpp"
#include "gdpr/session_recorder.hpp"
#include "gdpr/subject_quota.hpp"
#include "gdpr/wiped_memory.hpp"

namespace gdpr_plugin {

// Wills never reach MOSQ_EVT_MESSAGE: the broker shows them to plugins only as an ACL WRITE check
// once their connection is over. A WRITE check for a connection marked here is therefore its will.
struct ending_connection {
    std::string client_id;  // guards against the broker reusing the connection's memory
    bool provisional;       // marked because a newer connection took its client id; may be undone
    std::uint64_t tick;     // plugin_context::ticks when marked
    bool may_delay_will;    // MQTT v5: a will may wait for its will delay
};

// Everything the plugin owns, passed to every callback as userdata. No other globals.
struct plugin_context {
    mosquitto_plugin_id_t* id = nullptr;
    gdpr::logger log;
    gdpr::plugin_options options;
    std::unique_ptr<gdpr::classifier> engine;
    std::unique_ptr<gdpr::consent_store> consent;
    std::unique_ptr<gdpr::control_api> control;
    gdpr::named_clients operators;

    std::unordered_map<const mosquitto*, ending_connection> ending;
    // The connection holding each client id, as logins show it, and the reverse (a DISCONNECT
    // after a failed login carries no client id).
    std::unordered_map<std::string, const mosquitto*> live_by_client_id;
    std::unordered_map<const mosquitto*, std::string> live_client_ids;
    // Connections that ended (DISCONNECT seen) -> their client id, until a login at that address:
    // a SIGHUP's re-check there is of an offline persistent session.
    std::unordered_map<const mosquitto*, std::string> ended_connections;
    // A newer connection -> the live one its login seemed to take over, until the next tick: if
    // the newer one's login fails, the older one still holds the client id.
    std::unordered_map<const mosquitto*, const mosquitto*> takeovers;
    // With track_logins false: connections that have acted (published, subscribed) since they
    // connected; removed at their DISCONNECT.
    std::unordered_set<const mosquitto*> acted_without_login;
    std::size_t provisional_marks = 0;
    // Each connection that sent a control command -> a number no other connection gets, until its
    // DISCONNECT: an answer goes only to the connection that asked, even after the broker has
    // placed a newer connection in its memory.
    std::unordered_map<const mosquitto*, std::uint64_t> askers;
    std::uint64_t last_asker = 0;
    // Answers that came during this pass of the broker's loop, sent at its end (the tick): the
    // broker looks their client id up at the start of the next pass, so no connection can take
    // that id in between.
    struct control_answer {
        std::string client_id;
        const mosquitto* connection = nullptr;
        std::uint64_t asker = 0;
        std::string operator_id;
        gdpr::wiped_string response;  // an export holds decrypted personal data
    };
    std::vector<control_answer> answers_due;
    // From a SIGHUP's reload event to the end of that pass of the broker's loop, the password
    // checks are the broker's re-checks of the clients it holds, offline persistent sessions
    // included (no new connection is read meanwhile).
    bool rechecking_logins = false;
    std::chrono::steady_clock::time_point rechecking_since{};
    // Steady time of the last erasure step run from a publish or control message, for brokers
    // that fire no tick (per_listener_settings true).
    std::chrono::steady_clock::time_point last_untimed_erasure_step{};
    // Failed tries to remove erased subjects from the data map on disk, not yet alerted (at most
    // one alert a minute while they keep failing).
    std::uint64_t forget_failures_unreported = 0;
    std::string forget_last_error;
    std::chrono::steady_clock::time_point forget_alerted{};
    // The wall clock as the erasure register and the control API read it (erasure_now).
    gdpr::clock_watch wall_clock;
    std::uint64_t ticks = 0;  // MOSQ_EVT_TICK events seen: each is a new pass of the broker's loop
    // When the plugin last asked the broker to clear a retained message, whether it did so after
    // start, and whether the broker refused one (clears_reached_store).
    std::uint64_t last_clear_tick = 0;
    bool cleared_while_running = false;
    bool clear_failed = false;
    bool loop_ran = false;  // a client acted: the broker's loop has begun a pass (connection_acted)
    // The broker's main loop has ended (a stop signal came before the last tick): every WRITE check
    // from here on is a will the broker sends as it stops.
    bool loop_ended = false;
    std::chrono::steady_clock::time_point last_retry{};

    // Session recording; both null when recording is off.
    std::unique_ptr<gdpr::audit_log> audit;
    std::shared_ptr<const gdpr::audit_keys> audit_keys;
    std::unique_ptr<gdpr::session_recorder> recorder;
    // Reads the trail for exportSubject (read-only connection), off the broker thread.
    std::unique_ptr<gdpr::storage_worker> export_reader;
    std::chrono::steady_clock::time_point last_audit_check{};
    std::chrono::steady_clock::time_point last_refusal_log{};

    // Where subjects' data went, and the erasure requests that act on it (GDPR Art. 17).
    std::unique_ptr<gdpr::data_map> map;
    std::unique_ptr<gdpr::erasure_manager> erasure;
    // How many subjects the map does not know one client may bring in (plugin_opt_new_subjects_*).
    std::unique_ptr<gdpr::subject_quota> subject_quota;
    // Clients that publish for many subjects by design (gateways, incoming bridges) draw on their
    // own, larger allowance; null when none are named.
    gdpr::named_clients gateways;
    std::unique_ptr<gdpr::subject_quota> gateway_quota;
    bool quota_last_gateway = false;  // the last refusal drew on a gateway's allowance
    struct gateway_mark {
        std::string client_id, username;
        bool gateway = false;
    };
    std::unordered_map<const mosquitto*, gateway_mark> gateway_checked;
    std::uint64_t quota_refusals_unreported = 0;
    std::string quota_last_client, quota_last_topic;
    std::chrono::steady_clock::time_point last_quota_report{};
    // Shredded keys the erasure waits for: the audit trail's seq of each shred, and what to run
    // once it is committed.
    std::vector<std::pair<std::int64_t, std::function<void()>>> shreds_waiting;

    // Residency (GDPR Chapter V); null when no residency_file is configured.
    std::unique_ptr<gdpr::residency_guard> residency;
    struct alert_limiter {
        std::chrono::steady_clock::time_point last{};
        std::uint64_t pending = 0;  // refused since `last`, not yet reported
        std::string line;           // the latest refusal, as logged
    };
    std::unordered_map<std::string, alert_limiter> bridge_alerts;  // by bridge name: a reload makes new bridge_routes
    std::uint64_t bridge_alerts_pending = 0;
    // Why the ACL check in progress refused, when the reason is more specific than the default.
    std::string_view refusal_reason;
    // The publish in hand, whose deliveries need no second consent check (stored_consent.cpp).
    const void* current_payload = nullptr;
    std::string current_topic;
    std::uint64_t current_generation = 0;  // consent_store::generation() at that publish
    struct stored_recheck {
        const void* payload = nullptr;
        std::uint32_t size = 0;
        std::string topic;
        std::uint64_t generation = 0;
        gdpr::stored_check result;
    } last_recheck;
    // The consent store's pseudonym index could not be built (after a reload); retried at ticks.
    bool pseudonym_index_due = false;
    std::chrono::steady_clock::time_point last_index_attempt{};
    // The will just sent (GDPR Art. 17(2), 19: its recipients hold the data). The broker stores a
    // will anew before delivering it, so the READ checks that follow its WRITE check carry another
    // payload address: the first is told by topic and content, and its address (the stored copy's)
    // then identifies the rest. Any other event or check ends it.
    struct sent_will {
        bool pending = false;
        const void* stored = nullptr;             // the stored copy's payload, once its first delivery is checked
        gdpr::wiped_string topic, payload;        // until then: personal data, wiped when done with
    } will_sent;
    // The schema of a stored message withheld by the ACL check in progress whose copy is due.
    const gdpr::schema* stored_copy_due = nullptr;
    // Deliveries of stored messages withheld for withdrawn consent, reported at most every 10 s.
    struct stored_consent_report {
        std::uint64_t unreported = 0, resent_unreported = 0;
        std::string last_topic, last_schema;
        std::chrono::steady_clock::time_point last_report{};
    } stored_consent;
    // Reads the schemas directory for a reload off the broker thread (schema_reload.cpp).
    std::unique_ptr<gdpr::storage_worker> schema_loader;
};

// The outcome of a plugin decision, mapped to MOSQ_ERR_* in exactly one place (result_map.cpp).
enum class decision { allow, deny, no_objection, failure };
int to_mosq_err(decision d, gdpr::acl_fallback fallback);

// Logs an internal error from a catch block; never throws (a callback must not let anything
// escape into the broker).
void log_internal_error(plugin_context& ctx, const char* what_failed, const char* detail) noexcept;

// The client id of a connection, or "" when the broker has none yet.
std::string_view client_id_of(const mosquitto* client);

// Client id, username and TLS certificate CN of a connection.
gdpr::requester requester_of(const mosquitto* client);
// Logs that `who` (operators, gateways) named by username or client id are only as trustworthy as
// the broker's authentication of those names.
void warn_weak_names(plugin_context& ctx, const gdpr::named_clients& named, std::string_view who,
                     std::string_view what, std::string_view cn_option);
// The connection belongs to a gateway named in the options (plugin_opt_gateway_*); remembered per
// connection, since reading a certificate's CN is not free.
bool is_gateway(plugin_context& ctx, const mosquitto* client);

// SIGINT and SIGTERM end the broker's loop (stop_signal.cpp): watched from the first tick, handed
// on to the broker's handlers; unwatched at cleanup.
void watch_stop_signals(plugin_context& ctx);
void unwatch_stop_signals();
bool stop_signalled();

// Whether `client` may receive a subject's export under the residency rules, before it is read
// and once the schemas it holds are known (residency_event.cpp).
gdpr::control_api::export_gate export_gate(plugin_context& ctx, const mosquitto* client);

// Sends the control answers that came during this pass of the broker's loop (control_event.cpp).
void send_due_answers(plugin_context& ctx);

// Erasure fan-out, retries and deadlines (erasure_tick) where the broker fires no tick: run from
// publishes and control messages instead, at most every 100 ms.
void erasure_step_without_ticks(plugin_context& ctx);

// Runs finished background work (durable consent changes) on the broker thread: responses go out.
inline void drain_completions(plugin_context& ctx) {
    if (ctx.consent && ctx.consent->has_completions()) ctx.consent->drain();
    if (ctx.map && ctx.map->has_completions()) ctx.map->drain();
    if (ctx.erasure && ctx.erasure->has_completions()) ctx.erasure->drain();
    if (ctx.export_reader && ctx.export_reader->has_completions()) ctx.export_reader->drain();
    if (ctx.schema_loader && ctx.schema_loader->has_completions()) ctx.schema_loader->drain();
}

// The audit session of a connection, started on first sight when the broker did not report its
// login (track_logins false). 0 when recording is off or the connection has no client id yet.
std::int64_t session_for(plugin_context& ctx, const mosquitto* client, std::string_view observed_at);
// Block policy: nothing flows unrecorded while the audit trail cannot be written. True when
// `what` ("publish", "will message") on `topic` must be refused for that; logged at most once a
// second (message_event.cpp).
bool audit_trail_refuses(plugin_context& ctx, std::string_view what, std::string_view topic);
// Logs problems the audit writer reported and publishes each as an alert. Broker thread.
void report_audit_problems(plugin_context& ctx);
// Publishes an operator alert on the configured alert topic (QoS 1, not retained).
void publish_alert(plugin_context& ctx, std::string_view kind, std::string_view text);

// The bytes of the key files, read once at start: every key derived from a file comes from the same
// read, even if the file is replaced while the broker starts. Empty when not configured.
struct key_file_bytes {
    gdpr::wiped_string audit, pseudonym;
};
// Erasure (erasure_event.cpp). open_erasure throws config_error naming the option at fault.
void open_erasure(plugin_context& ctx, const key_file_bytes& keys);
// Sends due erase commands, applies deadlines (own clock; cheap when nothing is due).
void erasure_tick(plugin_context& ctx);
// Whether every retained message the plugin asked the broker to clear has reached the broker's
// store, so that a clean stop's save holds it cleared (cleanup: data_map::clears_saved).
bool clears_reached_store(const plugin_context& ctx);
// The wall time in milliseconds. Where the wall clock was set since the last reading, what the
// erasure register has scheduled moves with it first (retries and deadlines run on elapsed time).
std::int64_t erasure_now(plugin_context& ctx);
// Logs and alerts publishes refused by the new-subject allowance, at most every 10 s.
void report_quota_refusals(plugin_context& ctx, std::chrono::steady_clock::time_point now);
// For the publish or will just classified (message_event.cpp): charges `client`'s allowance of new
// data subjects for those the data map does not know yet; past it, returns the refusal reason
// (counted, and logged and alerted at most every 10 s), else "".
std::string_view charge_new_subjects(plugin_context& ctx, const mosquitto* client, std::string_view topic,
                                     const gdpr::publish_verdict& v);
// The data map learns who published whose data (a publish, or a will), and which retained topic
// now holds it; deliveries of `payload` checked next are attributed to it (null: to nothing but
// the retained topic). `final`: the broker
// acts on the plugin's answer alone; otherwise (a will under acl_default defer, which acl_file may
// still refuse) a retained topic's earlier holders are kept too.
// `seen`: what the recipients get, when the plugin has read all of it (see data_map::published).
void note_holders(plugin_context& ctx, const mosquitto* client, std::string_view topic, bool retain, const void* payload,
                  std::uint32_t payloadlen, bool final = true, const gdpr::forwarded_message* seen = nullptr);
// A client was seen connecting or acting: its pending erase commands go out at the next tick.
void erasure_client_seen(plugin_context& ctx, std::string_view client_id);
// A connection acted (published, subscribed). With track_logins, one whose login the broker did
// not show — listeners with use_identity_as_username, use_subject_as_username or MQTT v5 extended
// authentication skip the password check — becomes known as connected here, so that erase
// commands reach it; without, a connection's first act counts as its login.
void connection_acted(plugin_context& ctx, const mosquitto* client);
// `client` holds `client_id` now (live_by_client_id and its reverse).
void set_live(plugin_context& ctx, const std::string& client_id, const mosquitto* client);
// The plugin's own rules for erase topics: only the addressed client may subscribe to, receive
// or acknowledge on its erase topic; nobody may publish erase commands. `topic`: for a
// subscription, the filter it names (without "$share/<group>/").
decision check_erase_topic(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic);
// An acknowledgement on the publisher's own ack topic: applied; true when the publish was one.
bool handle_erase_ack(plugin_context& ctx, const mosquitto_evt_message& msg, std::string_view topic);

// Stored messages and withdrawn consent (stored_consent.cpp), GDPR Art. 7(3).
// Lets the consent store find subjects by pseudonym when a schema pseudonymises its subject field.
void index_stored_pseudonyms(plugin_context& ctx);
// The publish being classified was allowed with this payload (as forwarded) and topic.
void note_current_publish(plugin_context& ctx, const void* payload, std::string_view topic);
// A payload address seen before may now be another message (see forget_current_payloads).
void forget_stored_checks(plugin_context& ctx);
// READ: a stored message whose consent has been withdrawn since it was stored is withheld; with
// acl_default allow, its copy without the withdrawn fields is then due (send_stored_copy).
decision check_stored_consent(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic);
// Sends the copy check_stored_consent left due, if any, to the client of `acl` alone; call after
// the refusal is recorded. `identity`: what the withheld delivery was matched to its publish by.
void send_stored_copy(plugin_context& ctx, const mosquitto_evt_acl_check& acl, const void* identity);
// Logs the withheld deliveries, at most every 10 s.
void report_stored_consent(plugin_context& ctx, std::chrono::steady_clock::time_point now);

// Residency (residency_event.cpp). open_residency throws config_error naming residency_file.
void open_residency(plugin_context& ctx);
// The region of the personal data a classified publish forwards; NO_REGION when it forwards none
// or residency is not enforced.
std::int32_t resident_region(plugin_context& ctx, const gdpr::publish_verdict& v);
// The bridge that would carry `topic` to a region that may not receive data resident in `region`:
// counted, logged and alerted (rate-limited); null when none would.
const gdpr::bridge_route* bridge_refusal(plugin_context& ctx, std::string_view topic, const gdpr::schema& s,
                                         std::int32_t region, std::string_view what);
// READ: refuses a delivery of resident personal data to a client in a region that may not have it.
decision check_delivery_residency(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic);
// WRITE of a will: the bridge that refuses a will because it would carry resident personal data abroad, if any
// (the refusal is logged and alerted).
const gdpr::bridge_route* will_bridge_refusal(plugin_context& ctx, std::string_view topic, std::string_view payload);
// Reports bridge refusals held back by the alert rate limit once their interval has passed.
void residency_tick(plugin_context& ctx);
// A will is about to be checked, or a connection ended: a payload address seen before may now be
// another message, so nothing may be matched to the last publish by its address any more.
void forget_current_payloads(plugin_context& ctx);
// The will sent last has had its deliveries checked (another event came): later READ checks are
// not its deliveries (acl_event.cpp).
void forget_sent_will(plugin_context& ctx);
// SUBSCRIBE: warns when a shared subscription group gets members in two regions.
void note_subscription_residency(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view filter);

// Schema reload (schema_reload.cpp): reads purposes.json and the schemas directory again on a
// background thread, then, on the broker thread, puts them in use and calls `done` with what
// changed, or calls it with the reason nothing changed (they do not load, a version goes back,
// schemas would be removed or a purpose would leave consent without `allowed` saying so).
// `requested_by` is for the log.
using schema_reload_done = std::function<void(const gdpr::schema_changes* changes, const std::string& error)>;
void start_schema_reload(plugin_context& ctx, std::string requested_by, gdpr::reload_permissions allowed,
                         schema_reload_done done);

// Callbacks, one family per file.
int on_message(int event, void* event_data, void* userdata);
int on_acl_check(int event, void* event_data, void* userdata);
int on_basic_auth(int event, void* event_data, void* userdata);
int on_disconnect(int event, void* event_data, void* userdata);
int on_tick(int event, void* event_data, void* userdata);
int on_control(int event, void* event_data, void* userdata);
int on_reload(int event, void* event_data, void* userdata);

} // namespace gdpr_plugin
