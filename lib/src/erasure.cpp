#include "gdpr/erasure.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include "gdpr/control_api.hpp"
#include "gdpr/json_text.hpp"
#include "gdpr/sqlite.hpp"

namespace gdpr {

using json = nlohmann::json;

namespace {

constexpr const char* SCHEMA_SQL = R"sql(
CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS erasure_requests (
  request_id TEXT PRIMARY KEY, subject TEXT NOT NULL, subject_ref TEXT NOT NULL, operator TEXT NOT NULL,
  requested_at_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, state TEXT NOT NULL,
  completed_at_ms INTEGER NOT NULL DEFAULT 0, local_json TEXT NOT NULL DEFAULT '{}') WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS erasure_requests_by_subject ON erasure_requests (subject_ref, requested_at_ms);
CREATE TABLE IF NOT EXISTS erasure_targets (
  request_id TEXT NOT NULL REFERENCES erasure_requests (request_id), client_id TEXT NOT NULL,
  roles INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
  first_sent_ms INTEGER NOT NULL, last_sent_ms INTEGER NOT NULL, answered_ms INTEGER NOT NULL,
  seen_online INTEGER NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (request_id, client_id)) WITHOUT ROWID;
)sql";

constexpr std::int64_t IN_FLIGHT_MS = 1000;
// A send time that is due whatever the clock says (0 means "not scheduled").
constexpr std::int64_t DUE_NOW = 1;

constexpr std::array<std::string_view, 6> TARGET_STATES = {"pending", "sent", "erased", "not_found", "failed",
                                                           "unreachable"};

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

request_state request_state_from_string(std::string_view s) {
    if (s == "in_progress") return request_state::in_progress;
    if (s == "completed") return request_state::completed;
    if (s == "completed_with_failures") return request_state::completed_with_failures;
    throw std::invalid_argument("unknown erasure request state '" + std::string(s) + "'");
}

json local_to_json(const local_erasure& l) {
    return json{{"retainedCleared", l.retained_cleared},
                {"consentEventsRemoved", l.consent_events_removed},
                {"bindingsRemoved", l.bindings_removed},
                {"keyShredded", l.key_shredded},
                {"error", l.error},
                {"complete", l.complete}};
}

local_erasure local_from_json(const std::string& text) {
    local_erasure l;
    const auto j = json::parse(text, nullptr, false);
    if (!j.is_object()) return l;
    l.retained_cleared = j.value("retainedCleared", std::vector<std::string>{});
    l.consent_events_removed = j.value("consentEventsRemoved", std::int64_t{-1});
    l.bindings_removed = j.value("bindingsRemoved", std::int64_t{-1});
    l.key_shredded = j.value("keyShredded", false);
    l.error = j.value("error", std::string{});
    l.complete = j.value("complete", false);
    return l;
}

// A device's own words, kept in the register, the receipt and the audit trail: printable ASCII
// only, at most 200 bytes (it is not trusted to be valid UTF-8, nor short).
std::string printable_detail(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (out.size() >= 200) break;
        out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
    }
    return out;
}

std::string_view outcome_of(target_state s) {
    switch (s) {
    case target_state::erased:
    case target_state::not_found: return "acknowledged";
    case target_state::failed: return "failed";
    case target_state::unreachable: return "unreachable";
    default: return "pending";
    }
}

// Each holder's roles; a recipient that knows the subject only by pseudonym is marked so.
std::map<std::string, std::uint8_t> roles_of(const subject_holdings& h) {
    std::map<std::string, std::uint8_t> roles;
    for (const auto& c : h.publishers) roles[c] |= role_publisher;
    for (const auto& c : h.recipients) roles[c] |= role_recipient;
    for (const auto& c : h.pseudonymous_recipients) roles[c] |= role_pseudonymous;
    return roles;
}

json roles_json(std::uint8_t roles) {
    json out = json::array();
    if (roles & role_publisher) out.push_back("publisher");
    if (roles & role_recipient) out.push_back("recipient");
    return out;
}

struct totals {
    std::int64_t acknowledged = 0, failed = 0, unreachable = 0, pending = 0;
};

totals count(const erasure_request& r) {
    totals t;
    for (const auto& x : r.targets) {
        const auto o = outcome_of(x.state);
        if (o == "acknowledged") ++t.acknowledged;
        else if (o == "failed") ++t.failed;
        else if (o == "unreachable") ++t.unreachable;
        else ++t.pending;
    }
    return t;
}

json receipt(const erasure_request& r, bool with_subject, bool with_targets = true) {
    json targets = json::array();
    for (const auto& t : r.targets) {
        if (!with_targets) break;
        json tj{{"clientId", t.client_id}, {"roles", roles_json(t.roles)}, {"state", to_string(t.state)},
                {"outcome", outcome_of(t.state)}, {"attempts", t.attempts}};
        if (t.first_sent_ms) tj["firstSentAt"] = format_utc_ms(t.first_sent_ms);
        if (t.last_sent_ms) tj["lastSentAt"] = format_utc_ms(t.last_sent_ms);
        if (t.answered_ms) tj["answeredAt"] = format_utc_ms(t.answered_ms);
        if (!t.detail.empty()) tj["detail"] = t.detail;
        if (t.roles & role_pseudonymous) tj["subjectNamedBy"] = "pseudonym";
        targets.push_back(std::move(tj));
    }
    const totals n = count(r);
    json j{{"requestId", r.id},
           {"operator", r.operator_id},
           {"state", to_string(r.state)},
           {"requestedAt", format_utc_ms(r.requested_ms)},
           {"deadline", format_utc_ms(r.deadline_ms)},
           {"plugin", local_to_json(r.local)},
           {"totals",
            {{"targets", r.targets.size()},
             {"acknowledged", n.acknowledged},
             {"failed", n.failed},
             {"unreachable", n.unreachable},
             {"pending", n.pending}}}};
    if (with_targets) j["targets"] = std::move(targets);
    if (with_subject && !r.subject.empty()) j["subject"] = r.subject;
    j["subjectRef"] = r.subject_ref;
    if (r.completed_ms) j["completedAt"] = format_utc_ms(r.completed_ms);
    return j;
}

