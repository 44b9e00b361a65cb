#include "gdpr/data_map.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>

#include "gdpr/pseudonymiser.hpp"
#include "gdpr/sqlite.hpp"

namespace gdpr {

namespace {

constexpr const char* SCHEMA_SQL = R"sql(
CREATE TABLE IF NOT EXISTS data_map (
  subject_ref TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('publisher', 'recipient', 'retained', 'pseudonymous_recipient')),
  holder TEXT NOT NULL, first_seen_ms INTEGER NOT NULL, PRIMARY KEY (subject_ref, role, holder)) WITHOUT ROWID;
)sql";

// Retained topics the plugin cleared that the broker may not have saved as cleared yet (a topic
// that names a subject sealed, as in data_map). Older plugins ignore the table: no new version.
constexpr const char* CLEARS_SQL = R"sql(
CREATE TABLE IF NOT EXISTS data_map_cleared_retained (
  holder TEXT PRIMARY KEY, cleared_at_ms INTEGER NOT NULL) WITHOUT ROWID;
)sql";

// Holders noted between flushes are written together; past this many a flush happens at once.
constexpr std::size_t FLUSH_AT = 4096;

const char* role_name(int r) {
    static constexpr const char* NAMES[] = {"publisher", "recipient", "retained", "pseudonymous_recipient"};
    return NAMES[r];
}

// Version 1 rows are valid version 2 rows. The version is raised all the same, so that a plugin
// that knows only version 1 refuses the file rather than read sealed topics as topic names.
void upgrade_from_version_1(sqlite_db& db) {
    db.exec("UPDATE schema_version SET version = 2 WHERE component = 'data_map'");
}

// Whether the table's role check admits pseudonymous recipients: read from the table's definition,
// not the version number, since a check that refuses them would do so unsaid (INSERT OR IGNORE).
bool admits_pseudonymous_recipients(sqlite_db& db) {
    sqlite_statement q(db.handle(), "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'data_map'");
    return q.step() && q.text(0).find("'pseudonymous_recipient'") != std::string::npos;
}

// Version 2 rows are valid version 3 rows; the table's role check must admit the new role, and
// SQLite changes a check only by building the table again.
void rebuild_to_admit_pseudonymous_recipients(sqlite_db& db) {
    db.exec("ALTER TABLE data_map RENAME TO data_map_version_2");
    db.exec(SCHEMA_SQL);
    db.exec("INSERT INTO data_map SELECT subject_ref, role, holder, first_seen_ms FROM data_map_version_2");
    db.exec("DROP TABLE data_map_version_2");
}

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The forms of a keyed name: an audit key's reference (a pseudonym under the audit key), or "p:"
// and a pseudonym.
bool named_by_pseudonym(std::string_view name) {
    return name.substr(0, 2) == "p:" && pseudonymiser::has_pseudonym_form(name.substr(2));
}

// A holder known under two names (or in two stored forms) keeps the earlier first sighting.
constexpr const char* STORE_EARLIEST_SQL =
    "INSERT INTO data_map (subject_ref, role, holder, first_seen_ms) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (subject_ref, role, holder) DO UPDATE SET first_seen_ms = min(first_seen_ms, excluded.first_seen_ms)";

// Moves every row of subject name `from` to `to`, keeping when each holder was first seen;
// `restore` may change how a retained topic is stored.
void move_rows(sqlite_db& db, const std::string& from, const std::string& to,
               const std::function<void(std::string& topic)>& restore) {
    auto& rows = db.cached("SELECT role, holder, first_seen_ms FROM data_map WHERE subject_ref = ?1");
    auto& insert = db.cached(STORE_EARLIEST_SQL);
    auto& remove = db.cached("DELETE FROM data_map WHERE subject_ref = ?1");
    struct moved {
        std::string role, holder;
        std::int64_t at_ms;
    };
    std::vector<moved> found;
    rows.bind(1, from);
    while (rows.step()) found.push_back(moved{rows.text(0), rows.text(1), rows.integer(2)});
    rows.reset();
    for (auto& m : found) {
        if (m.role == "retained") restore(m.holder);
        insert.bind(1, to).bind(2, m.role).bind(3, m.holder).bind(4, m.at_ms);
        insert.run();
    }
    remove.bind(1, from);
    remove.run();
}

