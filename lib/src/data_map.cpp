#include "gdpr/data_map.hpp"

#include <algorithm>
#include <chrono>

#include "gdpr/sqlite.hpp"

namespace gdpr {

namespace {

constexpr const char* SCHEMA_SQL = R"sql(
CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS data_map (
  subject_ref TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('publisher', 'recipient', 'retained')),
  holder TEXT NOT NULL, first_seen_ms INTEGER NOT NULL, PRIMARY KEY (subject_ref, role, holder)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS data_map_by_holder ON data_map (role, holder);
)sql";

const char* role_name(int r) {
    static constexpr const char* NAMES[] = {"publisher", "recipient", "retained"};
    return NAMES[r];
}

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::vector<std::string> sorted(const std::unordered_set<std::string>& set) {
    std::vector<std::string> out(set.begin(), set.end());
    std::sort(out.begin(), out.end());
    return out;
}

} // namespace

std::unique_ptr<data_map> data_map::open(const std::string& path, std::string_view synchronous,
                                         subject_ref_fn subject_ref, topic_check_fn storable_topic) {
    std::unique_ptr<data_map> map(new data_map());
    map->subject_ref_ = std::move(subject_ref);
    map->storable_topic_ = std::move(storable_topic);
    auto db = std::make_unique<sqlite_db>(path, synchronous);
    db->exec(SCHEMA_SQL);
    check_schema_version(*db, "data_map", SCHEMA_VERSION, "data map schema");
    {
        sqlite_statement rows(db->handle(), "SELECT subject_ref, role, holder FROM data_map");
        while (rows.step()) {
            const std::string subject = rows.text(0), r = rows.text(1), holder = rows.text(2);
            entry& e = map->by_ref_[subject];
            if (r == "publisher") e.publishers.insert(holder);
            else if (r == "recipient") e.recipients.insert(holder);
            else {
                e.retained.insert(holder);
                map->retained_by_topic_[holder].push_back(subject);
            }
        }
    }
    map->worker_ = std::make_unique<storage_worker>(std::move(db));
    return map;
}

data_map::~data_map() = default;

void data_map::persist(const std::string& subject, role r, std::string holder) {
    ++holders_recorded_;
    if (r == role::retained && storable_topic_ && !storable_topic_(holder)) return;
    const std::int64_t at = wall_ms();
    worker_->submit(
        [subject, r, holder = std::move(holder), at](sqlite_db& db) {
            auto& insert = db.cached("INSERT OR IGNORE INTO data_map (subject_ref, role, holder, first_seen_ms) "
                                     "VALUES (?1, ?2, ?3, ?4)");
            insert.bind(1, subject).bind(2, role_name(static_cast<int>(r))).bind(3, holder).bind(4, at);
            insert.run();
        },
        count_failure());
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

bool data_map::add(const std::string& subject, entry& e, role r, std::string_view holder) {
    auto& set = r == role::publisher ? e.publishers : r == role::recipient ? e.recipients : e.retained;
    // The common case (a known holder) must not allocate: look up by a temporary only when new.
    if (set.find(std::string(holder)) != set.end()) return false;
    set.emplace(holder);
    persist(subject, r, std::string(holder));
    return true;
}

void data_map::drop_retained_holder(const std::string& topic) {
    auto it = retained_by_topic_.find(topic);
    if (it == retained_by_topic_.end()) return;
    for (const auto& ref : it->second) {
        auto s = by_ref_.find(ref);
        if (s != by_ref_.end()) s->second.retained.erase(topic);
    }
    retained_by_topic_.erase(it);
    worker_->submit(
        [topic](sqlite_db& db) {
            auto& remove = db.cached("DELETE FROM data_map WHERE role = 'retained' AND holder = ?1");
            remove.bind(1, topic);
            remove.run();
        },
        count_failure());
}

void data_map::retained_replaced(std::string_view topic) {
    if (retained_by_topic_.empty()) return;
    const std::string key(topic);
    drop_retained_holder(key);
}

void data_map::published(const std::vector<std::string>& subjects, std::string_view client_id, std::string_view topic,
                         bool retain, const void* identity) {
    last_publish_.clear();
    last_identity_ = identity;
    last_topic_.assign(topic.data(), topic.size());
    if (retain) retained_replaced(topic);
    for (const auto& subject : subjects) {
        const auto [ref, e] = entry_of(subject);
        last_publish_.emplace_back(ref, e);
        if (!client_id.empty()) add(*ref, *e, role::publisher, client_id);
        if (retain) {
            if (add(*ref, *e, role::retained, topic)) retained_by_topic_[std::string(topic)].push_back(*ref);
        }
    }
}

std::pair<const std::string*, data_map::entry*> data_map::entry_of(const std::string& subject) {
    auto cached = by_id_.find(subject);
    if (cached != by_id_.end()) return cached->second;
    auto it = by_ref_.try_emplace(ref_of(subject)).first;
    const std::pair<const std::string*, entry*> found(&it->first, &it->second);
    by_id_.emplace(subject, found);
    return found;
}

void data_map::forget_last_publish() {
    last_identity_ = nullptr;
    last_publish_.clear();
}

void data_map::delivered(std::string_view client_id, std::string_view topic, const void* identity) {
    if (client_id.empty()) return;
    if (identity && identity == last_identity_ && topic == last_topic_) {
        for (auto& [subject, e] : last_publish_) add(*subject, *e, role::recipient, client_id);
        return;
    }
    // A retained message sent on subscribe, or a queued one, on a topic known to hold data.
    if (retained_by_topic_.empty()) return;
    auto it = retained_by_topic_.find(std::string(topic));
    if (it == retained_by_topic_.end()) return;
    for (const auto& ref : it->second) {
        auto s = by_ref_.find(ref);
        if (s != by_ref_.end()) add(s->first, s->second, role::recipient, client_id);
    }
}

subject_holdings data_map::holdings(std::string_view subject) const {
    subject_holdings h;
    auto it = by_ref_.find(ref_of(subject));
    if (it == by_ref_.end()) return h;
    h.publishers = sorted(it->second.publishers);
    h.recipients = sorted(it->second.recipients);
    h.retained_topics = sorted(it->second.retained);
    return h;
}

void data_map::forget_subject(const std::string& subject, storage_worker::done_fn done) {
    forget_last_publish();
    const std::string ref = ref_of(subject);
    by_id_.erase(subject);
    auto it = by_ref_.find(ref);
    if (it != by_ref_.end()) {
        for (const auto& topic : it->second.retained) {
            auto t = retained_by_topic_.find(topic);
            if (t == retained_by_topic_.end()) continue;
            auto& list = t->second;
            list.erase(std::remove(list.begin(), list.end(), ref), list.end());
            if (list.empty()) retained_by_topic_.erase(t);
        }
        by_ref_.erase(it);
    }
    worker_->submit(
        [ref](sqlite_db& db) {
            auto& remove = db.cached("DELETE FROM data_map WHERE subject_ref = ?1");
            remove.bind(1, ref);
            remove.run();
        },
        done ? std::move(done) : count_failure());
}

} // namespace gdpr
