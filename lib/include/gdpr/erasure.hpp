#pragma once
// Erasure requests (GDPR Art. 17): an operator asks once; every holder of the subject's data (from
// the data map) is told to delete it, is tracked to an answer, retried, and reported in a receipt.
// The plugin's own part (retained messages, consent, bindings, the subject's data key) runs
// through erasure_effects. Requests and targets live in SQLite and resume after a restart.
// Broker thread only; SQLite work runs on the manager's own storage worker.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gdpr/data_map.hpp"
#include "gdpr/storage_worker.hpp"

namespace gdpr {

// The erase topic of each client, from a template with one whole level "%c" (the client id).
class erase_topics {
public:
    // Throws std::invalid_argument unless `pattern` holds "%c" exactly once, as a whole level,
    // and no wildcard.
    explicit erase_topics(std::string pattern);
    // "" when the client id cannot form a topic level (it holds '/', '+', '#' or is empty).
    std::string command_topic(std::string_view client_id) const;
    std::string ack_topic(std::string_view client_id) const { return command_topic(client_id) + "/ack"; }
    // The client id a topic addresses, when it is an erase command topic or ack topic.
    struct addressed {
        std::string client_id;
        bool ack = false;
    };
    std::optional<addressed> parse(std::string_view topic) const;
    // Subscription filters covering every erase topic (for overlap checks).
    const std::vector<std::string>& space() const { return space_; }
    const std::string& pattern() const { return pattern_; }

private:
    std::string pattern_, prefix_, suffix_;
    std::vector<std::string> space_;
};

enum class target_state { pending, sent, erased, not_found, failed, unreachable };
std::string_view to_string(target_state s);
// Throws std::invalid_argument for an unknown name.
target_state target_state_from_string(std::string_view name);
inline bool is_final(target_state s) { return s != target_state::pending && s != target_state::sent; }

// role_pseudonymous is not a role but what a recipient knows: only the subject's pseudonym
// (subject_holdings::pseudonymous_recipients), so its commands name the pseudonym, not the id.
enum target_role : std::uint8_t { role_publisher = 1, role_recipient = 2, role_pseudonymous = 4 };

struct erasure_target {
    std::string client_id;
    std::uint8_t roles = 0;
    target_state state = target_state::pending;
    std::int32_t attempts = 0;
    std::int64_t first_sent_ms = 0, last_sent_ms = 0, answered_ms = 0;
    std::string detail;          // why it failed, in words; never personal data
    bool seen_online = false;    // reachable at some point during the request
    std::int64_t next_send_ms = 0;  // memory only: when to (re)send
};

enum class request_state { in_progress, completed, completed_with_failures };
std::string_view to_string(request_state s);

// What the plugin itself did for the request.
struct local_erasure {
    std::vector<std::string> retained_cleared;  // topics, as they may be shown (a subject level redacted)
    std::int64_t consent_events_removed = -1;   // -1: not done yet
    std::int64_t bindings_removed = -1;
    bool key_shredded = false;                  // the key is gone from the file; false without an audit trail
    std::string error;                          // the consent store's error, if any
    bool complete = false;                      // every step above has finished
    bool done() const { return complete; }
};

struct erasure_request {
    std::string id;
    std::string subject;      // "" once the request is finished (only the ref is kept)
    std::string subject_ref;  // erasure_effects::subject_ref of the subject (or, finished before an audit
                              // key, an earlier_subject_refs name)
    std::string operator_id;
    std::int64_t requested_ms = 0, deadline_ms = 0, completed_ms = 0;
    request_state state = request_state::in_progress;
    std::vector<erasure_target> targets;  // sorted by client id
    local_erasure local;
    bool durable = false;  // memory only: the request row is written (fan-out starts then)
    std::vector<std::string> retained_topics;  // memory only: the topics to clear, as they are
    std::size_t open_targets = 0;              // memory only: targets without a final state
    std::string pseudonym;                     // memory only: erasure_effects::pseudonym, once
    bool timed_here = false;  // memory only: requested (deadline set) by this process's clock
};

struct erasure_options {
    std::int64_t deadline_ms = 24LL * 3600 * 1000;    // per request, from its arrival
    std::int64_t first_retry_ms = 10 * 1000;          // doubles per attempt
    std::int64_t max_retry_ms = 15 * 60 * 1000;
    std::int64_t rate_limit_ms = 24LL * 3600 * 1000;  // one request per subject per period; 0: none
    // Erase commands per second across all requests: a fan-out to a large fleet is paced so that
    // the broker keeps serving ordinary traffic meanwhile.
    std::int64_t send_rate_per_s = 2000;
};

// How the manager acts on the broker and the rest of the plugin. Every member is called on the
// broker thread. Optional members may be empty.
struct erasure_effects {
    // The name a subject is kept under once its request is finished (a keyed hash); empty: the
    // subject id itself.
    std::function<std::string(std::string_view subject)> subject_ref;
    // Names requests finished under an earlier key file gave the subject (by pseudonym, before
    // an audit key): the same request id and the rate limit still find them.
    std::vector<std::function<std::string(std::string_view subject)>> earlier_subject_refs;
    // The pseudonym recipients hold in place of the subject id (sent with each command, so that a
    // downstream client can find what it received); empty or "": none.
    std::function<std::string(const std::string& subject)> pseudonym;
    // Whether a client is connected now; empty: unknown (every target is tried as if connected).
    std::function<bool(const std::string& client_id)> is_connected;
    // Publishes an erase command, QoS 1, to that client only.
    std::function<void(const std::string& client_id, const std::string& topic, const std::string& payload)> send;
    std::function<void(const std::string& topic)> clear_retained;
    // Removes consent and bindings; calls back when durable.
    std::function<void(const std::string& subject, const std::string& operator_id,
                       std::function<void(const std::string& error, std::int64_t consent_events, std::int64_t bindings)>)>
        remove_consent;
    // Destroys the subject's data key and calls `durable` once the key is gone from the file;
    // returns false (and never calls it) when there is no audit trail.
    std::function<bool(const std::string& subject, std::function<void()> durable)> shred_key;
    // A topic as it may be stored in clear and shown (a level naming the subject redacted).
    std::function<std::string(const std::string& topic)> loggable_topic;
    // Records a step in the audit trail: step name, request id, detail JSON. The records carry no
    // subject: sealed under the subject's key they would outlive its shredding.
    std::function<void(std::string_view step, const std::string& request_id, const std::string& detail_json)> record;
    std::function<void(std::string_view kind, const std::string& text)> alert;
};

class erasure_manager {
public:
    // A failed write of the register is tried again after this long, not at every tick (a full
    // disk would make each attempt fail again at once).
    static constexpr std::int64_t RESAVE_DELAY_MS = 5000;
    static constexpr int SCHEMA_VERSION = 1;
    static constexpr std::size_t MAX_ID_BYTES = 128;

