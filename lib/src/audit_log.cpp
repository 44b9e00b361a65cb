#include "gdpr/audit_log.hpp"

#include <algorithm>
#include <limits>

#include <sqlite3.h>

#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

namespace gdpr {

namespace {

constexpr std::int64_t DAY_MS = 86'400'000;
constexpr std::size_t KEY_CACHE_LIMIT = 262144;  // 8 MiB of keys, plus the map's own overhead
constexpr std::size_t CHUNK = 10000;             // records per transaction
constexpr std::chrono::milliseconds CHECKPOINT_PERIOD{500};
constexpr std::size_t SWEEP_CHUNK = 5000;  // rows per sweep step

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

chain_hash hash_of(const std::string& blob) {
    chain_hash h{};
    if (blob.size() == h.size()) std::copy(blob.begin(), blob.end(), h.begin());
    return h;
}

void append_be32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (24 - 8 * i)));
}

} // namespace

void create_audit_tables(sqlite_db& db) {
    db.exec(
        "CREATE TABLE IF NOT EXISTS audit_records("
        " seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, kind TEXT NOT NULL, expires_ms INTEGER NOT NULL,"
        " session INTEGER, client_id TEXT, schema TEXT, detail TEXT, payload BLOB, sealed BLOB,"
        " digest BLOB, hash BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS audit_records_expiry ON audit_records(expires_ms) WHERE digest IS NULL;"
        "CREATE TABLE IF NOT EXISTS audit_anchor("
        " id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL, at_ms INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS audit_subject_keys("
        " ref TEXT PRIMARY KEY, wrapped BLOB NOT NULL, created_ms INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS audit_meta(key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;");
}

audit_log::audit_log(const audit_options& options, std::shared_ptr<const audit_keys> keys)
    : options_(options), keys_(std::move(keys)) {}

