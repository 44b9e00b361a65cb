#include "gdpr/consent_store.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace gdpr {

namespace {

constexpr const char* SCHEMA_SQL = R"sql(
CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS consent_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  subject TEXT NOT NULL, purpose TEXT NOT NULL, granted INTEGER NOT NULL CHECK (granted IN (0, 1)),
  at_ms INTEGER NOT NULL, operator TEXT NOT NULL, evidence TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS consent_events_by_subject ON consent_events (subject, seq);
CREATE TABLE IF NOT EXISTS consent_current (
  subject TEXT NOT NULL, purpose TEXT NOT NULL, granted INTEGER NOT NULL, at_ms INTEGER NOT NULL,
  event_seq INTEGER NOT NULL REFERENCES consent_events (seq), PRIMARY KEY (subject, purpose)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_bindings (
  client_id TEXT NOT NULL, subject TEXT NOT NULL, bound_at_ms INTEGER NOT NULL, operator TEXT NOT NULL,
  PRIMARY KEY (client_id, subject)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS binding_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, subject TEXT NOT NULL,
  bound INTEGER NOT NULL CHECK (bound IN (0, 1)), at_ms INTEGER NOT NULL, operator TEXT NOT NULL);
)sql";

// Keys of changes in flight: "c" subject NUL purpose for consent, "b" client NUL subject for bindings.
std::string consent_key(const std::string& subject, const std::string& purpose) {
    return "c" + subject + '\0' + purpose;
}

std::string binding_key(std::string_view client_id, std::string_view subject) {
    std::string key(client_id);
    key.push_back('\0');
    key.append(subject);
    return key;
}

} // namespace

std::int64_t consent_store::now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::vector<std::string> consent_store::consent_purposes(const purpose_registry& purposes) {
    std::vector<std::string> names;
    for (const auto& name : purposes.names()) {
        if (!purposes.needs_consent(name)) continue;
        if (static_cast<int>(names.size()) >= MAX_CONSENT_PURPOSES)
            throw std::invalid_argument("more than 64 purposes rest on consent");
        names.push_back(name);
    }
    return names;
}

std::unique_ptr<consent_store> consent_store::open(const std::string& path, const purpose_registry& purposes,
                                                   std::string_view synchronous) {
    std::unique_ptr<consent_store> store(new consent_store());
    store->use_purposes(purposes);  // numbers the consent purposes; nothing is loaded yet to move
    auto db = std::make_unique<sqlite_db>(path, synchronous);
    db->exec(SCHEMA_SQL);
    check_schema_version(*db, "consent", SCHEMA_VERSION, "consent schema");
    {
        sqlite_statement rows(db->handle(), "SELECT subject, purpose FROM consent_current WHERE granted = 1");
        while (rows.step()) {
            const auto bit = store->consent_bit(rows.text(1));
            if (bit >= 0) store->apply(rows.text(0), bit, true);
            else store->held_[rows.text(0)].push_back(rows.text(1));  // counts again if its purpose does
        }
    }
    {
        sqlite_statement rows(db->handle(), "SELECT client_id, subject, bound_at_ms, operator FROM device_bindings");
        while (rows.step()) {
            device_binding b{rows.text(0), rows.text(1), rows.integer(2), rows.text(3)};
            store->bound_subjects_[b.client_id].push_back(b.subject);
            store->binding_details_.emplace(binding_key(b.client_id, b.subject), std::move(b));
        }
    }
    store->worker_ = std::make_unique<storage_worker>(std::move(db));
    return store;
}

consent_store::~consent_store() = default;

int consent_store::consent_bit(std::string_view purpose) const {
    auto it = bits_.find(std::string(purpose));
    return it == bits_.end() ? -1 : it->second;
}

std::uint64_t consent_store::granted_mask(std::string_view subject) const {
    const std::uint64_t* mask = masks_.find(subject);
    return mask ? *mask : 0;
}