struct clear_topic {
    std::string ref, topic;
    std::int64_t at_ms;
};

// A retained topic stored in clear that names a subject in a level by the rules in use (written
// with no key file, or before a schema named it) is sealed, as one written now would be.
void seal_clear_topics(sqlite_db& db, const std::vector<clear_topic>& found, topic_sealer& sealer) {
    auto& insert = db.cached(STORE_EARLIEST_SQL);
    auto& remove = db.cached("DELETE FROM data_map WHERE subject_ref = ?1 AND role = 'retained' AND holder = ?2");
    for (const auto& f : found) {
        insert.bind(1, f.ref).bind(2, "retained").bind(3, sealer.seal(f.topic)).bind(4, f.at_ms);
        insert.run();
        remove.bind(1, f.ref).bind(2, f.topic);
        remove.run();
    }
}

// The same for the notes of cleared retained topics (data_map::retained_cleared).
void seal_clear_notes(sqlite_db& db, const std::vector<clear_topic>& found, topic_sealer& sealer) {
    auto& insert = db.cached("INSERT OR IGNORE INTO data_map_cleared_retained (holder, cleared_at_ms) VALUES (?1, ?2)");
    auto& remove = db.cached("DELETE FROM data_map_cleared_retained WHERE holder = ?1");
    for (const auto& f : found) {
        insert.bind(1, sealer.seal(f.topic)).bind(2, f.at_ms);
        insert.run();
        remove.bind(1, f.topic);
        remove.run();
    }
}

// The subject names in the data map that are subject ids: written before a key file named subjects.
std::vector<std::string> subject_ids_in(sqlite_db& db) {
    std::vector<std::string> ids;
    sqlite_statement names(db.handle(), "SELECT DISTINCT subject_ref FROM data_map");
    while (names.step()) {
        std::string name = names.text(0);
        if (!is_keyed_subject_name(name)) ids.push_back(std::move(name));
    }
    return ids;
}

// A JSON escape could spell any of the id's characters; payloads rarely hold one.
bool holds_escape(std::string_view payload) { return payload.find('\\') != std::string_view::npos; }

bool holds_bytes_of(std::string_view subject, std::string_view topic, std::string_view payload) {
    return topic.find(subject) != std::string_view::npos || payload.find(subject) != std::string_view::npos;
}

} // namespace

bool is_keyed_subject_name(std::string_view name) { return pseudonymiser::has_pseudonym_form(name) || named_by_pseudonym(name); }