std::unique_ptr<audit_log> audit_log::open(const audit_options& options, std::shared_ptr<const audit_keys> keys) {
    std::unique_ptr<audit_log> log(new audit_log(options, std::move(keys)));
    auto& db = *(log->db_ = std::make_unique<sqlite_db>(options.path, options.synchronous));
    // Deleted keys and tombstoned content must not linger in free pages (crypto-shredding).
    db.exec("PRAGMA secure_delete=ON");
    db.exec("PRAGMA cache_size=-16384");  // 16 MiB: a chunk of records fits without spilling
    // Copying the log back into the database is left to a checkpointer thread of its own, so
    // the writer spends its time on records.
    db.exec("PRAGMA wal_autocheckpoint=0");
    {
        sqlite_transaction tx(db);
        create_audit_tables(db);
        auto& version = db.cached("SELECT value FROM audit_meta WHERE key = 'schema_version'");
        if (version.step()) {
            const auto v = version.integer(0);
            version.reset();
            if (v != SCHEMA_VERSION)
                throw storage_error("database '" + options.path + "' has audit trail version " + std::to_string(v) +
                                    "; this plugin reads version " + std::to_string(SCHEMA_VERSION));
        } else {
            version.reset();
            db.cached("INSERT INTO audit_meta(key, value) VALUES ('schema_version', ?)").bind(1, std::int64_t{SCHEMA_VERSION}).run();
        }
        // A fresh nonce epoch per start: nonces are epoch || counter, so no nonce repeats under a
        // data key across restarts, without drawing random nonces per record.
        auto& epoch = db.cached("SELECT value FROM audit_meta WHERE key = 'nonce_epoch'");
        std::int64_t e = epoch.step() ? epoch.integer(0) + 1 : 1;
        epoch.reset();
        if (e > std::numeric_limits<std::uint32_t>::max()) throw storage_error("audit nonce epochs exhausted");
        db.cached("INSERT INTO audit_meta(key, value) VALUES ('nonce_epoch', ?) "
                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(1, e)
            .run();
        log->nonce_epoch_ = static_cast<std::uint32_t>(e);

        // The trail can only be read with the master key it was written with: a different key
        // file would seal new records under keys that no longer open the old ones.
        const std::string check = log->keys_->key_check();
        auto& stored_check = db.cached("SELECT value FROM audit_meta WHERE key = 'key_check'");
        if (stored_check.step()) {
            const bool same = stored_check.text(0) == check;
            stored_check.reset();
            if (!same)
                throw storage_error("database '" + options.path +
                                    "' was written with a different audit key file; use the original key file");
        } else {
            stored_check.reset();
            db.cached("INSERT INTO audit_meta(key, value) VALUES ('key_check', ?)").bind(1, check).run();
        }

        auto& anchor = db.cached("SELECT seq, hash FROM audit_anchor WHERE id = 1");
        if (anchor.step()) {
            log->anchor_seq_ = anchor.integer(0);
            log->anchor_hash_ = anchor.blob(1);
            log->next_seq_ = log->anchor_seq_ + 1;
            log->head_ = hash_of(log->anchor_hash_);
        }
        anchor.reset();
        auto& last = db.cached("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1");
        if (last.step()) {
            log->next_seq_ = last.integer(0) + 1;
            log->head_ = hash_of(last.blob(1));
        }
        last.reset();
        // Records cut off the end of the trail would otherwise go unnoticed: the last committed
        // seq is kept beside the chain and restated in writer_started.
        auto& committed = db.cached("SELECT value FROM audit_meta WHERE key = 'last_seq'");
        if (committed.step() && committed.integer(0) >= log->next_seq_) {
            // Numbering goes on after the lost records, so verify keeps reporting the hole.
            const std::int64_t lost_to = committed.integer(0);
            log->problems_.push_back("the audit trail ends at seq " + std::to_string(log->next_seq_ - 1) + " but seq " +
                                     std::to_string(lost_to) + " was committed: records " +
                                     std::to_string(log->next_seq_) + ".." + std::to_string(lost_to) +
                                     " were removed from its end (run gdprctl verify)");
            log->next_seq_ = lost_to + 1;
        }
        committed.reset();
        tx.commit();
    }
    log->next_sweep_ = std::chrono::steady_clock::now() + options.sweep_period;
    audit_record started;
    started.at_ms = wall_ms();
    started.kind = audit_kind::writer_started;
    nlohmann::json started_detail{{"nonce_epoch", log->nonce_epoch_},
                                  {"previous_seq", log->next_seq_ - 1},
                                  {"previous_hash", to_hex(log->head_)}};
    if (log->anchor_seq_ > 0) {
        started_detail["anchor_seq"] = log->anchor_seq_;
        started_detail["anchor_hash"] = to_hex(log->anchor_hash_);
    }
    started.detail = started_detail.dump();
    log->append(std::move(started));
    log->start();
    return log;
}

void audit_log::start() {
    checkpoint_db_ = std::make_unique<sqlite_db>(options_.path, options_.synchronous);
    thread_ = std::thread([this] { run(); });
    checkpointer_ = std::thread([this] { run_checkpoints(); });
}

void audit_log::run_checkpoints() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
        checkpoint_wake_.wait_for(lock, CHECKPOINT_PERIOD, [&] { return stopping_; });
        if (stopping_) break;
        lock.unlock();
        // PASSIVE: copies what it can without waiting for the writer or readers; the writer
        // starts the log over once everything in it has been copied.
        const int rc = sqlite3_wal_checkpoint_v2(checkpoint_db_->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
        lock.lock();
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && problems_.size() < 100)
            problems_.push_back(std::string("checkpoint of the audit database failed: ") + sqlite3_errstr(rc));
    }
}

audit_log::~audit_log() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_writer_.notify_all();
    space_.notify_all();
    checkpoint_wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (checkpointer_.joinable()) checkpointer_.join();
    checkpoint_db_.reset();
}

void audit_log::push_locked(item it) {
    queue_.push_back(std::move(it));
    ++pushed_;
    ++stats_.appended;
    if (queue_.size() == wake_threshold()) wake_writer_.notify_one();  // a batch is ready: no need to wait
}

std::int64_t audit_log::append(audit_record record) {
    std::unique_lock<std::mutex> lock(mutex_);
    const bool own_thread = std::this_thread::get_id() == writer_id_;
    if (!own_thread && queue_.size() >= options_.queue_limit) {
        if (options_.overflow == overflow_policy::drop) {
            ++dropped_unmarked_;
            ++stats_.dropped;
            if (stats_.dropped == 1 || stats_.dropped % 100000 == 0)
                problems_.push_back("audit queue full (" + std::to_string(options_.queue_limit) +
                                    " records): dropping records under the drop overflow policy; " +
                                    std::to_string(stats_.dropped) + " dropped so far");
            return 0;
        }
        wake_writer_.notify_one();
        space_.wait(lock, [&] { return queue_.size() < options_.queue_limit || failing_ || stopping_; });
    }
    mark_gap_locked();
    item it;
    it.seq = next_seq_++;
    it.record = std::move(record);
    const auto seq = it.seq;
    push_locked(std::move(it));
    return seq;
}