const std::vector<std::string>* consent_store::subjects_bound_to(std::string_view client_id) const {
    if (bound_subjects_.empty()) return nullptr;
    auto it = bound_subjects_.find(std::string(client_id));
    return it == bound_subjects_.end() || it->second.empty() ? nullptr : &it->second;
}

consent_store::purpose_shift consent_store::use_purposes(const purpose_registry& purposes) {
    std::vector<std::string> names = consent_purposes(purposes);
    purpose_shift shift;
    if (names == bit_names_) return shift;
    std::unordered_map<std::string, int> bits;
    for (std::size_t i = 0; i < names.size(); ++i) bits.emplace(names[i], static_cast<int>(i));
    std::vector<int> moved(bit_names_.size(), -1);  // bit now -> bit after, or -1
    for (std::size_t i = 0; i < bit_names_.size(); ++i) {
        auto it = bits.find(bit_names_[i]);
        if (it != bits.end()) moved[i] = it->second;
    }
    subject_table<std::uint64_t> masks;
    std::unordered_map<std::string, std::vector<std::string>> held;
    masks_.for_each([&](std::string_view subject, const std::uint64_t& mask) {
        std::uint64_t next = 0;
        for (std::size_t b = 0; b < moved.size(); ++b) {
            if (!(mask & (std::uint64_t{1} << b))) continue;
            if (moved[b] >= 0) {
                next |= std::uint64_t{1} << moved[b];
            } else {
                held[std::string(subject)].push_back(bit_names_[b]);
                ++shift.held[bit_names_[b]];
            }
        }
        if (next) masks[subject] = next;
    });
    for (const auto& [subject, granted] : held_) {
        for (const auto& purpose : granted) {
            auto it = bits.find(purpose);
            if (it != bits.end()) {
                masks[subject] |= std::uint64_t{1} << it->second;
                ++shift.revived[purpose];
            } else {
                held[subject].push_back(purpose);
            }
        }
    }
    subject_table<std::string> index;
    if (pseudonym_of_) {
        // Subjects that keep consent keep their pseudonym; only those gaining their first one cost an HMAC.
        subject_by_pseudonym_.for_each([&](std::string_view pseudonym, const std::string& subject) {
            if (masks.find(subject)) index[pseudonym] = subject;
        });
        masks.for_each([&](std::string_view subject, const std::uint64_t&) {
            if (!masks_.find(subject)) index[pseudonym_of_(subject)].assign(subject);
        });
    }
    // Nothing below throws.
    bits_.swap(bits);
    bit_names_.swap(names);
    masks_ = std::move(masks);
    held_.swap(held);
    if (pseudonym_of_) subject_by_pseudonym_ = std::move(index);
    ++generation_;  // decisions taken under the old purposes may no longer hold
    return shift;
}

void consent_store::hold(const std::string& subject, const std::string& purpose) {
    auto& granted = held_[subject];
    if (std::find(granted.begin(), granted.end(), purpose) == granted.end()) granted.push_back(purpose);
}

bool consent_store::holds(const std::string& subject, const std::string& purpose) const {
    auto it = held_.find(subject);
    return it != held_.end() && std::find(it->second.begin(), it->second.end(), purpose) != it->second.end();
}

bool consent_store::withdrawable(const std::string& subject, const std::string& purpose) const {
    if (holds(subject, purpose)) return true;
    // Only a grant as the newest change in flight would be held once written; a withdrawal or an
    // erasure in flight already settles it.
    const auto it = changes_.find(consent_key(subject, purpose));
    return it != changes_.end() && it->second.last_not_grant != it->second.generation;
}

std::vector<std::string> consent_store::held_purposes(std::string_view subject) const {
    auto it = held_.find(std::string(subject));
    if (it == held_.end()) return {};
    std::vector<std::string> out = it->second;
    std::sort(out.begin(), out.end());
    return out;
}

std::size_t consent_store::held_grants() const {
    std::size_t n = 0;
    for (const auto& [subject, granted] : held_) n += granted.size();
    return n;
}