std::unique_ptr<data_map> data_map::open(const std::string& path, std::string_view synchronous,
                                         subject_ref_fn subject_ref, topic_check_fn in_clear,
                                         std::unique_ptr<topic_sealer> sealer, std::unique_ptr<topic_sealer> earlier_sealer) {
    std::unique_ptr<data_map> map(new data_map());
    map->subject_ref_ = std::move(subject_ref);
    map->in_clear_ = std::move(in_clear);
    map->sealer_ = std::move(sealer);
    map->earlier_sealer_ = std::move(earlier_sealer);
    auto db = std::make_unique<sqlite_db>(path, synchronous);
    {
        sqlite_transaction tx(*db);
        db->exec(SCHEMA_SQL);
        db->exec(CLEARS_SQL);
        const int found = check_schema_version(*db, "data_map", SCHEMA_VERSION, "data map schema");
        static_assert(SCHEMA_VERSION == 3, "add the upgrade from the previous version");
        if (found == 1) upgrade_from_version_1(*db);
        if (!admits_pseudonymous_recipients(*db)) rebuild_to_admit_pseudonymous_recipients(*db);
        // Raised in any case, so that a plugin that knows an earlier version refuses the file
        // rather than read the new role's rows as another's.
        if (found < SCHEMA_VERSION)
            db->exec("UPDATE schema_version SET version = " + std::to_string(SCHEMA_VERSION) +
                     " WHERE component = 'data_map'");
        if (map->subject_ref_) map->renamed_from_id_ = map->rename_ids(*db);
        tx.commit();
    }
    std::vector<clear_topic> to_seal;
    {
        sqlite_statement rows(db->handle(), "SELECT subject_ref, role, holder, first_seen_ms FROM data_map");
        std::string topic;
        while (rows.step()) {
            const std::string ref = rows.text(0), r = rows.text(1);
            std::string holder = rows.text(2);
            if (r == "retained" && !topic_sealer::is_sealed(holder) && map->sealer_ &&
                map->storage_of(holder) == topic_storage::sealed)
                to_seal.push_back(clear_topic{ref, holder, rows.integer(3)});
            if (r == "retained") {
                if (!map->open_topic(holder, topic)) {
                    ++map->unreadable_topics_;
                    continue;
                }
                holder.swap(topic);
            }
            if (named_by_pseudonym(ref) && !map->by_ref_.find(ref)) ++map->loaded_by_pseudonym_;
            const std::uint32_t e = map->entry_by_ref(ref, true);
            const holder_id h = map->intern(holder);
            entry& en = map->entries_[e];
            auto& list = r == "publisher"   ? en.publishers
                         : r == "recipient" ? en.recipients
                         : r == "retained"  ? en.retained
                                            : en.pseudonymous_recipients;
            if (!list.insert(h)) continue;
            // Which of the retained message's subjects it shows is not on disk: each counts as shown.
            if (r == "retained") map->retained_by_topic_[holder].push_back(subject_seen{e, true});
        }
    }
    std::vector<clear_topic> notes_to_seal;
    {
        sqlite_statement notes(db->handle(), "SELECT holder, cleared_at_ms FROM data_map_cleared_retained ORDER BY cleared_at_ms");
        std::string topic;
        while (notes.step()) {
            std::string stored = notes.text(0);
            if (!map->open_topic(stored, topic)) {
                ++map->unreadable_clears_;
                continue;
            }
            map->clears_unsaved_.push_back(topic);
            if (!topic_sealer::is_sealed(stored) && map->sealer_ && map->storage_of(topic) == topic_storage::sealed) {
                // Noted in clear (no key file then): sealed now, as a note made now would be.
                notes_to_seal.push_back(clear_topic{"", topic, notes.integer(1)});
                stored = map->sealer_->seal(topic);
            }
            map->clear_notes_read_.push_back(std::move(stored));
        }
    }
    if (!to_seal.empty() || !notes_to_seal.empty()) {
        sqlite_transaction tx(*db);
        seal_clear_topics(*db, to_seal, *map->sealer_);
        seal_clear_notes(*db, notes_to_seal, *map->sealer_);
        tx.commit();
    }
    map->worker_ = std::make_unique<storage_worker>(std::move(db));
    return map;
}

// Rows written before a key file was configured name their subject by id. Once a key names
// subjects, the data map should hold no id (GDPR Art. 25(1), 32(1)(a)): each such subject's rows
// move to the name in use. Ids of a keyed name's form are left: they cannot be told from names
// already keyed (and a naming of another form would be renamed again at every start).
std::size_t data_map::rename_ids(sqlite_db& db) {
    std::size_t renamed = 0;
    for (const auto& id : subject_ids_in(db)) {
        const std::string ref = subject_ref_(id);
        if (!is_keyed_subject_name(ref)) continue;
        move_rows(db, id, ref, [](std::string&) {});
        ++renamed;
    }
    return renamed;
}

data_map::~data_map() {
    try {
        flush();  // the worker writes it before it stops
    } catch (...) {
    }
}

data_map::holder_id data_map::intern(std::string_view holder) {
    if (const holder_id* found = holder_ids_.find(holder)) return *found;
    const auto id = static_cast<holder_id>(holder_names_.size());
    holder_names_.emplace_back(holder);
    holder_ids_[holder] = id;
    return id;
}

std::uint32_t data_map::entry_by_ref(std::string_view ref, bool create) {
    if (const std::uint32_t* found = by_ref_.find(ref)) return *found;
    if (!create) return UINT32_MAX;
    std::uint32_t index;
    if (!free_entries_.empty()) {
        index = free_entries_.back();
        free_entries_.pop_back();
    } else {
        index = static_cast<std::uint32_t>(entries_.size());
        entries_.emplace_back();
        refs_.emplace_back();
    }
    refs_[index].assign(ref.data(), ref.size());
    by_ref_[ref] = index;
    return index;
}