    // Opens (creating the tables when missing) the requests in the database at `path` and loads
    // them; requests still in progress resume at the first tick(). Throws storage_error.
    static std::unique_ptr<erasure_manager> open(const std::string& path, erase_topics topics, erasure_options options,
                                                 data_map& map, erasure_effects effects,
                                                 std::string_view synchronous = "NORMAL");
    ~erasure_manager();

    // eraseSubject. The same id again is the same request (its current state is answered); an id
    // already used for another subject, or a subject inside its rate limit, is refused.
    // `done` runs once the request is durable (or failed to be written) with the request's
    // state, or with an error text; refusals are answered at once.
    using request_done = std::function<void(const erasure_request* request, const std::string& error)>;
    void request(const std::string& id, const std::string& subject, const std::string& operator_id,
                 std::int64_t now_ms, request_done done);
    const erasure_request* find(std::string_view id) const;
    // Newest first, at most `limit`.
    std::vector<const erasure_request*> list(std::size_t limit) const;

    // An acknowledgement from `client_id` on its ack topic. Returns an error text for a bad one
    // (not JSON, unknown request, not a target), "" when applied.
    std::string acknowledge(const std::string& client_id, std::string_view payload, std::int64_t now_ms);
    // The client connected (or, where logins are not observed, was seen acting): its unanswered
    // commands go out at the next tick, unless one was sent within the last second.
    void client_connected(const std::string& client_id, std::int64_t now_ms);
    // Sends what is due, applies deadlines, completes requests. Cheap when nothing is due.
    void tick(std::int64_t now_ms);
    // The wall clock was set by `step_ms` (clock_watch): retries, pacing, and the rate limits and
    // deadlines this process set move with it, keeping the time they had left; the new deadlines
    // are written. Those loaded at open, and times already recorded (sent, answered, requested),
    // stay as they were.
    void clock_set(std::int64_t step_ms);