void consent_store::apply(const std::string& subject, int bit, bool granted) {
    const std::uint64_t flag = std::uint64_t{1} << bit;
    ++generation_;
    if (granted) {
        if (pseudonym_of_ && !masks_.find(subject)) {
            // Computed before anything changes: if it throws, the store stays as it was.
            const std::string pseudonym = pseudonym_of_(subject);
            subject_by_pseudonym_[pseudonym] = subject;
        }
        masks_[subject] |= flag;
    } else {
        if (std::uint64_t* mask = masks_.find(subject)) {
            *mask &= ~flag;
            if (*mask == 0) forget_mask(subject);
        }
    }
}

void consent_store::forget_mask(const std::string& subject) {
    if (!masks_.erase(subject) || !pseudonym_of_) return;
    // GDPR Art. 7(3), 17: forgetting must not fail half-way, so a failing HMAC costs a search.
    std::string pseudonym;
    try {
        pseudonym = pseudonym_of_(subject);
    } catch (...) {
        subject_by_pseudonym_.for_each([&](std::string_view p, const std::string& s) {
            if (s == subject) pseudonym.assign(p);
        });
    }
    subject_by_pseudonym_.erase(pseudonym);
}

void consent_store::index_pseudonyms(std::function<std::string(std::string_view)> pseudonym_of) {
    // Built on the side and put in use only when complete: a failure leaves no half index.
    subject_table<std::string> index;
    if (pseudonym_of)
        masks_.for_each([&](std::string_view subject, const std::uint64_t&) { index[pseudonym_of(subject)].assign(subject); });
    subject_by_pseudonym_ = std::move(index);
    pseudonym_of_ = std::move(pseudonym_of);
}

std::uint64_t consent_store::granted_mask_by_pseudonym(std::string_view pseudonym) const {
    const std::string* subject = subject_by_pseudonym_.find(pseudonym);
    return subject ? granted_mask(*subject) : 0;
}

void consent_store::supersede_pending(const std::string& key) {
    for (auto& w : pending_withdrawals_)
        if (!w.superseded && consent_key(w.subject, w.purpose) == key) w.superseded = true;
}

std::uint64_t consent_store::begin_change(const std::string& key, bool grant) {
    auto& state = changes_[key];
    state.generation = ++next_generation_;
    if (!grant) state.last_not_grant = state.generation;
    ++state.in_flight;
    return state.generation;
}

bool consent_store::finish_change(const std::string& key, std::uint64_t generation) {
    auto it = changes_.find(key);
    if (it == changes_.end()) return false;
    const bool newest = it->second.generation == generation;
    if (--it->second.in_flight == 0) {
        changes_.erase(it);
        erased_keys_.erase(key);
    }
    return newest;
}

bool consent_store::erased_since(const std::string& key, std::uint64_t generation) const {
    const auto it = erased_keys_.find(key);
    return it != erased_keys_.end() && it->second > generation;
}

void consent_store::notify(std::string_view change, const std::string& subject, const std::string& purpose,
                           const std::string& client_id, const std::string& operator_id, const std::string& evidence) {
    if (!observer_) return;
    nlohmann::json detail{{"operator", operator_id}};
    if (!purpose.empty()) detail["purpose"] = purpose;
    if (!client_id.empty()) detail["client_id"] = client_id;
    observer_(change, subject, detail.dump(), nlohmann::json{{"subject", subject}, {"evidence", evidence}}.dump());
}