void audit_log::mark_gap_locked() {
    if (dropped_unmarked_ == 0) return;
    item gap;
    gap.seq = next_seq_++;
    gap.record.at_ms = wall_ms();
    gap.record.kind = audit_kind::gap;
    gap.record.detail = nlohmann::json{{"dropped", dropped_unmarked_}, {"reason", "queue full (overflow drop)"}}.dump();
    dropped_unmarked_ = 0;
    push_locked(std::move(gap));
}

bool audit_log::can_record_publish() const {
    if (options_.overflow == overflow_policy::drop || !failing_.load(std::memory_order_relaxed)) return true;
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size() < options_.queue_limit;
}

void audit_log::shred_subject(const std::string& subject) {
    std::lock_guard<std::mutex> lock(mutex_);
    item it;
    it.what = item::op::shred;
    it.seq = next_seq_++;  // the key_shredded record keeps its place in the chain
    it.subject = subject;
    push_locked(std::move(it));
    wake_writer_.notify_one();
}

void audit_log::sweep(std::int64_t now_ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    item it;
    it.what = item::op::sweep;
    it.now_ms = now_ms;
    push_locked(std::move(it));
    wake_writer_.notify_one();
}

bool audit_log::flush() {
    // Waits for follow-up work too (a sweep's next steps, its retention record).
    std::unique_lock<std::mutex> lock(mutex_);
    flush_requested_ = true;
    wake_writer_.notify_one();
    progress_.wait(lock, [&] {
        if (done_ < pushed_ && !queue_.empty()) {
            flush_requested_ = true;
            wake_writer_.notify_one();
        }
        return done_ >= pushed_ || failing_ || !thread_.joinable();
    });
    return done_ >= pushed_;
}

audit_stats audit_log::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    audit_stats s = stats_;
    s.queued = queue_.size();
    s.failing = failing_;
    return s;
}

std::vector<std::string> audit_log::take_problems() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    out.swap(problems_);
    return out;
}

void audit_log::problem(std::string text) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (problems_.size() < 100) problems_.push_back(std::move(text));
}

void audit_log::run() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        writer_id_ = std::this_thread::get_id();
    }
    std::vector<item> batch;
    auto backoff = std::chrono::milliseconds(250);
    for (;;) {
        bool stopping = false;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            const auto wait_for = failing_ ? backoff : options_.flush_period;
            wake_writer_.wait_for(lock, wait_for, [&] {
                return stopping_ || flush_requested_ || queue_.size() >= wake_threshold();
            });
            flush_requested_ = false;
            stopping = stopping_;
            mark_gap_locked();  // the hole is declared in the chain right where it happened
            // A failed batch is retried alone: while the trail cannot be written the queue fills
            // up, and the broker refuses publishes instead of holding ever more in memory.
            if (batch.empty()) batch.swap(queue_);
        }
        space_.notify_all();
        if (!batch.empty()) {
            std::size_t committed = 0;
            try {
                write_batch(batch, committed);
                const auto n = batch.size();
                batch.clear();
                backoff = std::chrono::milliseconds(250);
                std::lock_guard<std::mutex> lock(mutex_);
                done_ += n;
                ++stats_.batches;
                if (failing_) problems_.push_back("audit trail writable again; every queued record was written");
                failing_ = false;
            } catch (const std::exception& e) {
                forget_keys();  // keys created in the failed transaction do not exist
                batch.erase(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(committed));
                std::lock_guard<std::mutex> lock(mutex_);
                done_ += committed;
                ++stats_.failed_batches;
                stats_.last_error = e.what();
                if (!failing_) problems_.push_back(std::string("cannot write the audit trail, records are kept in memory and retried: ") + e.what());
                failing_ = true;
                backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
            }
            progress_.notify_all();
            space_.notify_all();
        }
        if (std::chrono::steady_clock::now() >= next_sweep_ && !failing_) {
            next_sweep_ = std::chrono::steady_clock::now() + options_.sweep_period;
            sweep(wall_ms());
        }
        if (stopping) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (queue_.empty() && (batch.empty() || stats_.failed_batches > 0)) {
                if (!batch.empty())
                    problems_.push_back("stopped with " + std::to_string(batch.size()) + " audit records unwritten: " + stats_.last_error);
                break;
            }
        }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    progress_.notify_all();
}