    const erase_topics& topics() const { return topics_; }
    std::size_t in_progress() const { return active_.size(); }
    std::size_t drain() { return worker_->drain(); }
    bool has_completions() const { return worker_->has_completions(); }
    // Writes target changes still held back, then blocks until everything is written.
    void wait_idle();
    // Requests found at open that named their subject by id (made before a key file was
    // configured), or in progress under an earlier key: now named as later requests are.
    std::size_t requests_renamed() const { return requests_renamed_; }

private:
    erasure_manager(erase_topics topics, erasure_options options, data_map& map, erasure_effects effects);
    void start(erasure_request& r, std::int64_t now_ms);
    void run_due(std::int64_t now_ms);
    void finish_local(erasure_request& r, const std::string& consent_error, std::int64_t consent_events,
                      std::int64_t bindings);
    // Holders the map learned since the request's targets were taken become targets too; then
    // the map forgets the subject.
    void take_new_holders(erasure_request& r);
    // After a failed write: alert, and write the whole request again at the next tick.
    std::function<void(const std::string&)> on_saved(const erasure_request& r);
    void send(erasure_request& r, erasure_target& t, std::int64_t now_ms);
    void finish_target(erasure_request& r, erasure_target& t, target_state s, std::int64_t now_ms, std::string detail);
    void maybe_complete(erasure_request& r, std::int64_t now_ms);
    // Target changes are held back and written together, once per tick (thousands of devices
    // answer within a second of each other).
    void save_target(const erasure_request& r, const erasure_target& t);
    void flush_targets();
    void save_request(const erasure_request& r);
    void record(std::string_view step, const erasure_request& r, const std::string& detail_json);

    erase_topics topics_;
    erasure_options options_;
    data_map& map_;
    erasure_effects effects_;
    std::map<std::string, std::unique_ptr<erasure_request>> requests_;          // by id
    struct last_request {
        std::int64_t at_ms = INT64_MIN;
        bool timed_here = false;  // by this process's clock (see clock_set)
    };
    std::unordered_map<std::string, last_request> last_request_ms_;             // by subject
    std::map<std::string, erasure_request*> active_;                            // in progress and durable
    std::unordered_map<std::string, std::vector<std::string>> pending_by_client_;  // client -> request ids
    std::vector<std::string> resume_local_;  // restarted requests whose own part is unfinished
    std::vector<std::string> resave_;        // requests whose last write failed
    std::int64_t resave_due_ms_ = 0;  // 0: not scheduled
    std::chrono::steady_clock::time_point register_alerted_{};  // the last erasure_register alert
    std::uint64_t register_failures_ = 0;                       // failed writes since then
    struct target_row {
        std::string request_id;
        erasure_target target;
    };
    std::vector<target_row> unsaved_targets_;
    std::int64_t next_due_ms_ = 0;
    double send_tokens_ = 0;            // commands that may go out now (erasure_options::send_rate_per_s)
    std::int64_t tokens_at_ms_ = 0;
    std::size_t requests_renamed_ = 0;
    std::unique_ptr<storage_worker> worker_;
};

// The receipt (and getErasure answer) as JSON text: per target the outcome (acknowledged, failed,
// unreachable, pending) with timestamps, the plugin's own part, and the totals.
std::string receipt_json(const erasure_request& r, bool with_targets = true);
// The same document, for callers that embed it in one of their own.
nlohmann::json receipt_document(const erasure_request& r, bool with_targets = true);

} // namespace gdpr