void consent_store::set_consent(const std::string& subject, const std::string& purpose, bool granted,
                                const std::string& operator_id, const std::string& evidence, done_fn done) {
    const int bit = consent_bit(purpose);
    if (bit < 0) {
        // GDPR Art. 7(3): a held grant could count again one day; it can be withdrawn now (and one
        // still being written is superseded by the withdrawal).
        if (granted || !withdrawable(subject, purpose)) throw std::invalid_argument("purpose needs no consent");
        if (auto it = held_.find(subject); it != held_.end()) {
            it->second.erase(std::remove(it->second.begin(), it->second.end(), purpose), it->second.end());
            if (it->second.empty()) held_.erase(it);
        }
        notify("consent_withdrawn", subject, purpose, "", operator_id, evidence);
        submit_withdrawal(withdrawal{subject, purpose, operator_id, evidence, now_ms()}, std::move(done));
        return;
    }
    if (!granted) {
        // GDPR Art. 7(3): a withdrawal takes effect at once, before it is written.
        // submit_withdrawal starts a newer change, so a grant still in flight will not apply.
        apply(subject, bit, false);
        notify("consent_withdrawn", subject, purpose, "", operator_id, evidence);
        submit_withdrawal(withdrawal{subject, purpose, operator_id, evidence, now_ms()}, std::move(done));
        return;
    }
    const auto key = consent_key(subject, purpose);
    const std::uint64_t generation = begin_change(key, true);
    const std::int64_t at = now_ms();
    worker_->submit(
        [=](sqlite_db& db) {
            auto& event = db.cached("INSERT INTO consent_events (subject, purpose, granted, at_ms, operator, evidence) "
                                    "VALUES (?1, ?2, 1, ?3, ?4, ?5)");
            event.bind(1, subject).bind(2, purpose).bind(3, at).bind(4, operator_id).bind(5, evidence);
            event.run();
            auto& current = db.cached("INSERT INTO consent_current (subject, purpose, granted, at_ms, event_seq) "
                                      "VALUES (?1, ?2, 1, ?3, last_insert_rowid()) "
                                      "ON CONFLICT (subject, purpose) DO UPDATE SET granted = excluded.granted, "
                                      "at_ms = excluded.at_ms, event_seq = excluded.event_seq");
            current.bind(1, subject).bind(2, purpose).bind(3, at);
            current.run();
        },
        [this, key, generation, subject, purpose, operator_id, evidence, done = std::move(done)](const std::string& error) {
            // Written, and every change started since is a grant too: in force now, so that the
            // file and memory agree even if those newer grants fail. A withdrawal or an erasure
            // started since decides instead.
            const auto state = changes_.find(key);
            const bool only_grants_since = state != changes_.end() && state->second.last_not_grant < generation;
            const bool newest = finish_change(key, generation);
            if (error.empty() && (newest || only_grants_since)) {
                // A withdrawal still waiting to be retried is older: it must not undo this grant.
                supersede_pending(key);
                // By name: purposes.json may have been reloaded since (use_purposes).
                const int now_bit = consent_bit(purpose);
                if (now_bit >= 0) apply(subject, now_bit, true);
                else hold(subject, purpose);
                notify("consent_granted", subject, purpose, "", operator_id, evidence);
            }
            if (done) done(error.empty() || !newest ? error : "consent was not recorded: " + error);
        });
}