void audit_log::write_batch(std::vector<item>& batch, std::size_t& committed) {
    // Transactions of at most CHUNK items: larger ones outgrow SQLite's page cache and spill.
    while (committed < batch.size()) {
        const std::size_t n = std::min(CHUNK, batch.size() - committed);
        write_chunk(batch, committed, n);
        committed += n;
    }
}

void audit_log::write_chunk(std::vector<item>& batch, std::size_t first, std::size_t count) {
    pending_head_ = head_;
    std::uint64_t written = 0, shredded = 0;
    bool checkpoint = false;
    {
        sqlite_transaction tx(*db_);
        for (std::size_t i = first; i < first + count; ++i) {
            const item& it = batch[i];
            switch (it.what) {
            case item::op::record:
                write_record(it);
                ++written;
                break;
            case item::op::shred:
                do_shred(it);
                ++written;
                ++shredded;
                checkpoint = true;
                break;
            case item::op::sweep:
                break;  // after the commit, in its own transactions
            }
        }
        if (written > 0)
            db_->cached("INSERT INTO audit_meta(key, value) VALUES ('last_seq', ?)"
                        " ON CONFLICT(key) DO UPDATE SET value = excluded.value")
                .bind(1, pending_seq_)
                .run();
        tx.commit();
    }
    head_ = pending_head_;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.written += written;
        stats_.keys_shredded += shredded;
    }
    if (checkpoint) {
        // The deleted key may still sit in WAL frames: copy back and truncate the log.
        const int rc = sqlite3_wal_checkpoint_v2(db_->handle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
        if (rc != SQLITE_OK)
            problem(std::string("a shredded key may remain in the database's write-ahead log until the next "
                                "checkpoint (a reader held it open): ") + sqlite3_errstr(rc));
    }
    for (std::size_t i = first; i < first + count; ++i)
        if (batch[i].what == item::op::sweep) {
            try {
                do_sweep(batch[i].now_ms);
            } catch (const std::exception& e) {
                problem(std::string("retention sweep failed, will retry: ") + e.what());
            }
        }
}

std::array<unsigned char, gcm_sealer::NONCE_BYTES> audit_log::next_nonce() {
    std::array<unsigned char, gcm_sealer::NONCE_BYTES> n{};
    for (int i = 0; i < 4; ++i) n[i] = static_cast<unsigned char>(nonce_epoch_ >> (24 - 8 * i));
    const std::uint64_t c = nonce_counter_++;
    for (int i = 0; i < 8; ++i) n[4 + i] = static_cast<unsigned char>(c >> (56 - 8 * i));
    return n;
}

void audit_log::forget_keys() {
    for (auto& [ref, key] : data_keys_) OPENSSL_cleanse(key.data(), key.size());
    data_keys_.clear();
    sealer_ref_.clear();
}

gcm_sealer& audit_log::sealer_for(const std::string& ref) {
    if (sealer_ && ref == sealer_ref_) return *sealer_;
    auto it = data_keys_.find(ref);
    if (it == data_keys_.end()) {
        if (data_keys_.size() >= KEY_CACHE_LIMIT) forget_keys();
        data_key key{};
        if (!find_key_)
            find_key_ = std::make_unique<sqlite_statement>(db_->handle(), "SELECT wrapped FROM audit_subject_keys WHERE ref = ?");
        auto& find = *find_key_;
        find.bind(1, ref);
        if (find.step()) {
            const std::string wrapped = find.blob(0);
            find.reset();
            key = keys_->unwrap(wrapped, ref);
        } else {
            find.reset();
            key = keys_->new_data_key();
            if (!insert_key_)
                insert_key_ = std::make_unique<sqlite_statement>(
                    db_->handle(), "INSERT INTO audit_subject_keys(ref, wrapped, created_ms) VALUES (?, ?, ?)");
            insert_key_->bind(1, ref)
                .bind_blob(2, keys_->wrap(key, ref))
                .bind(3, wall_ms())
                .run();
        }
        it = data_keys_.emplace(ref, key).first;
        OPENSSL_cleanse(key.data(), key.size());
    }
    if (sealer_) sealer_->rekey(it->second);
    else sealer_ = std::make_unique<gcm_sealer>(it->second);
    sealer_ref_ = ref;
    return *sealer_;
}