std::uint32_t data_map::entry_of(std::string_view subject) {
    if (!subject_ref_) return entry_by_ref(subject, true);  // the id is the reference
    if (const std::uint32_t* cached = by_id_.find(subject)) return *cached;
    const auto named = std::find_if(named_for_publish_.begin(), named_for_publish_.end(),
                                    [&](const auto& pair) { return pair.first == subject; });
    const std::string ref = named != named_for_publish_.end() ? named->second : ref_of(subject);
    for (const auto& earlier : earlier_refs_) fold(earlier(subject), ref);
    const std::uint32_t index = entry_by_ref(ref, true);
    by_id_[subject] = index;
    return index;
}

void data_map::fold(const std::string& earlier_name, const std::string& ref) {
    const std::uint32_t* found = by_ref_.find(earlier_name);
    if (!found || earlier_name == ref) return;
    const std::uint32_t old_index = *found;
    if (const std::uint32_t* current = by_ref_.find(ref)) {
        const std::uint32_t index = *current;
        entry& into = entries_[index];
        const entry& from = entries_[old_index];
        from.publishers.for_each([&](holder_id h) { into.publishers.insert(h); });
        from.recipients.for_each([&](holder_id h) { into.recipients.insert(h); });
        from.pseudonymous_recipients.for_each([&](holder_id h) { into.pseudonymous_recipients.insert(h); });
        from.retained.for_each([&](holder_id t) {
            if (into.retained.insert(t)) retained_by_topic_[holder_names_[t]].push_back(subject_seen{index, true});
        });
        release(old_index);
    } else {
        by_ref_.erase(earlier_name);
        refs_[old_index] = ref;
        by_ref_[ref] = old_index;
    }
    for (auto& row : unwritten_)
        if (row.ref == earlier_name) row.ref = ref;
    // Topics sealed under the earlier key are sealed anew, so that the earlier key can go.
    worker_->submit(
        [earlier_name, ref, sealer = sealer_.get(), earlier = earlier_sealer_.get()](sqlite_db& db) {
            std::string topic;
            move_rows(db, earlier_name, ref, [&](std::string& stored) {
                if (sealer && earlier && topic_sealer::is_sealed(stored) && earlier->open(stored, topic))
                    stored = sealer->seal(topic);
            });
        },
        count_failure());
}

holder_set& data_map::list_of(entry& e, role r) {
    switch (r) {
    case role::publisher: return e.publishers;
    case role::recipient: return e.recipients;
    case role::retained: return e.retained;
    default: return e.pseudonymous_recipients;
    }
}

bool data_map::add(std::uint32_t entry_index, role r, holder_id holder) {
    if (!list_of(entries_[entry_index], r).insert(holder)) return false;
    ++holders_recorded_;
    const topic_storage stored = storage_of(r, holder);
    if (stored == topic_storage::none) return true;
    unwritten_.push_back(row{refs_[entry_index], r, holder, wall_ms(), stored == topic_storage::sealed});
    if (unwritten_.size() >= FLUSH_AT) flush();
    return true;
}

void data_map::flush() {
    const bool retry_due = std::chrono::steady_clock::now() >= retry_forgetting_at_;
    if (!unnoted_.empty() && retry_due) {
        std::vector<clear_note> due;
        due.swap(unnoted_);
        for (std::size_t i = 0; i < due.size(); ++i) {
            try {
                // A retained message set on the topic since keeps its holders' rows.
                submit_clear(due[i], due[i].held ? retained_holders_now(due[i].topic) : std::vector<holder_row>{});
            } catch (...) {
                unnoted_.insert(unnoted_.end(), std::make_move_iterator(due.begin() + static_cast<std::ptrdiff_t>(i)),
                                std::make_move_iterator(due.end()));
                throw;
            }
        }
    }
    if (!unforgotten_.empty() && retry_due) {
        std::vector<forgetting> due;
        due.swap(unforgotten_);
        for (std::size_t i = 0; i < due.size(); ++i) {
            try {
                // The holders noted since go in the same transaction as the delete.
                submit_forgetting(due[i], nullptr, holders_now_under(due[i]));
            } catch (...) {
                unforgotten_.insert(unforgotten_.end(), std::make_move_iterator(due.begin() + static_cast<std::ptrdiff_t>(i)),
                                    std::make_move_iterator(due.end()));
                throw;
            }
        }
    }
    if (unwritten_.empty()) return;
    std::vector<holder_row> rows;
    rows.reserve(unwritten_.size());
    for (auto& u : unwritten_)
        rows.push_back(holder_row{std::move(u.ref), holder_names_[u.holder], u.r, u.at_ms, u.sealed});
    unwritten_.clear();
    worker_->submit([rows = std::move(rows), sealer = sealer_.get()](sqlite_db& db) { write_rows(db, rows, sealer); },
                    count_failure());
}