void consent_store::submit_withdrawal(withdrawal w, done_fn done) {
    const auto write_event = [](sqlite_db& db, const withdrawal& w) {
        auto& event = db.cached("INSERT INTO consent_events (subject, purpose, granted, at_ms, operator, evidence) "
                                "VALUES (?1, ?2, 0, ?3, ?4, ?5)");
        event.bind(1, w.subject).bind(2, w.purpose).bind(3, w.at_ms).bind(4, w.operator_id).bind(5, w.evidence);
        event.run();
    };
    const auto key = consent_key(w.subject, w.purpose);
    const std::uint64_t generation = begin_change(key);
    if (w.superseded) {
        // GDPR Art. 7(1): it was in force until the newer change, so the history keeps it (at its
        // own time); the current state is the newer change's.
        worker_->submit([w, write_event](sqlite_db& db) { write_event(db, w); },
                        [this, key, generation, w](const std::string& error) {
                            // An erasure since must not see the subject written back (GDPR Art. 17).
                            if (!error.empty()) keep_for_retry(w, erased_since(key, generation));
                            finish_change(key, generation);
                        });
        return;
    }
    worker_->submit(
        [w, write_event](sqlite_db& db) {
            write_event(db, w);
            auto& current = db.cached("INSERT INTO consent_current (subject, purpose, granted, at_ms, event_seq) "
                                      "VALUES (?1, ?2, 0, ?3, last_insert_rowid()) "
                                      "ON CONFLICT (subject, purpose) DO UPDATE SET granted = excluded.granted, "
                                      "at_ms = excluded.at_ms, event_seq = excluded.event_seq");
            current.bind(1, w.subject).bind(2, w.purpose).bind(3, w.at_ms);
            current.run();
        },
        [this, key, generation, w, done = std::move(done)](const std::string& error) {
            const bool erased = erased_since(key, generation);
            const bool newest = finish_change(key, generation);
            if (error.empty() && newest) supersede_pending(key);
            // Unrecorded, a withdrawal would be undone by the next restart: keep it and retry. A
            // newer change started meanwhile decides, once written, whether it still sets the
            // current state (supersede_pending); an erasure since drops it (GDPR Art. 17).
            if (!error.empty()) keep_for_retry(w, erased);
            if (done)
                done(error.empty() ? error
                                   : "the withdrawal is in force but could not be recorded yet (it is retried): " + error);
        });
}

void consent_store::keep_for_retry(const withdrawal& w, bool erased) {
    if (erased) {
        // The erasure decides; one already written has dropped the subject's records for good.
        if (auto parked = parked_for_erasure_.find(w.subject); parked != parked_for_erasure_.end())
            parked->second.withdrawals.push_back(w);
    }
    else pending_withdrawals_.push_back(w);
}

void consent_store::retry_pending() {
    std::vector<withdrawal> pending;
    pending.swap(pending_withdrawals_);
    // Oldest first, so that of several withdrawals of one consent the newest is written last and
    // is the one the current state points to; the older ones go into the history only.
    std::stable_sort(pending.begin(), pending.end(),
                     [](const withdrawal& a, const withdrawal& b) { return a.at_ms < b.at_ms; });
    struct newest_of_key {
        std::size_t index;
        bool in_flight;  // a change to the consent is being written
    };
    std::vector<std::string> keys;
    keys.reserve(pending.size());
    std::unordered_map<std::string, newest_of_key> newest;
    for (std::size_t i = 0; i < pending.size(); ++i) {
        keys.push_back(consent_key(pending[i].subject, pending[i].purpose));
        newest.insert_or_assign(keys.back(), newest_of_key{i, changes_.count(keys.back()) > 0});
    }
    for (std::size_t i = 0; i < pending.size(); ++i) {
        auto& w = pending[i];
        const auto& of_key = newest.at(keys[i]);
        // A newer change to the same consent is being written: its outcome decides whether these
        // withdrawals still set the current state (it failed) or go into the history only. None
        // may start a change meanwhile, or that change would no longer count as the newest.
        if (of_key.in_flight) {
            pending_withdrawals_.push_back(std::move(w));
            continue;
        }
        if (of_key.index != i) w.superseded = true;
        submit_withdrawal(std::move(w), nullptr);
    }
}

void consent_store::apply_binding(const std::string& client_id, const std::string& subject, bool bound,
                                  std::int64_t at, const std::string& operator_id) {
    const auto key = binding_key(client_id, subject);
    if (bound) {
        if (!binding_details_.emplace(key, device_binding{client_id, subject, at, operator_id}).second) return;
        bound_subjects_[client_id].push_back(subject);
        return;
    }
    if (!binding_details_.erase(key)) return;
    auto& subjects = bound_subjects_[client_id];
    subjects.erase(std::remove(subjects.begin(), subjects.end(), subject), subjects.end());
    if (subjects.empty()) bound_subjects_.erase(client_id);
}