void audit_log::write_record(const item& it) {
    const audit_record& r = it.record;
    stored_record s;
    s.seq = it.seq;
    s.at_ms = r.at_ms;
    s.kind = std::string(to_string(r.kind));
    const std::int32_t days = r.retention_days > 0 ? r.retention_days : options_.default_retention_days;
    s.expires_ms = r.at_ms + std::int64_t{days} * DAY_MS;
    s.session = r.session;
    s.client_id = r.client_id;
    s.schema = r.schema;
    s.detail = r.detail.empty() ? std::string("{}") : r.detail;
    if (r.has_payload) s.payload = r.payload;
    if (!r.personal.empty() && !r.subjects.empty()) {
        std::string sealed;
        for (const auto& subject : r.subjects) {
            const std::string ref = keys_->subject_ref(subject);
            const std::string raw = ref_bytes(ref);
            sealed.append(raw);
            const std::size_t len_at = sealed.size();
            append_be32(sealed, 0);
            const std::size_t start = sealed.size();
            sealer_for(ref).seal(next_nonce(), envelope_aad(s.seq, raw), r.personal, sealed);
            const auto len = static_cast<std::uint32_t>(sealed.size() - start);
            for (int i = 0; i < 4; ++i) sealed[len_at + i] = static_cast<char>(len >> (24 - 8 * i));
        }
        s.sealed = std::move(sealed);
    }
    const chain_hash digest = content_digest(s);
    const chain_hash hash = link_hash(pending_head_, s, digest);
    if (!insert_)
        insert_ = std::make_unique<sqlite_statement>(
            db_->handle(),
            "INSERT INTO audit_records(seq, at_ms, kind, expires_ms, session, client_id, schema, detail, payload, sealed, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    auto& insert = *insert_;
    // `s` and `hash` outlive the step: no copies.
    insert.bind(1, s.seq).bind(2, s.at_ms).bind_static(3, s.kind).bind(4, s.expires_ms).bind(5, s.session);
    insert.bind_static(6, s.client_id).bind_static(7, s.schema).bind_static(8, s.detail);
    if (s.payload) insert.bind_blob_static(9, *s.payload);
    if (s.sealed) insert.bind_blob_static(10, *s.sealed);
    if (!s.payload) insert.bind_null(9);
    if (!s.sealed) insert.bind_null(10);
    insert.bind_blob_static(11, as_bytes(hash));
    insert.run();
    pending_head_ = hash;
    pending_seq_ = s.seq;
}

void audit_log::do_shred(const item& it) {
    const std::string ref = keys_->subject_ref(it.subject);
    if (auto k = data_keys_.find(ref); k != data_keys_.end()) {
        OPENSSL_cleanse(k->second.data(), k->second.size());
        data_keys_.erase(k);
    }
    if (sealer_ref_ == ref) sealer_ref_.clear();  // and rekeyed before its next use
    auto& del = db_->cached("DELETE FROM audit_subject_keys WHERE ref = ?");
    del.bind(1, ref).run();
    const bool found = db_->changes() > 0;
    // The record names the reference, never the subject id.
    item rec;
    rec.seq = it.seq;
    rec.record.at_ms = wall_ms();
    rec.record.kind = audit_kind::key_shredded;
    rec.record.detail = nlohmann::json{{"subject_ref", ref}, {"key_existed", found}}.dump();
    write_record(rec);
}

void audit_log::do_sweep(std::int64_t now_ms) {
    // GDPR Art. 5(1)(e): content past its retention goes; its digest stays so the chain verifies.
    // One step does a bounded amount of work and queues the next step behind the records that
    // arrived meanwhile, so a large sweep never holds up the queue (or, under the block policy,
    // the broker).
    std::vector<stored_record> expired;
    auto& select = db_->cached(
        "SELECT seq, at_ms, kind, expires_ms, session, client_id, schema, detail, payload, sealed FROM audit_records"
        " WHERE digest IS NULL AND expires_ms <= ? ORDER BY expires_ms LIMIT " + std::to_string(SWEEP_CHUNK));
    select.bind(1, now_ms);
    while (select.step()) {
        stored_record r;
        r.seq = select.integer(0);
        r.at_ms = select.integer(1);
        r.kind = select.text(2);
        r.expires_ms = select.integer(3);
        r.session = select.integer(4);
        r.client_id = select.text(5);
        r.schema = select.text(6);
        r.detail = select.text(7);
        if (!select.is_null(8)) r.payload = select.blob(8);
        if (!select.is_null(9)) r.sealed = select.blob(9);
        expired.push_back(std::move(r));
    }
    select.reset();
    if (!expired.empty()) {
        sqlite_transaction tx(*db_);
        auto& tomb = db_->cached(
            "UPDATE audit_records SET digest = ?, session = NULL, client_id = NULL, schema = NULL, detail = NULL,"
            " payload = NULL, sealed = NULL WHERE seq = ?");
        for (const auto& r : expired) tomb.bind_blob(1, as_bytes(content_digest(r))).bind(2, r.seq).run();
        tx.commit();
        sweep_tombstoned_ += expired.size();
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.tombstoned += expired.size();
    }
    if (expired.size() == SWEEP_CHUNK) return sweep(now_ms);  // more to do: next step

    // Rows before the first live record are all tombstones: they go (at most SWEEP_CHUNK per
    // step), and the anchor keeps the hash of the last one so the chain can be checked from there.
    std::int64_t anchor_seq = 0;
    std::string anchor_hash;
    bool more = false;
    {
        sqlite_transaction tx(*db_);
        auto& first_live = db_->cached("SELECT MIN(seq) FROM audit_records WHERE digest IS NULL");
        std::int64_t limit = std::numeric_limits<std::int64_t>::max();
        if (first_live.step() && !first_live.is_null(0)) limit = first_live.integer(0);
        first_live.reset();
        auto& first_row = db_->cached("SELECT MIN(seq) FROM audit_records");
        if (first_row.step() && !first_row.is_null(0) && first_row.integer(0) + std::int64_t{SWEEP_CHUNK} < limit) {
            limit = first_row.integer(0) + std::int64_t{SWEEP_CHUNK};
            more = true;
        }
        first_row.reset();
        auto& last_dead = db_->cached("SELECT seq, hash FROM audit_records WHERE seq < ? ORDER BY seq DESC LIMIT 1");
        last_dead.bind(1, limit);
        if (last_dead.step()) {
            anchor_seq = last_dead.integer(0);
            anchor_hash = last_dead.blob(1);
        }
        last_dead.reset();
        if (anchor_seq > 0) {
            db_->cached("INSERT INTO audit_anchor(id, seq, hash, at_ms) VALUES (1, ?, ?, ?)"
                        " ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at_ms = excluded.at_ms")
                .bind(1, anchor_seq)
                .bind_blob(2, anchor_hash)
                .bind(3, now_ms)
                .run();
            db_->cached("DELETE FROM audit_records WHERE seq <= ?").bind(1, anchor_seq).run();
        }
        tx.commit();
    }
    if (anchor_seq > 0) {
        anchor_seq_ = anchor_seq;
        anchor_hash_ = anchor_hash;
        sweep_moved_anchor_ = true;
    }
    if (more) return sweep(now_ms);
    const std::uint64_t tombstoned = sweep_tombstoned_;
    const bool moved = sweep_moved_anchor_;
    sweep_tombstoned_ = 0;
    sweep_moved_anchor_ = false;
    if (tombstoned == 0 && !moved) return;
    audit_record rec;
    rec.at_ms = wall_ms();
    rec.kind = audit_kind::retention;
    nlohmann::json detail{{"tombstoned", tombstoned}, {"swept_at_ms", now_ms}};
    if (anchor_seq_ > 0) {  // every retention record restates the anchor: verify checks it
        detail["anchor_seq"] = anchor_seq_;
        detail["anchor_hash"] = to_hex(anchor_hash_);
    }
    rec.detail = detail.dump();
    append(std::move(rec));
}

} // namespace gdpr