void data_map::write_rows(sqlite_db& db, const std::vector<holder_row>& rows, topic_sealer* sealer) {
    auto& insert = db.cached("INSERT OR IGNORE INTO data_map (subject_ref, role, holder, first_seen_ms) VALUES (?1, ?2, ?3, ?4)");
    for (const auto& w : rows) {
        insert.bind(1, w.ref).bind(2, role_name(static_cast<int>(w.r))).bind(4, w.at_ms);
        if (w.sealed) insert.bind(3, sealer->seal(w.holder));
        else insert.bind(3, w.holder);
        insert.run();
    }
}

storage_worker::done_fn data_map::count_failure() {
    return [this](const std::string& error) {
        if (error.empty()) return;
        ++write_failures_;
        last_write_error_ = error;
    };
}

std::pair<std::uint64_t, std::string> data_map::take_write_failures() {
    std::pair<std::uint64_t, std::string> out(write_failures_, last_write_error_);
    write_failures_ = 0;
    return out;
}

bool data_map::drop_retained_in_memory(const std::string& topic) {
    auto it = retained_by_topic_.find(topic);
    if (it == retained_by_topic_.end()) return false;
    if (const holder_id* h = holder_ids_.find(topic)) {
        for (const subject_seen& s : it->second) entries_[s.entry].retained.erase(*h);
    }
    retained_by_topic_.erase(it);
    flush();  // an insert still waiting must not land after the delete
    return true;
}

void data_map::delete_retained_rows(sqlite_db& db, const std::string& topic, topic_sealer* sealer, topic_sealer* earlier) {
    // Both stored forms: a topic written in clear in one run may be sealed in the next (a key
    // file added, a schema changed), and the other way round.
    auto& remove = db.cached("DELETE FROM data_map WHERE role = 'retained' AND holder IN (?1, ?2, ?3)");
    remove.bind(1, topic);
    // The same topic always seals the same way under one key.
    remove.bind(2, sealer ? sealer->seal(topic) : topic);
    remove.bind(3, earlier ? earlier->seal(topic) : topic);
    remove.run();
}

void data_map::drop_retained_holder(const std::string& topic) {
    if (!drop_retained_in_memory(topic)) return;
    worker_->submit([topic, sealer = sealer_.get(), earlier = earlier_sealer_.get()](
                        sqlite_db& db) { delete_retained_rows(db, topic, sealer, earlier); },
                    count_failure());
}

bool data_map::open_topic(const std::string& stored, std::string& topic) const {
    if (!topic_sealer::is_sealed(stored)) {
        topic = stored;
        return true;
    }
    return (sealer_ && sealer_->open(stored, topic)) || (earlier_sealer_ && earlier_sealer_->open(stored, topic));
}

void data_map::retained_cleared(std::string_view topic) {
    clear_note n;
    n.topic = std::string(topic);
    n.held = drop_retained_in_memory(n.topic);
    const topic_storage stored = storage_of(n.topic);
    // A topic kept in memory only: nothing on disk may name it.
    n.noted = stored != topic_storage::none;
    n.sealed = stored == topic_storage::sealed;
    n.at_ms = wall_ms();
    if (!n.held && !n.noted) return;
    if (n.noted) clear_notes_made_.emplace_back(n.topic, n.sealed);
    submit_clear(n, {});
}

void data_map::submit_clear(const clear_note& n, std::vector<holder_row> rewrite) {
    // One job: the topic's rows are never gone from disk while its note is missing. Should it
    // fail, it is tried again with the forgettings (before them: the note goes first).
    worker_->submit(
        [n, rewrite = std::move(rewrite), sealer = sealer_.get(), earlier = earlier_sealer_.get()](sqlite_db& db) {
            if (n.noted) {
                auto& note = db.cached("INSERT OR IGNORE INTO data_map_cleared_retained (holder, cleared_at_ms) VALUES (?1, ?2)");
                note.bind(1, n.sealed ? sealer->seal(n.topic) : n.topic).bind(2, n.at_ms);
                note.run();
            }
            if (n.held) delete_retained_rows(db, n.topic, sealer, earlier);
            write_rows(db, rewrite, sealer);
        },
        [this, n](const std::string& error) {
            if (error.empty()) return;
            ++forget_failures_;  // part of an erasure's forgetting
            last_forget_error_ = error;
            if (unforgotten_.empty() && unnoted_.empty())
                retry_forgetting_at_ = std::chrono::steady_clock::now() + forget_retry_delay_;
            unnoted_.push_back(n);
        });
}