bool consent_store::bind(const std::string& client_id, const std::string& subject, const std::string& operator_id,
                         done_fn done) {
    if (binding_details_.count(binding_key(client_id, subject))) return false;
    change_binding(client_id, subject, operator_id, true, std::move(done));
    return true;
}

bool consent_store::unbind(const std::string& client_id, const std::string& subject, const std::string& operator_id,
                           done_fn done) {
    if (!binding_details_.count(binding_key(client_id, subject))) return false;
    change_binding(client_id, subject, operator_id, false, std::move(done));
    return true;
}

void consent_store::change_binding(const std::string& client_id, const std::string& subject,
                                   const std::string& operator_id, bool bound, done_fn done) {
    const auto key = "b" + binding_key(client_id, subject);
    const std::uint64_t generation = begin_change(key);
    const std::int64_t at = now_ms();
    worker_->submit(
        [=](sqlite_db& db) {
            if (bound) {
                // A second bind of the same pair still being written (an operator's retry) finds it
                // there: it must succeed, as the newest change, so that memory follows the file.
                auto& insert = db.cached("INSERT INTO device_bindings (client_id, subject, bound_at_ms, operator) "
                                         "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (client_id, subject) DO UPDATE SET "
                                         "bound_at_ms = excluded.bound_at_ms, operator = excluded.operator");
                insert.bind(1, client_id).bind(2, subject).bind(3, at).bind(4, operator_id);
                insert.run();
            } else {
                auto& remove = db.cached("DELETE FROM device_bindings WHERE client_id = ?1 AND subject = ?2");
                remove.bind(1, client_id).bind(2, subject);
                remove.run();
            }
            auto& event = db.cached("INSERT INTO binding_events (client_id, subject, bound, at_ms, operator) "
                                    "VALUES (?1, ?2, ?3, ?4, ?5)");
            event.bind(1, client_id).bind(2, subject).bind(3, std::int64_t{bound}).bind(4, at).bind(5, operator_id);
            event.run();
        },
        [this, key, generation, client_id, subject, at, operator_id, bound, done = std::move(done)](const std::string& error) {
            if (finish_change(key, generation) && error.empty()) {
                apply_binding(client_id, subject, bound, at, operator_id);
                notify(bound ? "device_bound" : "device_unbound", subject, "", client_id, operator_id, "");
            }
            if (done) done(error);
        });
}