void append_member(std::string& out, std::string_view key, std::string_view value) {
    out.push_back(',');
    append_json_string(out, key);
    out.push_back(':');
    append_json_string(out, value);
}

void append_member(std::string& out, std::string_view key, std::int64_t value) {
    out.push_back(',');
    append_json_string(out, key);
    out.push_back(':');
    append_number(out, value);
}

void append_totals(std::string& out, const erasure_request& r) {
    const totals t = count(r);
    out += "{\"targets\":";
    append_number(out, static_cast<std::int64_t>(r.targets.size()));
    append_member(out, "acknowledged", t.acknowledged);
    append_member(out, "failed", t.failed);
    append_member(out, "unreachable", t.unreachable);
    append_member(out, "pending", t.pending);
    out.push_back('}');
}

// The same document as receipt(), written by hand: the audit trail records it whole, and a fleet
// of ten thousand makes it megabytes.
std::string receipt_text(const erasure_request& r, bool with_subject, bool with_targets) {
    std::string out = "{\"requestId\":";
    append_json_string(out, r.id);
    append_member(out, "operator", r.operator_id);
    append_member(out, "state", to_string(r.state));
    append_member(out, "requestedAt", format_utc_ms(r.requested_ms));
    append_member(out, "deadline", format_utc_ms(r.deadline_ms));
    if (r.completed_ms) append_member(out, "completedAt", format_utc_ms(r.completed_ms));
    if (with_subject && !r.subject.empty()) append_member(out, "subject", r.subject);
    append_member(out, "subjectRef", r.subject_ref);
    out += ",\"plugin\":";
    out += local_to_json(r.local).dump(-1, ' ', false, json::error_handler_t::replace);
    out += ",\"totals\":";
    append_totals(out, r);
    if (with_targets) {
        out += ",\"targets\":[";
        bool first = true;
        for (const auto& t : r.targets) {
            if (!first) out.push_back(',');
            first = false;
            out += "{\"clientId\":";
            append_json_string(out, t.client_id);
            out += ",\"roles\":[";
            if (t.roles & role_publisher) out += "\"publisher\"";
            if ((t.roles & role_publisher) && (t.roles & role_recipient)) out.push_back(',');
            if (t.roles & role_recipient) out += "\"recipient\"";
            out.push_back(']');
            append_member(out, "state", to_string(t.state));
            append_member(out, "outcome", outcome_of(t.state));
            append_member(out, "attempts", t.attempts);
            if (t.first_sent_ms) append_member(out, "firstSentAt", format_utc_ms(t.first_sent_ms));
            if (t.last_sent_ms) append_member(out, "lastSentAt", format_utc_ms(t.last_sent_ms));
            if (t.answered_ms) append_member(out, "answeredAt", format_utc_ms(t.answered_ms));
            if (!t.detail.empty()) append_member(out, "detail", t.detail);
            if (t.roles & role_pseudonymous) append_member(out, "subjectNamedBy", "pseudonym");
            out.push_back('}');
        }
        out.push_back(']');
    }
    out.push_back('}');
    return out;
}

// A request names its subject as the key files named subjects when it was made: by id with none,
// by pseudonym before an audit key. A finished one keeps only that name, as its record of whom it
// erased. At start, each request takes the name the key files in use give (GDPR Art. 17, 25(1)):
// one in progress still holds the id to compute it from; a finished one named by id is renamed
// from that id. A finished one named by an earlier key stays so (its id is gone); request()
// finds it under erasure_effects::earlier_subject_refs. Ids of a keyed name's form are left: they cannot
// be told from names already keyed.
std::size_t rename_requests_to_current_names(sqlite_db& db, const std::function<std::string(std::string_view)>& subject_ref) {
    sqlite_transaction tx(db);
    std::vector<std::pair<std::string, std::string>> renames;  // request id, name
    {
        sqlite_statement rows(db.handle(), "SELECT request_id, subject, subject_ref FROM erasure_requests");
        while (rows.step()) {
            const std::string subject = rows.text(1), name = rows.text(2);
            std::string now;
            if (!subject.empty()) now = subject_ref(subject);
            else if (!is_keyed_subject_name(name)) now = subject_ref(name);
            if (!now.empty() && now != name && is_keyed_subject_name(now)) renames.emplace_back(rows.text(0), std::move(now));
        }
    }
    sqlite_statement rename(db.handle(), "UPDATE erasure_requests SET subject_ref = ?2 WHERE request_id = ?1");
    for (const auto& [id, name] : renames) {
        rename.bind(1, id).bind(2, name);
        rename.run();
    }
    tx.commit();
    return renames.size();
}

} // namespace

std::string_view to_string(target_state s) { return TARGET_STATES.at(static_cast<std::size_t>(s)); }