std::vector<data_map::holder_row> data_map::retained_holders_now(const std::string& topic) {
    std::vector<holder_row> rows;
    const auto it = retained_by_topic_.find(topic);
    const topic_storage stored = storage_of(topic);
    if (it == retained_by_topic_.end() || stored == topic_storage::none) return rows;
    for (const subject_seen& s : it->second)
        rows.push_back(holder_row{refs_[s.entry], topic, role::retained, wall_ms(), stored == topic_storage::sealed});
    return rows;
}

void data_map::clears_saved() {
    // A note still to be tried again is saved now too: only the rows it deletes are left to do.
    for (auto& n : unnoted_) n.noted = false;
    unnoted_.erase(std::remove_if(unnoted_.begin(), unnoted_.end(), [](const clear_note& n) { return !n.held; }),
                   unnoted_.end());
    if (clear_notes_read_.empty() && clear_notes_made_.empty()) return;
    clears_unsaved_.clear();
    std::vector<std::string> read;
    read.swap(clear_notes_read_);
    std::vector<std::pair<std::string, bool>> made;
    made.swap(clear_notes_made_);
    worker_->submit(
        [read = std::move(read), made = std::move(made), sealer = sealer_.get()](sqlite_db& db) {
            auto& remove = db.cached("DELETE FROM data_map_cleared_retained WHERE holder = ?1");
            for (const auto& stored : read) {
                remove.bind(1, stored);
                remove.run();
            }
            // The same topic always seals the same way under one key.
            for (const auto& [topic, sealed] : made) {
                remove.bind(1, sealed ? sealer->seal(topic) : topic);
                remove.run();
            }
        },
        count_failure());
}

data_map::topic_storage data_map::storage_of(role r, holder_id holder) const {
    return r == role::retained ? storage_of(holder_names_[holder]) : topic_storage::clear;
}

data_map::topic_storage data_map::storage_of(std::string_view topic) const {
    if (!in_clear_ || in_clear_(topic)) return topic_storage::clear;
    return sealer_ ? topic_storage::sealed : topic_storage::none;
}

void data_map::retained_replaced(std::string_view topic) {
    if (retained_by_topic_.empty()) return;
    const std::string key(topic);
    drop_retained_holder(key);
}

void data_map::published(const std::vector<std::string>& subjects, std::string_view client_id, std::string_view topic,
                         bool retain, const void* identity, bool replaces, const forwarded_message* seen) {
    last_publish_.clear();
    last_identity_ = identity;
    last_topic_.assign(topic.data(), topic.size());
    if (retain && replaces) retained_replaced(topic);
    if (subjects.empty()) return;
    const holder_id publisher = client_id.empty() ? 0 : intern(client_id);
    // A message the broker may place where a freed retained message of this topic was, with the
    // same payload: its text properties, which a delivery does not show, may name the subject.
    if (seen && seen->unread_text && !retained_by_topic_.empty())
        if (auto it = retained_by_topic_.find(std::string(topic)); it != retained_by_topic_.end())
            for (subject_seen& held : it->second) held.id_shown = true;
    const bool may_hide = names_by_pseudonym_ && seen && !seen->unread_text && !holds_escape(seen->payload);
    const std::size_t digest = retain && may_hide ? std::hash<std::string_view>{}(seen->payload) : 0;
    for (const auto& subject : subjects) {
        const std::uint32_t e = entry_of(subject);
        const subject_seen s{e, !may_hide || holds_bytes_of(subject, topic, seen->payload), identity, digest};
        last_publish_.push_back(s);
        if (!client_id.empty()) add(e, role::publisher, publisher);
        if (!retain) continue;
        if (add(e, role::retained, intern(topic))) {
            retained_by_topic_[std::string(topic)].push_back(s);
        } else if (auto it = retained_by_topic_.find(std::string(topic)); it != retained_by_topic_.end()) {
            // Kept beside the message the topic held (not replacing it): a delivery of either
            // names the subject by this one's rules only if it is this one.
            for (subject_seen& held : it->second)
                if (held.entry == e) held = s;
        }
    }
}