void consent_store::erase_subject(const std::string& subject, const std::string& operator_id, erase_done_fn done) {
    // Every grant in flight for the subject, whatever its purpose rests on now, is superseded.
    const std::string prefix = consent_key(subject, "");
    std::vector<std::string> in_flight;
    for (const auto& [key, state] : changes_) {
        // Purpose names hold no NUL; a subject may ("a" must not match "a\0x").
        if (key.compare(0, prefix.size(), prefix) == 0 && key.find('\0', prefix.size()) == std::string::npos)
            in_flight.push_back(key);
    }
    std::vector<std::pair<std::string, std::uint64_t>> superseded;
    for (const auto& key : in_flight) {
        superseded.emplace_back(key, begin_change(key));
        erased_keys_[key] = superseded.back().second;  // a withdrawal in flight that fails is dropped
    }
    ++generation_;
    forget_mask(subject);
    held_.erase(subject);
    // A withdrawal waiting to be retried would write the subject back; should the erasure fail,
    // it waits again.
    const auto erased_now = std::stable_partition(pending_withdrawals_.begin(), pending_withdrawals_.end(),
                                                  [&](const withdrawal& w) { return w.subject != subject; });
    auto& parked = parked_for_erasure_[subject];
    ++parked.erasures_in_flight;
    parked.withdrawals.insert(parked.withdrawals.end(), erased_now, pending_withdrawals_.end());
    pending_withdrawals_.erase(erased_now, pending_withdrawals_.end());
    std::vector<std::string> bound_clients;
    for (const auto& [key, b] : binding_details_)
        if (b.subject == subject) bound_clients.push_back(b.client_id);
    for (const auto& client_id : bound_clients) {
        const auto key = "b" + binding_key(client_id, subject);
        superseded.emplace_back(key, begin_change(key));
        apply_binding(client_id, subject, false, 0, operator_id);
    }
    auto counts = std::make_shared<std::pair<std::int64_t, std::int64_t>>(0, 0);
    worker_->submit(
        [subject, counts](sqlite_db& db) {
            auto& current = db.cached("DELETE FROM consent_current WHERE subject = ?1");
            current.bind(1, subject);
            current.run();
            auto& events = db.cached("DELETE FROM consent_events WHERE subject = ?1");
            events.bind(1, subject);
            events.run();
            counts->first = db.changes();
            auto& bindings = db.cached("DELETE FROM device_bindings WHERE subject = ?1");
            bindings.bind(1, subject);
            bindings.run();
            counts->second = db.changes();
            auto& history = db.cached("DELETE FROM binding_events WHERE subject = ?1");
            history.bind(1, subject);
            history.run();
        },
        [this, superseded, subject, operator_id, counts, done = std::move(done)](const std::string& error) {
            for (const auto& [key, generation] : superseded) finish_change(key, generation);
            if (auto parked = parked_for_erasure_.find(subject); parked != parked_for_erasure_.end()) {
                auto& [withdrawals, erasures_in_flight] = parked->second;
                // Written: the subject's consent records are gone, and so is any need to write
                // the withdrawals (GDPR Art. 17). Failed: another erasure of the subject still in
                // flight decides; if none is, the consent records are still there, so are the
                // withdrawals (Art. 7(3)).
                if (error.empty()) withdrawals.clear();
                if (--erasures_in_flight == 0) {
                    pending_withdrawals_.insert(pending_withdrawals_.end(), withdrawals.begin(), withdrawals.end());
                    parked_for_erasure_.erase(parked);
                }
            }
            if (error.empty()) notify("subject_erased", subject, "", "", operator_id, "");
            if (done) done(error, counts->first, counts->second);
        });
}

std::vector<device_binding> consent_store::bindings(std::string_view client_id, std::string_view subject) const {
    std::vector<device_binding> out;
    for (const auto& [key, b] : binding_details_) {
        if (!client_id.empty() && b.client_id != client_id) continue;
        if (!subject.empty() && b.subject != subject) continue;
        out.push_back(b);
    }
    std::sort(out.begin(), out.end(), [](const device_binding& a, const device_binding& b) {
        return a.client_id != b.client_id ? a.client_id < b.client_id : a.subject < b.subject;
    });
    return out;
}

std::size_t consent_store::binding_count() const { return binding_details_.size(); }

std::vector<std::string> consent_store::granted_purposes(std::string_view subject) const {
    std::vector<std::string> out;
    const auto mask = granted_mask(subject);
    for (std::size_t i = 0; i < bit_names_.size(); ++i) {
        if (mask & (std::uint64_t{1} << i)) out.push_back(bit_names_[i]);
    }
    std::sort(out.begin(), out.end());
    return out;
}

void consent_store::history(const std::string& subject,
                            std::function<void(std::vector<consent_event>, const std::string& error)> done) {
    auto rows = std::make_shared<std::vector<consent_event>>();
    worker_->submit(
        [subject, rows](sqlite_db& db) {
            auto& q = db.cached("SELECT seq, subject, purpose, granted, at_ms, operator, evidence FROM consent_events "
                                "WHERE subject = ?1 ORDER BY at_ms, seq");
            q.bind(1, subject);
            while (q.step()) {
                rows->push_back(consent_event{q.integer(0), q.text(1), q.text(2), q.integer(3) != 0, q.integer(4),
                                              q.text(5), q.text(6)});
            }
        },
        [rows, done = std::move(done)](const std::string& error) { done(std::move(*rows), error); });
}

} // namespace gdpr