target_state target_state_from_string(std::string_view name) {
    for (std::size_t i = 0; i < TARGET_STATES.size(); ++i)
        if (TARGET_STATES[i] == name) return static_cast<target_state>(i);
    throw std::invalid_argument("unknown erasure target state '" + std::string(name) + "'");
}

std::string_view to_string(request_state s) {
    switch (s) {
    case request_state::in_progress: return "in_progress";
    case request_state::completed: return "completed";
    case request_state::completed_with_failures: return "completed_with_failures";
    }
    return "in_progress";
}

// Text from devices is cleaned before it is kept, but a dump must never throw on a broker thread.
static std::string dump_safely(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

nlohmann::json receipt_document(const erasure_request& r, bool with_targets) { return receipt(r, true, with_targets); }

std::string receipt_json(const erasure_request& r, bool with_targets) { return receipt_text(r, true, with_targets); }

erasure_manager::erasure_manager(erase_topics topics, erasure_options options, data_map& map, erasure_effects effects)
    : topics_(std::move(topics)), options_(options), map_(map), effects_(std::move(effects)) {}

erasure_manager::~erasure_manager() {
    try {
        flush_targets();  // the worker writes it before it stops
    } catch (...) {
    }
}

std::unique_ptr<erasure_manager> erasure_manager::open(const std::string& path, erase_topics topics,
                                                       erasure_options options, data_map& map, erasure_effects effects,
                                                       std::string_view synchronous) {
    std::unique_ptr<erasure_manager> m(new erasure_manager(std::move(topics), options, map, std::move(effects)));
    auto db = std::make_unique<sqlite_db>(path, synchronous);
    db->exec(SCHEMA_SQL);
    check_schema_version(*db, "erasure", SCHEMA_VERSION, "erasure schema");
    if (m->effects_.subject_ref) m->requests_renamed_ = rename_requests_to_current_names(*db, m->effects_.subject_ref);
    {
        sqlite_statement rows(db->handle(), "SELECT request_id, subject, subject_ref, operator, requested_at_ms, "
                                            "deadline_ms, state, completed_at_ms, local_json FROM erasure_requests");
        while (rows.step()) {
            auto r = std::make_unique<erasure_request>();
            r->id = rows.text(0);
            r->subject = rows.text(1);
            r->subject_ref = rows.text(2);
            r->operator_id = rows.text(3);
            r->requested_ms = rows.integer(4);
            r->deadline_ms = rows.integer(5);
            r->state = request_state_from_string(rows.text(6));
            r->completed_ms = rows.integer(7);
            r->local = local_from_json(rows.text(8));
            r->durable = true;
            auto& last = m->last_request_ms_[r->subject_ref].at_ms;
            last = std::max(last, r->requested_ms);
            m->requests_.emplace(r->id, std::move(r));
        }
    }
    {
        sqlite_statement rows(db->handle(), "SELECT request_id, client_id, roles, state, attempts, first_sent_ms, "
                                            "last_sent_ms, answered_ms, seen_online, detail FROM erasure_targets "
                                            "ORDER BY request_id, client_id");
        while (rows.step()) {
            auto it = m->requests_.find(rows.text(0));
            if (it == m->requests_.end()) continue;
            erasure_target t;
            t.client_id = rows.text(1);
            t.roles = static_cast<std::uint8_t>(rows.integer(2));
            t.state = target_state_from_string(rows.text(3));
            t.attempts = static_cast<std::int32_t>(rows.integer(4));
            t.first_sent_ms = rows.integer(5);
            t.last_sent_ms = rows.integer(6);
            t.answered_ms = rows.integer(7);
            t.seen_online = rows.integer(8) != 0;
            t.detail = rows.text(9);
            it->second->targets.push_back(std::move(t));
        }
    }
    m->worker_ = std::make_unique<storage_worker>(std::move(db));
    // Requests interrupted by a restart resume: every unanswered target is sent again at once.
    for (auto& [id, r] : m->requests_) {
        if (r->state != request_state::in_progress) continue;
        m->active_.emplace(id, r.get());
        for (auto& t : r->targets) {
            if (is_final(t.state)) continue;
            ++r->open_targets;
            t.next_send_ms = DUE_NOW;
            m->pending_by_client_[t.client_id].push_back(id);
        }
        m->resume_local_.push_back(id);  // at the first tick: the broker is running then
    }
    m->next_due_ms_ = m->active_.empty() ? 0 : DUE_NOW;
    return m;
}

const erasure_request* erasure_manager::find(std::string_view id) const {
    auto it = requests_.find(std::string(id));
    return it == requests_.end() ? nullptr : it->second.get();
}

std::vector<const erasure_request*> erasure_manager::list(std::size_t limit) const {
    std::vector<const erasure_request*> out;
    for (const auto& [id, r] : requests_) out.push_back(r.get());
    std::sort(out.begin(), out.end(), [](const erasure_request* a, const erasure_request* b) {
        return a->requested_ms != b->requested_ms ? a->requested_ms > b->requested_ms : a->id < b->id;
    });
    if (out.size() > limit) out.resize(limit);
    return out;
}

void erasure_manager::request(const std::string& id, const std::string& subject, const std::string& operator_id,
                              std::int64_t now_ms, request_done done) {
    if (id.empty() || id.size() > MAX_ID_BYTES)
        return done(nullptr, "the request id must be 1 to " + std::to_string(MAX_ID_BYTES) + " bytes");
    if (subject.empty()) return done(nullptr, "the subject must not be empty");
    const std::string ref = effects_.subject_ref ? effects_.subject_ref(subject) : subject;
    // Requests finished under an earlier key file name the subject the earlier way.
    std::vector<std::string> names{ref};
    for (const auto& earlier : effects_.earlier_subject_refs) names.push_back(earlier(subject));
    if (auto it = requests_.find(id); it != requests_.end()) {
        if (std::find(names.begin(), names.end(), it->second->subject_ref) == names.end())
            return done(nullptr, "request id \"" + id + "\" is already used for another subject");
        if (!it->second->durable) return done(nullptr, "request \"" + id + "\" is still being recorded: ask again shortly");
        return done(it->second.get(), "");
    }
    std::int64_t last_ms = INT64_MIN;
    for (const auto& name : names)
        if (auto last = last_request_ms_.find(name); last != last_request_ms_.end()) last_ms = std::max(last_ms, last->second.at_ms);
    if (options_.rate_limit_ms > 0 && last_ms != INT64_MIN && now_ms - last_ms < options_.rate_limit_ms) {
        return done(nullptr, "rate limit: this subject's last erasure request was at " + format_utc_ms(last_ms) +
                                 "; the next is accepted from " + format_utc_ms(last_ms + options_.rate_limit_ms));
    }
    auto owned = std::make_unique<erasure_request>();
    erasure_request& r = *owned;
    r.id = id;
    r.subject = subject;
    r.subject_ref = ref;
    r.operator_id = operator_id;
    r.requested_ms = now_ms;
    r.deadline_ms = now_ms + options_.deadline_ms;
    r.timed_here = true;
    const subject_holdings h = map_.holdings(subject);
    const std::map<std::string, std::uint8_t> roles = roles_of(h);
    for (const auto& [client, role] : roles) {
        erasure_target t;
        t.client_id = client;
        t.roles = role;
        r.targets.push_back(std::move(t));
    }
    r.retained_topics = h.retained_topics;  // cleared once the request is durable (take_new_holders)
    for (const auto& topic : h.retained_topics)
        r.local.retained_cleared.push_back(effects_.loggable_topic ? effects_.loggable_topic(topic) : topic);
    r.open_targets = r.targets.size();
    requests_.emplace(id, std::move(owned));
    const auto previous = last_request_ms_.find(ref);
    const std::optional<last_request> previous_ms =
        previous == last_request_ms_.end() ? std::nullopt : std::optional<last_request>(previous->second);
    last_request_ms_[ref] = last_request{now_ms, true};

    struct row {
        std::string client_id;
        std::uint8_t roles;
    };
    std::vector<row> rows;
    for (const auto& t : r.targets) rows.push_back({t.client_id, t.roles});
    const std::string local = dump_safely(local_to_json(r.local));
    worker_->submit(
        [id, subject, ref, operator_id, now_ms, deadline = r.deadline_ms, rows = std::move(rows), local](sqlite_db& db) {
            auto& insert = db.cached("INSERT INTO erasure_requests (request_id, subject, subject_ref, operator, "
                                     "requested_at_ms, deadline_ms, state, local_json) "
                                     "VALUES (?1, ?2, ?7, ?3, ?4, ?5, 'in_progress', ?6)");
            insert.bind(1, id).bind(2, subject).bind(3, operator_id).bind(4, now_ms).bind(5, deadline).bind(6, local);
            insert.bind(7, ref);
            insert.run();
            auto& target = db.cached("INSERT INTO erasure_targets (request_id, client_id, roles, state, attempts, "
                                     "first_sent_ms, last_sent_ms, answered_ms, seen_online, detail) "
                                     "VALUES (?1, ?2, ?3, 'pending', 0, 0, 0, 0, 0, '')");
            for (const auto& t : rows) {
                target.bind(1, id).bind(2, t.client_id).bind(3, std::int64_t{t.roles});
                target.run();
            }
        },
        [this, id, ref, previous_ms, done = std::move(done)](const std::string& error) {
            auto it = requests_.find(id);
            if (it == requests_.end()) return done(nullptr, "the request vanished");
            if (!error.empty()) {
                // Not recorded, so not accepted: the operator may ask again.
                requests_.erase(it);
                if (previous_ms) last_request_ms_[ref] = *previous_ms;
                else last_request_ms_.erase(ref);
                return done(nullptr, "the request was not recorded: " + error);
            }
            erasure_request& req = *it->second;
            req.durable = true;
            active_.emplace(id, &req);
            for (auto& t : req.targets) {
                t.next_send_ms = DUE_NOW;  // not requested_ms: the clock may have been set since
                pending_by_client_[t.client_id].push_back(id);
            }
            take_new_holders(req);
            record("erasure_requested", req,
                   json{{"request_id", req.id}, {"operator", req.operator_id}, {"targets", req.targets.size()},
                        {"retained_topics", req.local.retained_cleared.size()}, {"deadline", format_utc_ms(req.deadline_ms)}}
                       .dump(-1, ' ', false, json::error_handler_t::replace));
            start(req, req.requested_ms);
            next_due_ms_ = DUE_NOW;
            done(&req, "");
        });
}

void erasure_manager::start(erasure_request& r, std::int64_t now_ms) {
    // The plugin's own part: what the broker retains (cleared by take_new_holders), what the
    // plugin knows, the sealed records.
    for (auto& t : r.targets) {
        if (!is_final(t.state) && topics_.command_topic(t.client_id).empty())
            finish_target(r, t, target_state::failed, now_ms, "the client id cannot form an erase topic");
    }
    if (!effects_.remove_consent) return finish_local(r, "", 0, 0);
    const std::string id = r.id;
    effects_.remove_consent(r.subject, r.operator_id,
                            [this, id](const std::string& error, std::int64_t events, std::int64_t bindings) {
                                auto it = requests_.find(id);
                                if (it != requests_.end()) finish_local(*it->second, error, events, bindings);
                            });
}

void erasure_manager::finish_local(erasure_request& r, const std::string& consent_error, std::int64_t consent_events,
                                   std::int64_t bindings) {
    r.local.error = consent_error.empty() ? std::string() : "consent and bindings: " + consent_error;
    // After a restart between the removal and the shred, the removal is done again and finds
    // nothing: the counts the first run saved stay, and what is found now is added.
    const auto so_far = [](std::int64_t count) { return std::max<std::int64_t>(count, 0); };
    r.local.consent_events_removed = so_far(r.local.consent_events_removed) + (consent_error.empty() ? consent_events : 0);
    r.local.bindings_removed = so_far(r.local.bindings_removed) + (consent_error.empty() ? bindings : 0);
    if (consent_error.empty()) save_request(r);  // the counts, before the shred: for the receipt after a restart
    const std::string id = r.id;
    auto complete = [this, id](bool shredded) {
        auto it = requests_.find(id);
        if (it == requests_.end()) return;
        erasure_request& req = *it->second;
        req.local.key_shredded = shredded;
        req.local.complete = true;
        save_request(req);
        record("erasure_local_done", req, dump_safely(json{{"request_id", req.id}, {"plugin", local_to_json(req.local)}}));
        maybe_complete(req, wall_ms());
    };
    // Last, so that the records of the removal above are sealed under the key it destroys; the
    // receipt says "shredded" only once the key is gone from the file.
    if (!effects_.shred_key || !effects_.shred_key(r.subject, [complete] { complete(true); })) complete(false);
}

void erasure_manager::take_new_holders(erasure_request& r) {
    const subject_holdings h = map_.holdings(r.subject);
    const std::map<std::string, std::uint8_t> fresh = roles_of(h);
    std::vector<std::pair<std::string, std::uint8_t>> added;
    std::vector<std::pair<std::string, std::uint8_t>> told_the_id;
    for (const auto& [client, role] : fresh) {
        auto t = std::lower_bound(r.targets.begin(), r.targets.end(), client,
                                  [](const erasure_target& a, const std::string& b) { return a.client_id < b; });
        if (t != r.targets.end() && t->client_id == client) {
            // It has received the id since: its commands from now on name it (GDPR Art. 17(2)).
            if ((t->roles & role_pseudonymous) && !(role & role_pseudonymous) && !is_final(t->state)) {
                t->roles = static_cast<std::uint8_t>((t->roles | role) & ~role_pseudonymous);
                told_the_id.emplace_back(client, t->roles);
            }
            continue;
        }
        erasure_target nt;
        nt.client_id = client;
        nt.roles = role;
        nt.next_send_ms = DUE_NOW;
        r.targets.insert(t, std::move(nt));
        ++r.open_targets;
        added.emplace_back(client, role);
        if (r.durable) pending_by_client_[client].push_back(r.id);
    }
    for (const auto& topic : h.retained_topics) {
        const std::string shown = effects_.loggable_topic ? effects_.loggable_topic(topic) : topic;
        if (std::find(r.retained_topics.begin(), r.retained_topics.end(), topic) != r.retained_topics.end()) continue;
        r.retained_topics.push_back(topic);
        if (std::find(r.local.retained_cleared.begin(), r.local.retained_cleared.end(), shown) == r.local.retained_cleared.end())
            r.local.retained_cleared.push_back(shown);
    }
    // Cleared before the map forgets the subject: each topic's note (data_map::retained_cleared)
    // is written before the subject's rows are deleted.
    for (const auto& topic : r.retained_topics) {
        if (effects_.clear_retained) effects_.clear_retained(topic);
        map_.retained_cleared(topic);
    }
    r.retained_topics.clear();
    // The targets are in the request now; the map forgets the subject (GDPR Art. 17). The same
    // transaction writes what the register learnt from the map (on the map's connection to the same
    // file), so that a crash cannot keep the one and lose the other. Both statements only add to
    // what other writes of the register say, in whatever order they land.
    storage_worker::work_fn learnt;
    if (!added.empty() || !told_the_id.empty()) {
        learnt = [id = r.id, added, told_the_id](sqlite_db& db) {
            auto& target = db.cached("INSERT OR IGNORE INTO erasure_targets (request_id, client_id, roles, state, "
                                     "attempts, first_sent_ms, last_sent_ms, answered_ms, seen_online, detail) "
                                     "VALUES (?1, ?2, ?3, 'pending', 0, 0, 0, 0, 0, '')");
            for (const auto& [client, role] : added) {
                target.bind(1, id).bind(2, client).bind(3, std::int64_t{role});
                target.run();
            }
            auto& named = db.cached("UPDATE erasure_targets SET roles = (roles | ?3) & ~?4 "
                                    "WHERE request_id = ?1 AND client_id = ?2");
            for (const auto& [client, roles] : told_the_id) {
                named.bind(1, id).bind(2, client).bind(3, std::int64_t{roles}).bind(4, std::int64_t{role_pseudonymous});
                named.run();
            }
        };
    }
    storage_worker::done_fn saved = learnt ? on_saved(r) : nullptr;
    map_.forget_subject(r.subject, std::move(saved), std::move(learnt));
}

std::function<void(const std::string&)> erasure_manager::on_saved(const erasure_request& r) {
    return [this, id = r.id](const std::string& error) {
        if (error.empty()) return;
        if (std::find(resave_.begin(), resave_.end(), id) == resave_.end()) resave_.push_back(id);
        if (next_due_ms_ == 0) next_due_ms_ = 1;
        // At most one alert a minute: while the disk stays full, every save fails again.
        ++register_failures_;
        const auto now = std::chrono::steady_clock::now();
        if (!effects_.alert || (register_alerted_ != std::chrono::steady_clock::time_point{} &&
                                now - register_alerted_ < std::chrono::minutes(1)))
            return;
        effects_.alert("erasure_register", "the erasure register could not be written for request " + id +
                                               " (saved again every " + std::to_string(RESAVE_DELAY_MS / 1000) + " s; " +
                                               std::to_string(register_failures_) +
                                               " failed write(s) since the last such alert): " + error);
        register_alerted_ = now;
        register_failures_ = 0;
    };
}

void erasure_manager::send(erasure_request& r, erasure_target& t, std::int64_t now_ms) {
    if (effects_.is_connected && !effects_.is_connected(t.client_id)) {
        t.next_send_ms = 0;  // sent when the client connects
        return;
    }
    if (effects_.pseudonym && r.pseudonym.empty()) r.pseudonym = effects_.pseudonym(r.subject);
    // No pseudonym to name it by any more (the key file was taken away since), or it has received
    // the id since the request (the map holds only what came after it): the id it is.
    if ((t.roles & role_pseudonymous) && (r.pseudonym.empty() || map_.knows_id(r.subject, t.client_id)))
        t.roles = static_cast<std::uint8_t>(t.roles & ~role_pseudonymous);
    std::string command = "{\"requestId\":";
    append_json_string(command, r.id);
    // GDPR Art. 25(1): a client that received the subject only by pseudonym is not told its id.
    if (!(t.roles & role_pseudonymous)) append_member(command, "subject", r.subject);
    if (!r.pseudonym.empty()) append_member(command, "pseudonym", r.pseudonym);
    append_member(command, "issuedAt", format_utc_ms(r.requested_ms));
    append_member(command, "deadline", format_utc_ms(r.deadline_ms));
    append_member(command, "attempt", t.attempts + 1);
    command.push_back('}');
    if (effects_.send) effects_.send(t.client_id, topics_.command_topic(t.client_id), command);
    ++t.attempts;
    t.state = target_state::sent;
    t.seen_online = true;
    if (!t.first_sent_ms) t.first_sent_ms = now_ms;
    t.last_sent_ms = now_ms;
    std::int64_t backoff = options_.first_retry_ms;
    for (int i = 1; i < t.attempts && backoff < options_.max_retry_ms; ++i) backoff *= 2;
    t.next_send_ms = now_ms + std::min(backoff, options_.max_retry_ms);
    save_target(r, t);
}

void erasure_manager::finish_target(erasure_request& r, erasure_target& t, target_state s, std::int64_t now_ms,
                                    std::string detail) {
    if (!is_final(t.state) && r.open_targets > 0) --r.open_targets;
    t.state = s;
    t.answered_ms = now_ms;
    t.detail = std::move(detail);
    t.next_send_ms = 0;
    save_target(r, t);
    std::string detail_json = "{\"request_id\":";
    append_json_string(detail_json, r.id);
    append_member(detail_json, "client_id", t.client_id);
    append_member(detail_json, "state", to_string(s));
    append_member(detail_json, "attempts", t.attempts);
    detail_json.push_back('}');
    record("erasure_target", r, detail_json);
    auto it = pending_by_client_.find(t.client_id);
    if (it != pending_by_client_.end()) {
        auto& ids = it->second;
        ids.erase(std::remove(ids.begin(), ids.end(), r.id), ids.end());
        if (ids.empty()) pending_by_client_.erase(it);
    }
}

void erasure_manager::maybe_complete(erasure_request& r, std::int64_t now_ms) {
    if (r.state != request_state::in_progress || !r.durable || !r.local.done() || r.open_targets > 0) return;
    bool failures = !r.local.error.empty();
    for (const auto& t : r.targets)
        failures = failures || t.state == target_state::failed || t.state == target_state::unreachable;
    flush_targets();  // the targets' final states before the request's
    r.state = failures ? request_state::completed_with_failures : request_state::completed;
    r.completed_ms = now_ms;
    save_request(r);
    record("erasure_receipt", r, receipt_text(r, false, true));  // the whole receipt, once
    active_.erase(r.id);
    // GDPR Art. 5(1)(c): nothing needs the erased subject's id any more; the register dropped it
    // with save_request, and memory keeps only its reference too, as after a restart.
    OPENSSL_cleanse(r.subject.data(), r.subject.size());
    r.subject.clear();
    r.subject.shrink_to_fit();
    OPENSSL_cleanse(r.pseudonym.data(), r.pseudonym.size());
    r.pseudonym.clear();
    r.pseudonym.shrink_to_fit();
    if (failures && effects_.alert)
        effects_.alert("erasure_incomplete", "erasure request " + r.id + " completed with failures: " +
                                                 [&] {
                                                     std::string t;
                                                     append_totals(t, r);
                                                     return t;
                                                 }());
}

std::string erasure_manager::acknowledge(const std::string& client_id, std::string_view payload, std::int64_t now_ms) {
    const auto j = json::parse(payload.begin(), payload.end(), nullptr, false);
    if (!j.is_object()) return "the acknowledgement is not a JSON object";
    const auto id = j.find("requestId");
    const auto status = j.find("status");
    if (id == j.end() || !id->is_string()) return "the acknowledgement has no \"requestId\" string";
    if (status == j.end() || !status->is_string()) return "the acknowledgement has no \"status\" string";
    const std::string s = status->get<std::string>();
    target_state state;
    if (s == "erased") state = target_state::erased;
    else if (s == "not_found") state = target_state::not_found;
    else if (s == "failed") state = target_state::failed;
    else return "the acknowledgement's status must be erased, not_found or failed";
    auto it = requests_.find(id->get<std::string>());
    // A request still being recorded has sent no command yet: an answer to it is not one.
    if (it == requests_.end() || !it->second->durable) return "the acknowledgement names an unknown request";
    erasure_request& r = *it->second;
    auto t = std::lower_bound(r.targets.begin(), r.targets.end(), client_id,
                              [](const erasure_target& a, const std::string& b) { return a.client_id < b; });
    if (t == r.targets.end() || t->client_id != client_id) return "the client is not a target of the request";
    if (is_final(t->state) || r.state != request_state::in_progress) return {};  // a repeat (QoS 1) or too late
    std::string detail;
    if (const auto d = j.find("detail"); d != j.end() && d->is_string()) detail = printable_detail(d->get_ref<const std::string&>());
    if (state == target_state::failed && detail.empty()) detail = "the device reported that it could not erase";
    t->seen_online = true;
    finish_target(r, *t, state, now_ms, state == target_state::failed ? detail : std::string());
    if (state == target_state::failed && effects_.alert)
        effects_.alert("erasure_target_failed", "erasure request " + r.id + ": client '" + client_id +
                                                    "' reported that it could not erase");
    maybe_complete(r, now_ms);
    return {};
}

void erasure_manager::client_connected(const std::string& client_id, std::int64_t now_ms) {
    auto it = pending_by_client_.find(client_id);
    if (it == pending_by_client_.end()) return;
    for (const auto& id : it->second) {
        auto r = requests_.find(id);
        if (r == requests_.end()) continue;
        auto& targets = r->second->targets;
        auto t = std::lower_bound(targets.begin(), targets.end(), client_id,
                                  [](const erasure_target& a, const std::string& b) { return a.client_id < b; });
        if (t == targets.end() || t->client_id != client_id || is_final(t->state)) continue;
        // A command sent moments ago may still be on its way (a reconnecting device's first
        // publishes often follow its login at once), or may have gone to the connection that just
        // ended: it is sent again once that moment has passed, not at once.
        const std::int64_t again_at = t->last_sent_ms + IN_FLIGHT_MS;
        if (now_ms >= again_at || now_ms < t->last_sent_ms) t->next_send_ms = now_ms;
        else if (t->next_send_ms == 0 || t->next_send_ms > again_at) t->next_send_ms = again_at;
    }
    next_due_ms_ = next_due_ms_ == 0 ? now_ms : std::min(next_due_ms_, now_ms);
}

void erasure_manager::tick(std::int64_t now_ms) {
    if (!resume_local_.empty()) {
        std::vector<std::string> ids;
        ids.swap(resume_local_);
        for (const auto& id : ids) {
            auto it = requests_.find(id);
            // Finished meanwhile (every holder answered before this first tick): nothing to resume.
            if (it == requests_.end() || it->second->state != request_state::in_progress) continue;
            take_new_holders(*it->second);  // a holder recorded on disk but not yet a target
            if (!it->second->local.done()) start(*it->second, now_ms);
        }
    }
    // Capped as well as set: a clock set back must not put the next attempt off for as long.
    if (!resave_.empty() && (resave_due_ms_ == 0 || resave_due_ms_ > now_ms + RESAVE_DELAY_MS))
        resave_due_ms_ = now_ms + RESAVE_DELAY_MS;
    if (!resave_.empty() && now_ms >= resave_due_ms_) {
        resave_due_ms_ = 0;
        std::vector<std::string> ids;
        ids.swap(resave_);
        for (const auto& id : ids) {
            auto it = requests_.find(id);
            if (it == requests_.end()) continue;
            save_request(*it->second);
            for (const auto& t : it->second->targets) save_target(*it->second, t);
        }
    }
    if (next_due_ms_ != 0 && now_ms >= next_due_ms_) run_due(now_ms);
    flush_targets();
}

void erasure_manager::clock_set(std::int64_t step_ms) {
    if (step_ms == 0) return;
    // Scheduled times stay scheduled (a step back must not turn one into 0, "not scheduled"), and
    // what is due at once stays so.
    const auto shift = [step_ms](std::int64_t& at) {
        if (at > DUE_NOW) at = std::max(DUE_NOW, at + step_ms);
    };
    for (auto& [id, r] : requests_) {
        if (r->state != request_state::in_progress) continue;
        for (auto& t : r->targets) shift(t.next_send_ms);
        // A deadline set by an earlier run was set by the clock of that run: a step now (an NTP
        // correction at boot, most likely) says nothing about it.
        if (!r->timed_here) continue;
        r->deadline_ms += step_ms;
        save_request(*r);
    }
    for (auto& [ref, last] : last_request_ms_)
        if (last.timed_here) last.at_ms += step_ms;
    shift(next_due_ms_);
    shift(resave_due_ms_);
    tokens_at_ms_ += step_ms;
}

void erasure_manager::run_due(std::int64_t now_ms) {
    std::int64_t next = 0;
    auto consider = [&next](std::int64_t at) {
        if (at > 0) next = next == 0 ? at : std::min(next, at);
    };
    // Tokens for this tick: at most a tenth of a second's worth at once.
    const double rate = static_cast<double>(std::max<std::int64_t>(1, options_.send_rate_per_s));
    send_tokens_ = std::min(rate / 10 + 1, send_tokens_ + static_cast<double>(now_ms - tokens_at_ms_) * rate / 1000);
    tokens_at_ms_ = now_ms;
    bool paced = false;
    std::vector<erasure_request*> active;
    for (auto& [id, r] : active_) active.push_back(r);
    for (erasure_request* r : active) {
        if (now_ms >= r->deadline_ms) {
            std::size_t failed = 0, unreachable = 0;
            for (auto& t : r->targets) {
                if (is_final(t.state)) continue;
                if (t.seen_online) {
                    ++failed;
                    finish_target(*r, t, target_state::failed, now_ms, "no acknowledgement before the deadline");
                } else {
                    ++unreachable;
                    finish_target(*r, t, target_state::unreachable, now_ms, "not connected before the deadline");
                }
            }
            if ((failed || unreachable) && effects_.alert)
                effects_.alert("erasure_deadline", "erasure request " + r->id + " passed its deadline: " +
                                                       std::to_string(failed) + " target(s) unacknowledged, " +
                                                       std::to_string(unreachable) + " unreachable");
            maybe_complete(*r, now_ms);  // once the plugin's own part has finished too
            continue;
        }
        for (auto& t : r->targets) {
            if (is_final(t.state)) continue;
            if (t.next_send_ms > 0 && t.next_send_ms <= now_ms) {
                if (send_tokens_ < 1) {
                    paced = true;
                    continue;
                }
                send_tokens_ -= 1;
                send(*r, t, now_ms);
            }
            consider(t.next_send_ms);
        }
        consider(r->deadline_ms);
        maybe_complete(*r, now_ms);
    }
    // Held back by the pace: due again once a few commands' worth of tokens have accrued.
    if (paced) consider(now_ms + std::max<std::int64_t>(1, static_cast<std::int64_t>(10000 / rate)));
    next_due_ms_ = next;
}

void erasure_manager::save_target(const erasure_request& r, const erasure_target& t) {
    unsaved_targets_.push_back(target_row{r.id, t});
}

void erasure_manager::flush_targets() {
    if (unsaved_targets_.empty()) return;
    std::vector<target_row> rows;
    rows.swap(unsaved_targets_);
    std::vector<std::string> ids;
    for (const auto& row : rows)
        if (ids.empty() || ids.back() != row.request_id) ids.push_back(row.request_id);
    auto failed = [this, ids](const std::string& error) {
        for (const auto& id : ids) {
            auto it = requests_.find(id);
            if (it != requests_.end()) on_saved(*it->second)(error);
        }
    };
    worker_->submit(
        [rows = std::move(rows)](sqlite_db& db) {
            // An upsert: a holder added after the request (take_new_holders) whose first write
            // failed is written here when the request is saved again, not lost.
            auto& upsert = db.cached("INSERT INTO erasure_targets (request_id, client_id, state, attempts, first_sent_ms, "
                                     "last_sent_ms, answered_ms, seen_online, detail, roles) "
                                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
                                     "ON CONFLICT (request_id, client_id) DO UPDATE SET state = excluded.state, "
                                     "attempts = excluded.attempts, first_sent_ms = excluded.first_sent_ms, "
                                     "last_sent_ms = excluded.last_sent_ms, answered_ms = excluded.answered_ms, "
                                     "seen_online = excluded.seen_online, detail = excluded.detail, roles = excluded.roles");
            for (const auto& row : rows) {
                const auto& t = row.target;
                upsert.bind(1, row.request_id).bind(2, t.client_id).bind(3, to_string(t.state));
                upsert.bind(4, std::int64_t{t.attempts}).bind(5, t.first_sent_ms).bind(6, t.last_sent_ms);
                upsert.bind(7, t.answered_ms).bind(8, std::int64_t{t.seen_online}).bind(9, t.detail);
                upsert.bind(10, std::int64_t{t.roles});
                upsert.run();
            }
        },
        failed);
}

void erasure_manager::wait_idle() {
    flush_targets();
    worker_->wait_idle();
}

void erasure_manager::save_request(const erasure_request& r) {
    worker_->submit(
        [id = r.id, state = std::string(to_string(r.state)), completed = r.completed_ms, deadline = r.deadline_ms,
         local = dump_safely(local_to_json(r.local)), finished = r.state != request_state::in_progress](sqlite_db& db) {
            // Once every holder has answered, the register keeps only the subject's reference
            // (for the rate limit and the receipt): the erased subject's id is not kept.
            auto& update = db.cached("UPDATE erasure_requests SET state = ?2, completed_at_ms = ?3, local_json = ?4, "
                                     "subject = CASE WHEN ?5 THEN '' ELSE subject END, deadline_ms = ?6 WHERE request_id = ?1");
            update.bind(1, id).bind(2, state).bind(3, completed).bind(4, local).bind(5, std::int64_t{finished}).bind(6, deadline);
            update.run();
        },
        on_saved(r));
}

void erasure_manager::record(std::string_view step, const erasure_request& r, const std::string& detail_json) {
    if (effects_.record) effects_.record(step, r.id, detail_json);
}

} // namespace gdpr