std::uint32_t data_map::unknown_among(const std::vector<std::string>& subjects) const {
    std::uint32_t unknown = 0;
    named_for_publish_.clear();
    for (const auto& subject : subjects) {
        const std::uint32_t* index = subject_ref_ ? by_id_.find(subject) : by_ref_.find(subject);
        if (!index && subject_ref_) {
            named_for_publish_.emplace_back(subject, ref_of(subject));
            index = by_ref_.find(named_for_publish_.back().second);
        }
        for (std::size_t i = 0; !index && i < earlier_refs_.size(); ++i) index = by_ref_.find(earlier_refs_[i](subject));
        if (!index) {
            ++unknown;
            continue;
        }
        prefetch_object(entries_[*index]);
    }
    return unknown;
}

void data_map::forget_last_publish() {
    last_identity_ = nullptr;
    last_publish_.clear();
}

void data_map::delivered(std::string_view client_id, std::string_view topic, const void* identity,
                         std::string_view payload) {
    if (client_id.empty()) return;
    if (identity && identity == last_identity_ && topic == last_topic_) {
        if (last_publish_.empty()) return;
        const holder_id reader = intern(client_id);
        for (const subject_seen& s : last_publish_) add_recipient(s, reader);
        return;
    }
    // A retained message sent on subscribe, or a queued one, on a topic known to hold data.
    if (retained_by_topic_.empty()) return;
    auto it = retained_by_topic_.find(std::string(topic));
    if (it == retained_by_topic_.end()) return;
    const holder_id reader = intern(client_id);
    std::optional<std::size_t> digest;
    for (const subject_seen& s : it->second) {
        // Only the retained message itself is known to hide the id: another delivery on its topic
        // (a QoS 2 message released later, one from an offline queue, one the broker placed where
        // a freed retained message was) may show it.
        const bool the_retained_message = !s.id_shown && identity && identity == s.identity &&
                                          (digest ? *digest : *(digest = std::hash<std::string_view>{}(payload))) == s.digest;
        if (the_retained_message) add_recipient(s, reader);
        else add(s.entry, role::recipient, reader);
    }
}

void data_map::add_recipient(const subject_seen& s, holder_id reader) {
    if (s.id_shown) {
        add(s.entry, role::recipient, reader);
        return;
    }
    // One that has received the id keeps it: it stays a recipient of the id.
    if (!entries_[s.entry].recipients.contains(reader)) add(s.entry, role::pseudonymous_recipient, reader);
}

std::vector<std::string> data_map::names(const holder_set& ids) const {
    std::vector<std::string> out;
    out.reserve(ids.size());
    ids.for_each([&](holder_id h) { out.push_back(holder_names_[h]); });
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<std::string> data_map::names_of(std::string_view subject) const {
    std::vector<std::string> out{ref_of(subject)};
    for (const auto& earlier : earlier_refs_) {
        std::string name = earlier(subject);
        if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
    }
    return out;
}

bool data_map::knows_id(std::string_view subject, std::string_view client_id) const {
    const holder_id* h = holder_ids_.find(client_id);
    if (!h) return false;
    for (const auto& name : names_of(subject)) {
        const std::uint32_t* found = by_ref_.find(name);
        if (found && (entries_[*found].publishers.contains(*h) || entries_[*found].recipients.contains(*h))) return true;
    }
    return false;
}

subject_holdings data_map::holdings(std::string_view subject) const {
    subject_holdings h;
    auto merge = [this](std::vector<std::string>& into, const holder_set& ids) {
        std::vector<std::string> more = names(ids);
        into.insert(into.end(), more.begin(), more.end());
        std::sort(into.begin(), into.end());
        into.erase(std::unique(into.begin(), into.end()), into.end());
    };
    for (const auto& name : names_of(subject)) {
        const std::uint32_t* found = by_ref_.find(name);
        if (!found) continue;
        const entry& e = entries_[*found];
        merge(h.publishers, e.publishers);
        merge(h.recipients, e.recipients);
        merge(h.retained_topics, e.retained);
        merge(h.pseudonymous_recipients, e.pseudonymous_recipients);
    }
    // One that published the data, or received the id under any of the subject's names, knows it.
    std::vector<std::string> knows_id;
    std::set_union(h.publishers.begin(), h.publishers.end(), h.recipients.begin(), h.recipients.end(),
                   std::back_inserter(knows_id));
    std::vector<std::string> recipients;
    std::set_union(h.recipients.begin(), h.recipients.end(), h.pseudonymous_recipients.begin(),
                   h.pseudonymous_recipients.end(), std::back_inserter(recipients));
    h.recipients = std::move(recipients);
    std::vector<std::string> pseudonymous;
    std::set_difference(h.pseudonymous_recipients.begin(), h.pseudonymous_recipients.end(), knows_id.begin(),
                        knows_id.end(), std::back_inserter(pseudonymous));
    h.pseudonymous_recipients = std::move(pseudonymous);
    return h;
}

void data_map::release(std::uint32_t index) {
    entry& e = entries_[index];
    e.retained.for_each([&](holder_id t) {
        auto it = retained_by_topic_.find(holder_names_[t]);
        if (it == retained_by_topic_.end()) return;
        auto& list = it->second;
        list.erase(std::remove_if(list.begin(), list.end(), [&](const subject_seen& s) { return s.entry == index; }),
                   list.end());
        if (list.empty()) retained_by_topic_.erase(it);
    });
    by_ref_.erase(refs_[index]);
    e = entry{};
    refs_[index].clear();
    free_entries_.push_back(index);
}

void data_map::forget_subject(const std::string& subject, storage_worker::done_fn done, storage_worker::work_fn together) {
    forget_last_publish();
    std::vector<std::string> refs = names_of(subject);
    by_id_.erase(subject);
    for (const auto& ref : refs)
        if (const std::uint32_t* found = by_ref_.find(ref)) release(*found);
    flush();  // holders still waiting to be written go first, then the delete removes them
    submit_forgetting(forgetting{std::move(refs), std::move(together)}, std::move(done));
}

void data_map::submit_forgetting(const forgetting& f, storage_worker::done_fn done, std::vector<holder_row> rewrite) {
    worker_->submit(
        [refs = f.refs, together = f.together, rewrite = std::move(rewrite), sealer = sealer_.get()](sqlite_db& db) {
            // The register's rows first: a failure there must leave the holders on disk too.
            if (together) together(db);
            // The erasure cleared the subject's retained topics: any still on disk (its note's own
            // job failed) are noted here, in the transaction that deletes them.
            auto& note = db.cached("INSERT OR IGNORE INTO data_map_cleared_retained (holder, cleared_at_ms) "
                                   "SELECT holder, ?2 FROM data_map WHERE subject_ref = ?1 AND role = 'retained'");
            auto& remove = db.cached("DELETE FROM data_map WHERE subject_ref = ?1");
            const std::int64_t now_ms = wall_ms();
            for (const auto& ref : refs) {
                note.bind(1, ref).bind(2, now_ms);
                note.run();
                remove.bind(1, ref);
                remove.run();
            }
            write_rows(db, rewrite, sealer);
        },
        [this, f, done = std::move(done)](const std::string& error) {
            if (done) done(error);
            if (error.empty()) return;
            ++forget_failures_;
            last_forget_error_ = error;
            if (unforgotten_.empty()) retry_forgetting_at_ = std::chrono::steady_clock::now() + forget_retry_delay_;
            unforgotten_.push_back(f);
        });
}

std::vector<data_map::holder_row> data_map::holders_now_under(const forgetting& f) {
    std::vector<holder_row> rows;
    for (const auto& ref : f.refs) {
        const std::uint32_t* found = by_ref_.find(ref);
        if (!found) continue;
        entry& e = entries_[*found];
        for (const role r : {role::publisher, role::recipient, role::retained, role::pseudonymous_recipient}) {
            list_of(e, r).for_each([&](holder_id h) {
                const topic_storage stored = storage_of(r, h);
                if (stored != topic_storage::none)
                    rows.push_back(holder_row{ref, holder_names_[h], r, wall_ms(), stored == topic_storage::sealed});
            });
        }
    }
    return rows;
}

std::pair<std::uint64_t, std::string> data_map::take_forget_failures() {
    std::pair<std::uint64_t, std::string> out(forget_failures_, last_forget_error_);
    forget_failures_ = 0;
    return out;
}

} // namespace gdpr
