#include "gdpr/audit_log.hpp"

#include "gdpr/audit_reader.hpp"
#include "gdpr/background_thread.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <optional>

#include <sqlite3.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <nlohmann/json.hpp>

namespace gdpr {

namespace {

constexpr std::int64_t DAY_MS = 86'400'000;

// The record number after `seq`, which the file gives: one outside what a writer can reach was
// put there by hand, and the trail is not continued from it.
std::int64_t seq_after(std::int64_t seq, const char* what) {
    if (seq < 0 || seq >= std::numeric_limits<std::int64_t>::max() - 1)
        throw storage_error(std::string("the audit trail's ") + what + " has record number " + std::to_string(seq) +
                            ", which no writer gives: the file was edited by hand (run gdprctl verify)");
    return seq + 1;
}
constexpr std::size_t KEY_CACHE_LIMIT = 262144;  // about 50 MiB of table (keys inline with their subject ids)
constexpr std::chrono::milliseconds CHECKPOINT_PERIOD{500};
constexpr std::size_t SWEEP_CHUNK = 5000;  // rows per sweep step
// The sweeper finds expired records through one audit_expiry row per retention period and hour
// of expiry, rather than an index entry per record: each record costs the writer one row less.
constexpr std::int64_t EXPIRY_BUCKET_MS = 3'600'000;
// Live rows a sweep step reads at most, expired or not: a group's range spans an hour of the
// trail, most of it other groups' records when retention periods are mixed.
constexpr std::size_t SWEEP_SCAN_LIMIT = 50'000;
// The longest retention options and schemas accept (a hundred years).
constexpr std::int64_t MAX_RETENTION_DAYS = 36'500;

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

chain_hash hash_of(const std::string& blob) {
    chain_hash h{};
    if (blob.size() == h.size()) std::copy(blob.begin(), blob.end(), h.begin());
    return h;
}

// Sets an integer of audit_meta, in the caller's transaction.
void put_meta(sqlite_db& db, std::string_view key, std::int64_t value) {
    db.cached("INSERT INTO audit_meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(1, key)
        .bind(2, value)
        .run();
}

// Sets the chain's anchor (records up to `seq` removed; `hash` is the last one's), in the caller's
// transaction.
void put_anchor(sqlite_db& db, std::int64_t seq, std::string_view hash, std::int64_t at_ms) {
    db.cached("INSERT INTO audit_anchor(id, seq, hash, at_ms) VALUES (1, ?, ?, ?)"
              " ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at_ms = excluded.at_ms")
        .bind(1, seq)
        .bind_blob(2, hash)
        .bind(3, at_ms)
        .run();
}

struct anchor_statement {
    bool found = false;    // a live record states the anchor (or states that there is none yet)
    std::int64_t seq = 0;  // 0: no anchor stated
    std::string hash;
    std::string mac;  // audit_keys::anchor_mac, in statements written since they are authenticated
    bool disputed = false;  // a writer found the anchor it states not authenticated
};

anchor_statement parse_statement(const std::string& detail) {
    anchor_statement a;
    const nlohmann::json d = nlohmann::json::parse(detail, nullptr, false);
    if (!d.is_object()) return a;
    const auto seq = d.find("anchor_seq");
    const auto hash = d.find("anchor_hash");
    if (seq == d.end() || !seq->is_number_integer() || hash == d.end() || !hash->is_string()) return a;
    const auto bytes = from_hex(hash->get<std::string>());
    if (!bytes) return a;
    a.found = true;
    a.seq = seq->get<std::int64_t>();
    a.hash = *bytes;
    if (const auto mac = d.find("anchor_mac"); mac != d.end() && mac->is_string()) a.mac = mac->get<std::string>();
    a.disputed = d.contains("anchor_disputed");
    return a;
}

// The anchor as the trail itself last stated it: in the newest record that states one, whose seq
// the writer keeps in audit_meta with each commit. When that record cannot be read (a trail
// written before the key existed, or an edited one), the newest live statement is searched from
// the end (only when there is an anchor), and the key is written.
anchor_statement stated_anchor(sqlite_db& db, bool has_anchor) {
    auto& meta = db.cached("SELECT value FROM audit_meta WHERE key = 'anchor_statement_seq'");
    const bool known = meta.step();
    const std::int64_t statement_seq = known ? meta.integer(0) : 0;
    meta.reset();
    if (known) {
        auto& q = db.cached("SELECT detail FROM audit_records WHERE seq = ? AND digest IS NULL");
        q.bind(1, statement_seq);
        anchor_statement a;
        if (q.step()) a = parse_statement(q.text(0));
        q.reset();
        if (a.found) return a;
    }
    if (!has_anchor) return {true, 0, {}, {}, false};  // nothing to vouch for
    auto& scan = db.cached("SELECT seq, detail FROM audit_records WHERE kind IN ('retention', 'writer_started')"
                           " AND digest IS NULL AND detail LIKE '%\"anchor_seq\"%' ORDER BY seq DESC LIMIT 1");
    anchor_statement a;
    std::int64_t found_seq = 0;
    if (scan.step()) {
        found_seq = scan.integer(0);
        a = parse_statement(scan.text(1));
    }
    scan.reset();
    if (a.found)
        put_meta(db, "anchor_statement_seq", found_seq);
    return a;
}


// The expiry group a record belongs to: its retention period in days and the hour it expires in.
struct expiry_key {
    std::int64_t days;
    std::int64_t bucket;
};
expiry_key expiry_key_of(std::int64_t at_ms, std::int64_t expires_ms) {
    return {(expires_ms - at_ms) / DAY_MS, expires_ms / EXPIRY_BUCKET_MS};
}

// Version 1 kept an index entry per live record for the sweeper (audit_records_expiry); version 2
// keeps the expiry groups instead. The groups are built from that index, which then goes.
void upgrade_from_version_1(sqlite_db& db) {
    db.exec("INSERT INTO audit_expiry(days, bucket, first_seq, last_seq)"
            " SELECT (expires_ms - at_ms) / " + std::to_string(DAY_MS) + ", expires_ms / " + std::to_string(EXPIRY_BUCKET_MS) +
            ", MIN(seq), MAX(seq) FROM audit_records WHERE digest IS NULL GROUP BY 1, 2;"
            "DROP INDEX IF EXISTS audit_records_expiry;"
            "UPDATE audit_meta SET value = 2 WHERE key = 'schema_version';");  // then to 3 by the caller
}

} // namespace

void create_audit_tables(sqlite_db& db) {
    db.exec(
        "CREATE TABLE IF NOT EXISTS audit_records("
        " seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, kind TEXT NOT NULL, expires_ms INTEGER NOT NULL,"
        " session INTEGER, client_id TEXT, schema TEXT, detail TEXT, payload BLOB, sealed BLOB,"
        " digest BLOB, hash BLOB NOT NULL);"
        // Every live record with this retention and an expiry in this hour lies in [first_seq, last_seq].
        "CREATE TABLE IF NOT EXISTS audit_expiry("
        " days INTEGER NOT NULL, bucket INTEGER NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"
        " PRIMARY KEY (days, bucket)) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS audit_anchor("
        " id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL, at_ms INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS audit_subject_keys("
        " ref TEXT PRIMARY KEY, wrapped BLOB NOT NULL, created_ms INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS audit_meta(key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;");
    // The trail's statements about itself (a few per start and sweep), found without a scan.
    db.exec(std::string("CREATE INDEX IF NOT EXISTS audit_statements ON audit_records(seq) WHERE ") +
            AUDIT_STATEMENT_KINDS);
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
        // Whether key_shredded records written so far carry no shred_mac (an older writer's).
        bool shreds_unauthenticated_so_far = false;
        const bool new_trail = !version.step();
        if (!new_trail) {
            const auto v = version.integer(0);
            version.reset();
            static_assert(SCHEMA_VERSION == 4, "add the upgrade from the previous version");
            if (v < 1 || v > SCHEMA_VERSION)
                throw storage_error("database '" + options.path + "' has audit trail version " + std::to_string(v) +
                                    "; this plugin reads version " + std::to_string(SCHEMA_VERSION));
            if (v == 1) upgrade_from_version_1(db);
            // Version 3 authenticates statements of the anchor (anchor_mac), version 4 key_shredded
            // records (shred_mac): the tables are those of version 2, and a plugin that would
            // write either without authentication refuses the file.
            if (v < SCHEMA_VERSION) put_meta(db, "schema_version", SCHEMA_VERSION);
            shreds_unauthenticated_so_far = v < 4;
        } else {
            version.reset();
            db.cached("INSERT INTO audit_meta(key, value) VALUES ('schema_version', ?)").bind(1, std::int64_t{SCHEMA_VERSION}).run();
        }
        // A fresh nonce epoch per start: nonces are epoch || counter, so no nonce repeats under a
        // data key across restarts, without drawing random nonces per record.
        auto& epoch = db.cached("SELECT value FROM audit_meta WHERE key = 'nonce_epoch'");
        const std::int64_t last_epoch = epoch.step() ? epoch.integer(0) : 0;
        epoch.reset();
        if (last_epoch < 0) throw storage_error("the audit trail's nonce epoch is negative: the file was edited by hand");
        if (last_epoch >= std::int64_t{std::numeric_limits<std::uint32_t>::max()}) throw storage_error("audit nonce epochs exhausted");
        const std::int64_t e = last_epoch + 1;
        put_meta(db, "nonce_epoch", e);
        log->nonce_epoch_ = static_cast<std::uint32_t>(e);
        // The epoch repeats when a copy of the file (a restored backup) is started with the same
        // key file: the counter starts at a random multiple of 2^32, so two starts under one
        // epoch share a nonce only if they drew the same 32 bits.
        std::array<unsigned char, 4> start{};
        if (RAND_bytes(start.data(), static_cast<int>(start.size())) != 1) throw storage_error("OpenSSL RAND_bytes failed");
        log->nonce_counter_ = std::uint64_t{start[0]} << 56 | std::uint64_t{start[1]} << 48 | std::uint64_t{start[2]} << 40 |
                              std::uint64_t{start[3]} << 32;

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
            log->next_seq_ = seq_after(log->anchor_seq_, "anchor");
            log->head_ = hash_of(log->anchor_hash_);
        }
        anchor.reset();
        // The anchor lives outside the chain: rows deleted by hand before a forged anchor would be
        // vouched for by the next writer_started record if it restated the anchor unchecked. Only
        // the anchor the trail itself last stated is restated; another one is put back to it, so
        // verify reports the rows missing between them.
        const auto stated = stated_anchor(db, log->anchor_seq_ > 0);
        // Statements are authenticated once a writer of this version has committed one (the marker
        // is written with it); the statement an older writer left is taken as it is, once, and
        // restated authenticated. A statement that carries a MAC is checked whatever the marker.
        auto& authenticated = db.cached("SELECT 1 FROM audit_meta WHERE key = 'anchor_statements_authenticated'");
        const bool statements_authenticated = authenticated.step() || !stated.mac.empty();
        authenticated.reset();
        // With no anchor there is nothing an older writer stated: any statement from here on is this version's.
        if (!statements_authenticated && log->anchor_seq_ == 0 && stated.seq == 0)
            put_meta(db, "anchor_statements_authenticated", 1);
        // Taken without authentication: said so in the trail (verify notes it), since the marker
        // that would have refused it lives beside the chain, where anyone can remove it.
        log->anchor_inherited_ = !statements_authenticated && stated.found && stated.seq > 0;
        // The anchor the trail states, disputed or not, is the one kept: verify reports the rows
        // missing between it and one edited by hand.
        const auto keep_stated_anchor = [&] {
            if (stated.seq > 0) put_anchor(db, stated.seq, stated.hash, wall_ms());
            else
                db.exec("DELETE FROM audit_anchor");
            log->anchor_seq_ = stated.seq;
            log->anchor_hash_ = stated.hash;
            log->next_seq_ = seq_after(log->anchor_seq_, "stated anchor");
            log->head_ = hash_of(log->anchor_hash_);
        };
        // Once statements are authenticated, an anchor that no live record states is in question too:
        // the statement may have been removed (or left to expire) so as not to be checked.
        const bool forged = (stated.found && stated.seq > 0 &&
                             (stated.disputed || (statements_authenticated &&
                                                  stated.mac != log->keys_->anchor_mac(stated.seq, stated.hash)))) ||
                            (!stated.found && statements_authenticated);
        if (forged) {
            // Restating it would vouch for it with the key; the writer states it disputed instead
            // (and so does every later statement of an anchor moved on from it), and verify reports it.
            log->problems_.push_back("the audit trail's anchor (records up to seq " + std::to_string(log->anchor_seq_) +
                                     " removed) is " + (stated.found ? "stated by a record that is" : "stated by no record, and") +
                                     " not authenticated by the audit key file: records before it may have been "
                                     "removed by hand (run gdprctl verify --key-file)");
            log->anchor_disputed_ = true;
            if (stated.found && (stated.seq != log->anchor_seq_ || stated.hash != log->anchor_hash_)) keep_stated_anchor();
        } else if (!stated.found) {
            // No live record states any anchor: the anchor is kept (it may be an older trail's), but
            // neither restated nor confirmed until the sweeper moves it.
            log->problems_.push_back("no record of the audit trail states its anchor (records up to seq " +
                                     std::to_string(log->anchor_seq_) +
                                     " removed): they may have been removed by hand (run gdprctl verify)");
            log->anchor_unstated_ = true;
        } else if (log->anchor_seq_ > 0 || stated.seq > 0) {
            if (stated.seq != log->anchor_seq_ || stated.hash != log->anchor_hash_) {
                log->problems_.push_back(
                    "the audit trail's anchor (records up to seq " + std::to_string(log->anchor_seq_) +
                    " removed) is not the one the trail last stated (seq " + std::to_string(stated.seq) +
                    "): records may have been removed by hand; the stated anchor is kept (run gdprctl verify)");
                keep_stated_anchor();
            }
        }
        auto& last = db.cached("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1");
        if (last.step()) {
            log->next_seq_ = seq_after(last.integer(0), "last record");
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
            log->next_seq_ = seq_after(lost_to, "committed last_seq");
        }
        committed.reset();
        // From which record on every key_shredded record is authenticated: kept beside the chain
        // and stated in every writer_started and retention record, so that raising it by hand
        // shows (verify takes the lowest stated). Those before it are an older writer's, taken as
        // written (verify notes them).
        auto& shreds_from = db.cached("SELECT value FROM audit_meta WHERE key = 'shreds_authenticated_from'");
        const bool marked = shreds_from.step();
        const std::int64_t marker = marked ? shreds_from.integer(0) : 0;
        shreds_from.reset();
        // Also in a trail that says it is older than version 4: one that states it was written by
        // this version and passed off as older. (A statement can only lower it: none states a
        // boundary after itself.)
        const auto stated_from = lowest_stated_shreds_boundary(db);
        if (stated_from && (!marked || marker > stated_from->from)) {
            // The marker removed or raised by hand (the schema version lowered with it, to pass for
            // an upgrade): the trail's own statements still say it.
            log->problems_.push_back("the audit trail's record of which key_shredded records are authenticated (from seq " +
                                     std::to_string(stated_from->from) + ", as the trail states) was " +
                                     (marked ? "raised" : "removed") + " by hand; the stated one is kept (run gdprctl "
                                     "verify --key-file)");
            log->shreds_authenticated_from_ = stated_from->from;
            put_meta(db, "shreds_authenticated_from", log->shreds_authenticated_from_);
        } else if (marked && marker > log->next_seq_) {
            // No writer states a boundary it has not reached: raised by hand, with every statement
            // of it gone. Every key_shredded record is held to authentication.
            log->problems_.push_back("the audit trail's record of which key_shredded records are authenticated names "
                                     "seq " + std::to_string(marker) + ", which the trail has not reached: changed by "
                                     "hand; every key_shredded record is held to it (run gdprctl verify --key-file)");
            log->shreds_authenticated_from_ = 1;
            put_meta(db, "shreds_authenticated_from", 1);
        } else if (marked) {
            log->shreds_authenticated_from_ = marker;
        } else {
            if (!new_trail && !shreds_unauthenticated_so_far)
                log->problems_.push_back("the audit trail's record of which key_shredded records are authenticated is "
                                         "missing (removed by hand): every one is held to it (run gdprctl verify --key-file)");
            log->shreds_authenticated_from_ = shreds_unauthenticated_so_far ? log->next_seq_ : 1;
            put_meta(db, "shreds_authenticated_from", log->shreds_authenticated_from_);
        }
        // The latest expiry of any record but a shred, kept with each commit (plan_shred); a trail
        // without it (written by an earlier version) reads it from its live records, once.
        auto& expiry = db.cached("SELECT value FROM audit_meta WHERE key = 'latest_record_expiry_ms'");
        if (expiry.step()) {
            log->latest_record_expiry_ms_ = expiry.integer(0);
        } else {
            expiry.reset();
            auto& latest = db.cached("SELECT max(expires_ms) FROM audit_records WHERE digest IS NULL AND kind <> 'key_shredded'");
            if (latest.step() && !latest.is_null(0)) log->latest_record_expiry_ms_ = latest.integer(0);
            latest.reset();
        }
        expiry.reset();
        auto& held = db.cached("SELECT value FROM audit_meta WHERE key >= 'held:' AND key < 'held;'");
        while (held.step()) log->held_statements_.push_back(held.integer(0));
        held.reset();
        tx.commit();
    }
    log->next_sweep_ = std::chrono::steady_clock::now() + options.sweep_period;
    audit_record started;
    started.at_ms = wall_ms();
    started.kind = audit_kind::writer_started;
    nlohmann::json started_detail{{"nonce_epoch", log->nonce_epoch_},
                                  {"previous_seq", log->next_seq_ - 1},
                                  {"previous_hash", to_hex(log->head_)},
                                  {"shreds_authenticated_from", log->shreds_authenticated_from_}};
    const bool states_anchor = log->anchor_seq_ > 0 && (!log->anchor_unstated_ || log->anchor_disputed_);
    if (states_anchor) {
        started_detail["anchor_seq"] = log->anchor_seq_;
        started_detail["anchor_hash"] = to_hex(log->anchor_hash_);
        if (log->anchor_disputed_) {
            started_detail["anchor_disputed"] = "the statement of the anchor is not authenticated by the audit key file";
        } else {
            started_detail["anchor_mac"] = log->keys_->anchor_mac(log->anchor_seq_, log->anchor_hash_);
            if (log->anchor_inherited_)
                started_detail["anchor_inherited"] = "stated before without authentication (an upgrade from trail "
                                                     "version 2, or the audit_meta marker removed by hand)";
        }
    }
    started.detail = started_detail.dump();
    const std::int64_t started_seq = log->append(std::move(started));
    if (states_anchor) {
        log->anchor_statement_seq_ = started_seq;
        std::lock_guard<std::mutex> lock(log->mutex_);  // the writer has not started: for form's sake
        log->queue_.back().states_anchor = true;
    }
    log->start();
    return log;
}

void audit_log::start() {
    checkpoint_db_ = std::make_unique<sqlite_db>(options_.path, options_.synchronous);
    sealing_ = std::make_unique<sealing_stage>();
    thread_ = std::thread([this] {
        become_background_thread("gdpr-audit");
        run();
    });
    checkpointer_ = std::thread([this] {
        become_background_thread("gdpr-checkpoint");
        run_checkpoints();
    });
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

audit_log::~audit_log() { stop(std::chrono::milliseconds(0)); }

std::size_t audit_log::stop(std::chrono::milliseconds grace) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!stopping_) stop_deadline_ = std::chrono::steady_clock::now() + grace;
        stopping_ = true;
    }
    wake_writer_.notify_all();
    space_.notify_all();
    checkpoint_wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (checkpointer_.joinable()) checkpointer_.join();
    checkpoint_db_.reset();
    std::lock_guard<std::mutex> lock(mutex_);
    return unwritten_at_stop_;
}

void audit_log::push_locked(item&& it) {
    queue_.push_back(std::move(it));
    ++pushed_;
    ++stats_.appended;
    if (queue_.size() == wake_threshold()) wake_writer_.notify_one();  // a batch is ready: no need to wait
}

std::int64_t audit_log::append(audit_record&& record) {
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

audit_record audit_log::blank_record() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (spare_.empty()) return {};
    audit_record r = std::move(spare_.back());
    spare_.pop_back();
    return r;
}

void audit_log::recycle(std::vector<item>& finished) {
    // A record that once carried a large message would keep that much memory for good.
    constexpr std::size_t KEEP_AT_MOST = 4096;
    const auto small = [](const audit_record& r) {
        return r.personal.capacity() <= KEEP_AT_MOST && r.payload.capacity() <= KEEP_AT_MOST &&
               r.detail.capacity() <= KEEP_AT_MOST;
    };
    std::vector<audit_record> kept;
    const std::size_t limit = wake_threshold();
    kept.reserve(std::min(limit, finished.size()));
    for (auto& it : finished) {
        // GDPR Art. 32: the clear text of what was sealed, and whom it was about, does not linger
        // in memory, reused or freed.
        audit_record& r = it.record;
        if (!r.personal.empty()) OPENSSL_cleanse(r.personal.data(), r.personal.size());
        for (auto& subject : r.subjects) OPENSSL_cleanse(subject.data(), subject.size());
        if (!it.subject.empty()) OPENSSL_cleanse(it.subject.data(), it.subject.size());
        if (it.what != item::op::record || kept.size() == limit || !small(r)) continue;
        r.clear();
        kept.push_back(std::move(r));
    }
    finished.clear();
    std::lock_guard<std::mutex> lock(mutex_);
    if (spare_.size() < kept.size()) spare_.swap(kept);
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

std::int64_t audit_log::shred_subject(const std::string& subject) {
    std::lock_guard<std::mutex> lock(mutex_);
    item it;
    it.what = item::op::shred;
    it.seq = next_seq_++;  // the key_shredded record keeps its place in the chain
    it.subject = subject;
    const std::int64_t seq = it.seq;
    push_locked(std::move(it));
    wake_writer_.notify_one();
    return seq;
}

void audit_log::sweep(std::int64_t now_ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    push_sweep_locked(now_ms, next_seq_ - 1);
}

void audit_log::continue_sweep(std::int64_t now_ms, std::int64_t through_seq) {
    std::lock_guard<std::mutex> lock(mutex_);
    push_sweep_locked(now_ms, through_seq);
}

void audit_log::push_sweep_locked(std::int64_t now_ms, std::int64_t through_seq) {
    item it;
    it.what = item::op::sweep;
    it.now_ms = now_ms;
    it.sweep_through = through_seq;
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
        {
            std::unique_lock<std::mutex> lock(mutex_);
            if (stopping_ && failing_) {
                // Stopping, and the last attempt failed: retried after the backoff, within the
                // grace period stop() gave.
                wake_writer_.wait_until(lock, std::min(std::chrono::steady_clock::now() + backoff, stop_deadline_));
            } else {
                const auto wait_for = failing_ ? backoff : options_.flush_period;
                wake_writer_.wait_for(lock, wait_for, [&] {
                    return stopping_ || flush_requested_ || queue_.size() >= wake_threshold();
                });
            }
            flush_requested_ = false;
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
                recycle(batch);
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
        if (!failing_) {
            try {
                wipe_shredded_keys();
            } catch (const std::exception& e) {
                problem(std::string("could not truncate the write-ahead log after a shred: ") + e.what());
            }
        }
        if (std::chrono::steady_clock::now() >= next_sweep_ && !failing_) {
            next_sweep_ = std::chrono::steady_clock::now() + options_.sweep_period;
            sweep(wall_ms());
        }
        {
            // stopping_ as it is now: a stop() asked for during a failed attempt need not wait
            // for another one.
            std::lock_guard<std::mutex> lock(mutex_);
            if (!stopping_) continue;
            if (queue_.empty() && batch.empty()) break;
            if (failing_ && std::chrono::steady_clock::now() >= stop_deadline_) {
                const auto is_record = [](const item& it) { return it.what != item::op::sweep; };  // each writes one
                unwritten_at_stop_ = static_cast<std::size_t>(std::count_if(batch.begin(), batch.end(), is_record) +
                                                              std::count_if(queue_.begin(), queue_.end(), is_record));
                problems_.push_back("stopped with " + std::to_string(unwritten_at_stop_) +
                                    " audit records unwritten, which are lost: " + stats_.last_error);
                break;
            }
        }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    progress_.notify_all();
}

void audit_log::write_batch(std::vector<item>& batch, std::size_t& committed) {
    // Transactions of at most transaction_records items, through a two-stage pipeline: while one
    // chunk is inserted, the next is sealed and digested on the sealing stage. The next chunk's
    // data keys are created in this chunk's transaction (a key committed early is harmless); a
    // chunk that shreds a key is never planned ahead, so a key is destroyed in the transaction
    // that records its destruction.
    struct idle_on_exit {
        sealing_stage& stage;
        std::array<chunk_plan, 2>& plans;
        ~idle_on_exit() {
            try {
                stage.wait();  // the stage borrows the batch and the plans
            } catch (...) {
            }
            plans[0].reset();  // no data key stays behind in a plan
            plans[1].reset();
        }
    } idle{*sealing_, plans_};
    chunk_plan* current = &plans_[0];
    chunk_plan* ahead = &plans_[1];
    bool current_submitted = false;
    while (committed < batch.size()) {
        const std::size_t chunk = std::max<std::size_t>(1, options_.transaction_records);
        const std::size_t n = std::min(chunk, batch.size() - committed);
        const std::size_t next_first = committed + n;
        const std::size_t next_n = std::min(chunk, batch.size() - next_first);
        bool ahead_submitted = false;
        pending_head_ = head_;
        std::uint64_t written = 0, shredded = 0;
        {
            sqlite_transaction tx(*db_);
            if (!current_submitted) {
                plan_chunk(batch, committed, n, *current);
                sealing_->submit(*current);
            }
            const bool plan_ahead = next_n > 0 && std::none_of(batch.begin() + static_cast<std::ptrdiff_t>(next_first),
                                                               batch.begin() + static_cast<std::ptrdiff_t>(next_first + next_n),
                                                               [](const item& it) { return it.what == item::op::shred; });
            if (plan_ahead) plan_chunk(batch, next_first, next_n, *ahead);
            sealing_->wait();
            if (plan_ahead) {
                sealing_->submit(*ahead);
                ahead_submitted = true;
            }
            insert_chunk(batch, committed, n, *current, written, shredded);
            if (written > 0) {
                put_meta(*db_, "last_seq", pending_seq_);
                put_meta(*db_, "latest_record_expiry_ms", latest_record_expiry_ms_);
            }
            std::int64_t statement = 0;  // the newest record of the chunk that states the anchor
            for (std::size_t i = committed; i < committed + n; ++i)
                if (batch[i].states_anchor) statement = batch[i].seq;
            if (statement > 0) {
                put_meta(*db_, "anchor_statement_seq", statement);
                // From now on every statement must carry anchor_mac (a disputed one carries none).
                if (!anchor_disputed_) put_meta(*db_, "anchor_statements_authenticated", 1);
            }
            tx.commit();
        }
        head_ = pending_head_;
        const std::size_t first = committed;
        committed += n;  // before anything else can throw: a committed chunk is never retried
        after_commit(batch, first, n, written, shredded);
        std::swap(current, ahead);
        current_submitted = ahead_submitted;
    }
}

void audit_log::after_commit(const std::vector<item>& batch, std::size_t first, std::size_t count,
                             std::uint64_t written, std::uint64_t shredded) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.written += written;
        stats_.keys_shredded += shredded;
    }
    if (shredded > 0)
        for (std::size_t i = first; i < first + count; ++i)
            if (batch[i].what == item::op::shred) unwiped_shred_seq_ = std::max(unwiped_shred_seq_, batch[i].seq);
    wipe_shredded_keys();
    std::int64_t highest = committed_through_.load(std::memory_order_relaxed);
    for (std::size_t i = first; i < first + count; ++i) highest = std::max(highest, batch[i].seq);
    committed_through_.store(highest, std::memory_order_release);
    for (std::size_t i = first; i < first + count; ++i) {
        if (batch[i].states_anchor) anchor_statement_seq_ = batch[i].seq;  // committed: it may stand alone
        if (batch[i].what == item::op::anchor) {
            continue_sweep(batch[i].now_ms, batch[i].sweep_through);  // behind what arrived meanwhile
        }
        if (batch[i].what == item::op::sweep) {
            try {
                do_sweep(batch[i].now_ms, batch[i].sweep_through);
            } catch (const std::exception& e) {
                problem(std::string("retention sweep failed, will retry: ") + e.what());
            }
        }
    }
}

void audit_log::wipe_shredded_keys() {
    if (unwiped_shred_seq_ <= shredded_through_.load(std::memory_order_relaxed)) return;
    // A deleted key may still sit in WAL frames (secure_delete overwrites the database's pages):
    // copy them back and truncate the log. It fails while a reader holds an older snapshot, or
    // while the checkpoint thread runs; it is tried again after every commit and while idle, and
    // the key counts as destroyed only once it succeeded (GDPR Art. 17: the receipt says so).
    // Without waiting on a reader: records must not wait behind an export.
    sqlite3_busy_timeout(db_->handle(), 0);
    const int rc = sqlite3_wal_checkpoint_v2(db_->handle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    sqlite3_busy_timeout(db_->handle(), sqlite_db::BUSY_TIMEOUT_MS);
    const auto now = std::chrono::steady_clock::now();
    if (rc == SQLITE_OK) {
        shredded_through_.store(unwiped_shred_seq_, std::memory_order_release);
        if (wipe_failing_) problem("the shredded data keys are gone from the write-ahead log too");
        wipe_failing_ = false;
        wipe_failing_since_ = {};
        return;
    }
    if (wipe_failing_since_ == std::chrono::steady_clock::time_point{}) wipe_failing_since_ = now;
    if (!wipe_failing_ && now - wipe_failing_since_ >= options_.wipe_alert_after) {
        problem(std::string("a shredded data key stays in the database's write-ahead log until a checkpoint can "
                            "truncate it (a reader holds the log open: an export, gdprctl verify, a backup); retrying, "
                            "and the erasure waits: ") +
                sqlite3_errstr(rc));
        wipe_failing_ = true;
    }
}

void audit_log::plan_chunk(std::vector<item>& batch, std::size_t first, std::size_t count, chunk_plan& plan) {
    plan.reset();
    // The subjects' key table slots lie anywhere in a table of up to 262,144 subjects: they are
    // loaded a few records ahead, so that their cache misses overlap instead of stalling each
    // lookup in turn (audit_bench with 100,000 subjects: subject_for and plan_chunk together went
    // from 5.8% of the process's CPU to 2.7%).
    constexpr std::size_t AHEAD = 8;
    const std::size_t end = first + count;
    const auto load_slots = [&](std::size_t j) {
        if (j >= end || batch[j].record.personal.empty()) return;  // nothing to seal: no lookup
        for (const auto& subject : batch[j].record.subjects) subjects_.prefetch(subject);
    };
    for (std::size_t j = first; j < first + AHEAD; ++j) load_slots(j);
    for (std::size_t i = first; i < end; ++i) {
        load_slots(i + AHEAD);
        item& it = batch[i];
        if (it.what == item::op::sweep) continue;  // after the commit, in its own transactions
        if (it.what == item::op::shred) plan_shred(it);
        const audit_record& r = it.record;
        record_plan& p = plan.add();
        record_view& v = p.view;
        v.seq = it.seq;
        v.at_ms = r.at_ms;
        v.kind = to_string(r.kind);
        const std::int32_t days = r.retention_days > 0 ? r.retention_days : options_.default_retention_days;
        v.expires_ms = r.at_ms + std::int64_t{days} * DAY_MS;
        // Shreds left out: each is kept past the records before it, and would push the next further.
        if (it.what != item::op::shred) latest_record_expiry_ms_ = std::max(latest_record_expiry_ms_, v.expires_ms);
        v.session = r.session;
        v.client_id = r.client_id;
        v.schema = r.schema;
        v.detail = r.detail.empty() ? std::string_view("{}") : std::string_view(r.detail);
        if (r.has_payload) v.payload = std::string_view(r.payload);
        if (r.personal.empty() || r.subjects.empty()) continue;
        p.personal = r.personal;
        for (const auto& subject : r.subjects) {
            const subject_entry& entry = subject_for(subject);
            envelope_plan& e = plan.envelopes.emplace_back();
            e.ref = entry.raw;
            e.key = entry.key;
            e.nonce = next_nonce();
            ++p.envelopes;
        }
    }
}

void audit_log::insert_chunk(const std::vector<item>& batch, std::size_t first, std::size_t count,
                             const chunk_plan& plan, std::uint64_t& written, std::uint64_t& shredded) {
    if (!insert_)
        insert_ = std::make_unique<sqlite_statement>(
            db_->handle(),
            "INSERT INTO audit_records(seq, at_ms, kind, expires_ms, session, client_id, schema, detail, payload, sealed, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    auto& insert = *insert_;
    expiry_groups_.clear();
    std::size_t next = 0;
    for (std::size_t i = first; i < first + count; ++i) {
        const item& it = batch[i];
        if (it.what == item::op::sweep) continue;
        const record_plan& p = plan.records[next++];
        const record_view& v = p.view;
        const chain_hash hash = link_hash(pending_head_, v, p.digest);
        // The record, its plan and `hash` outlive the step: no copies.
        insert.bind(1, v.seq).bind(2, v.at_ms).bind_static(3, v.kind).bind(4, v.expires_ms).bind(5, v.session);
        insert.bind_static(6, v.client_id).bind_static(7, v.schema).bind_static(8, v.detail);
        if (v.payload) insert.bind_blob_static(9, *v.payload);
        else insert.bind_null(9);
        if (v.sealed) insert.bind_blob_static(10, *v.sealed);
        else insert.bind_null(10);
        insert.bind_blob_static(11, as_bytes(hash));
        insert.run();
        note_expiry(v);
        pending_head_ = hash;
        pending_seq_ = v.seq;
        ++written;
        if (it.what == item::op::shred) ++shredded;
        if (it.what == item::op::anchor) move_anchor(it);
    }
    auto& group = db_->cached(
        "INSERT INTO audit_expiry(days, bucket, first_seq, last_seq) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(days, bucket) DO UPDATE SET first_seq = min(first_seq, excluded.first_seq),"
        " last_seq = max(last_seq, excluded.last_seq)");
    for (const auto& g : expiry_groups_) group.bind(1, g.days).bind(2, g.bucket).bind(3, g.first_seq).bind(4, g.last_seq).run();
}

void audit_log::note_expiry(const record_view& v) {
    // A chunk's records fall into a handful of groups (one per retention period in use, two
    // when an hour boundary passes): a linear search is enough.
    const expiry_key key = expiry_key_of(v.at_ms, v.expires_ms);
    for (auto& g : expiry_groups_) {
        if (g.days == key.days && g.bucket == key.bucket) {
            g.first_seq = std::min(g.first_seq, v.seq);
            g.last_seq = std::max(g.last_seq, v.seq);
            return;
        }
    }
    expiry_groups_.push_back({key.days, key.bucket, v.seq, v.seq});
}

void audit_log::move_anchor(const item& it) {
    // In the transaction of the retention record that states the new anchor: a crash leaves
    // either both or neither.
    put_anchor(*db_, it.anchor_seq, it.anchor_hash, it.now_ms);
    db_->cached("DELETE FROM audit_records WHERE seq <= ?").bind(1, it.anchor_seq).run();
}

std::array<unsigned char, gcm_sealer::NONCE_BYTES> audit_log::next_nonce() {
    std::array<unsigned char, gcm_sealer::NONCE_BYTES> n{};
    for (int i = 0; i < 4; ++i) n[i] = static_cast<unsigned char>(nonce_epoch_ >> (24 - 8 * i));
    const std::uint64_t c = nonce_counter_++;
    for (int i = 0; i < 8; ++i) n[4 + i] = static_cast<unsigned char>(c >> (56 - 8 * i));
    return n;
}

audit_log::subject_entry::~subject_entry() { OPENSSL_cleanse(key.data(), key.size()); }

void audit_log::forget_keys() {
    subjects_.for_each([](std::string_view, const subject_entry& entry) {
        OPENSSL_cleanse(const_cast<unsigned char*>(entry.key.data()), entry.key.size());
    });
    subjects_ = subject_table<subject_entry>();
}

const audit_log::subject_entry& audit_log::subject_for(const std::string& subject) {
    if (const subject_entry* known = subjects_.find(subject)) return *known;
    if (subjects_.size() >= KEY_CACHE_LIMIT) forget_keys();
    const std::string ref = keys_->subject_ref(subject);
    data_key key{};
    if (!find_key_)
        find_key_ = std::make_unique<sqlite_statement>(db_->handle(), "SELECT wrapped FROM audit_subject_keys WHERE ref = ?");
    auto& find = *find_key_;
    find.bind(1, ref);
    bool have_key = false;
    if (find.step()) {
        const std::string wrapped = find.blob(0);
        find.reset();
        try {
            key = keys_->unwrap(wrapped, ref);
            have_key = true;
        } catch (const audit_keys::key_not_opened&) {
            // A key row edited or damaged must not stop the trail (the batch would be retried for
            // ever, and under the block policy the broker would refuse every publish).
            problem("the data key stored for subject reference " + ref +
                    " cannot be opened (its row was edited or damaged): what was sealed under it stays unreadable, "
                    "and new records are sealed under a new key (run gdprctl verify)");
        }
    } else {
        find.reset();
    }
    if (!have_key) {
        key = keys_->new_data_key();
        if (!insert_key_)
            insert_key_ = std::make_unique<sqlite_statement>(
                db_->handle(), "INSERT OR REPLACE INTO audit_subject_keys(ref, wrapped, created_ms) VALUES (?, ?, ?)");
        insert_key_->bind(1, ref).bind_blob(2, keys_->wrap(key, ref)).bind(3, wall_ms()).run();
    }
    subject_entry& entry = subjects_[subject];
    const std::string raw = ref_bytes(ref);
    std::copy(raw.begin(), raw.end(), entry.raw.begin());
    entry.key = key;
    OPENSSL_cleanse(key.data(), key.size());
    return entry;
}

void audit_log::plan_shred(item& it) {
    const std::string ref = keys_->subject_ref(it.subject);
    if (subject_entry* known = subjects_.find(it.subject)) {
        OPENSSL_cleanse(known->key.data(), known->key.size());
        subjects_.erase(it.subject);
    }
    auto& del = db_->cached("DELETE FROM audit_subject_keys WHERE ref = ?");
    del.bind(1, ref).run();
    const bool found = db_->changes() > 0;
    // The record names the reference, never the subject id.
    it.record = audit_record{};
    it.record.at_ms = wall_ms();
    it.record.kind = audit_kind::key_shredded;
    it.record.detail =
        nlohmann::json{{"subject_ref", ref}, {"key_existed", found}, {"shred_mac", keys_->shred_mac(it.seq, ref, found)}}
            .dump();
    // GDPR Art. 5(2): the record explains why the subject's sealed parts no longer open, so it
    // expires after every record written before it, in a later hour of expiry (the sweeper goes
    // hour by hour), also when the clock was set back since they were written.
    // (A value edited by hand beyond any clock's reach counts as now.)
    const std::int64_t last_bucket = std::max<std::int64_t>(latest_record_expiry_ms_, 0) / EXPIRY_BUCKET_MS;
    const std::int64_t after_ms = last_bucket < std::numeric_limits<std::int64_t>::max() / EXPIRY_BUCKET_MS - 1
                                      ? (last_bucket + 1) * EXPIRY_BUCKET_MS
                                      : std::numeric_limits<std::int64_t>::max();
    const std::int64_t at_ms = std::max<std::int64_t>(it.record.at_ms, 0);
    const std::int64_t days_needed =
        after_ms > at_ms ? (after_ms - at_ms) / DAY_MS + ((after_ms - at_ms) % DAY_MS != 0) : 0;
    it.record.retention_days = static_cast<std::int32_t>(
        std::max<std::int64_t>(options_.default_retention_days, std::min(days_needed, MAX_RETENTION_DAYS)));
}

void audit_log::do_sweep(std::int64_t now_ms, std::int64_t through_seq) {
    // GDPR Art. 5(1)(e): content past its retention goes; its digest stays so the chain verifies.
    // One step does a bounded amount of work and queues the next step behind the records that
    // arrived meanwhile, so a large sweep never holds up the queue (or, under the block policy,
    // the broker).
    std::vector<expiry_group> due;
    {
        // Groups whose hour of expiry has begun: some or all of their records have expired.
        auto& groups = db_->cached(
            "SELECT days, bucket, first_seq, last_seq FROM audit_expiry WHERE bucket <= ? AND first_seq <= ?"
            " ORDER BY bucket, days");
        groups.bind(1, now_ms / EXPIRY_BUCKET_MS).bind(2, through_seq);
        while (groups.step()) due.push_back({groups.integer(0), groups.integer(1), groups.integer(2), groups.integer(3)});
        groups.reset();
    }
    std::size_t tombstoned_now = 0;
    bool more = false;  // a limit ended the step: the next one goes on
    std::vector<std::int64_t> held = held_statements_;
    const bool release_held =
        std::any_of(held.begin(), held.end(), [&](std::int64_t seq) { return seq != anchor_statement_seq_; });
    if (!due.empty() || release_held) {
        sqlite_transaction tx(*db_);
        auto& tomb = db_->cached(
            "UPDATE audit_records SET digest = ?, session = NULL, client_id = NULL, schema = NULL, detail = NULL,"
            " payload = NULL, sealed = NULL WHERE seq = ?");
        const auto tombstone = [&](const stored_record& r) {
            tomb.bind_blob(1, as_bytes(content_digest(r))).bind(2, r.seq).run();
            ++tombstoned_now;
        };
        auto& hold = db_->cached("INSERT OR REPLACE INTO audit_meta(key, value) VALUES ('held:' || ?1, ?1)");
        auto& unhold = db_->cached("DELETE FROM audit_meta WHERE key = 'held:' || ?");
        auto& one = db_->cached(std::string("SELECT ") + AUDIT_RECORD_COLUMNS +
                                " FROM audit_records WHERE seq = ? AND digest IS NULL");
        // A newer record states the anchor now: the old statements may go.
        for (auto h = held.begin(); h != held.end();) {
            if (*h == anchor_statement_seq_) {
                ++h;
                continue;
            }
            one.bind(1, *h);
            std::optional<stored_record> r;
            const bool live = one.step();
            if (live && one.integer(3) <= now_ms) r = read_record_columns(one);
            one.reset();
            if (live && !r) {  // a sweep with an earlier clock than the one that passed it over
                ++h;
                continue;
            }
            if (r) tombstone(*r);
            unhold.bind(1, *h).run();
            h = held.erase(h);
        }
        // Live rows of a group's range in seq order.
        auto& select = db_->cached(std::string("SELECT ") + AUDIT_RECORD_COLUMNS +
                                   " FROM audit_records WHERE seq >= ? AND seq <= ? AND digest IS NULL ORDER BY seq");
        auto& shrink = db_->cached("UPDATE audit_expiry SET first_seq = ? WHERE days = ? AND bucket = ?");
        auto& drop = db_->cached("DELETE FROM audit_expiry WHERE days = ? AND bucket = ?");
        std::vector<stored_record> expired;
        std::size_t scanned = 0;
        for (const expiry_group& g : due) {
            if (more) break;
            const std::int64_t to = std::min(g.last_seq, through_seq);
            // Where the group's live records begin once this step is done.
            std::int64_t first_left = to + 1;
            expired.clear();
            select.bind(1, g.first_seq).bind(2, to);
            while (select.step()) {
                const std::int64_t seq = select.integer(0);
                if (tombstoned_now + expired.size() >= SWEEP_CHUNK || scanned >= SWEEP_SCAN_LIMIT) {
                    first_left = seq;
                    more = true;
                    break;
                }
                ++scanned;
                const std::int64_t expires_ms = select.integer(3);
                const expiry_key key = expiry_key_of(select.integer(1), expires_ms);
                const bool own = key.days == g.days && key.bucket == g.bucket;
                if (expires_ms > now_ms) {
                    // A group's records expire in the order they were written (one retention
                    // period, a clock that does not go back): its first unexpired record ends
                    // the step. Records of other groups in the range are theirs to sweep.
                    if (own) {
                        first_left = seq;
                        break;
                    }
                    continue;
                }
                // The newest record that states the anchor keeps its content until a newer one
                // states it: a crash between this step and the sweep's retention record must
                // leave the anchor stated. It is removed by seq once it no longer is the newest.
                if (seq == anchor_statement_seq_) {
                    if (own && std::find(held.begin(), held.end(), seq) == held.end()) {
                        hold.bind(1, seq).run();
                        held.push_back(seq);
                    }
                    continue;
                }
                expired.push_back(read_record_columns(select));
            }
            select.reset();
            // Tombstoned before the next group is read: groups' ranges overlap.
            for (const auto& r : expired) tombstone(r);
            if (first_left > g.last_seq) drop.bind(1, g.days).bind(2, g.bucket).run();
            else if (first_left > g.first_seq) shrink.bind(1, first_left).bind(2, g.days).bind(3, g.bucket).run();
        }
        tx.commit();
        held_statements_ = std::move(held);
        sweep_tombstoned_ += tombstoned_now;
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.tombstoned += tombstoned_now;
    }
    if (more) return continue_sweep(now_ms, through_seq);  // more to do: next step

    // Rows before the first live record are all tombstones: they go (at most SWEEP_CHUNK per
    // step), and the anchor keeps the hash of the last one so the chain can be checked from there.
    // The move is a retention record of its own (op::anchor), written and applied in one
    // transaction; its commit continues the sweep. The anchor never moves over missing rows: they
    // were removed by hand (or lost), and moving past them would leave verify nothing to report.
    std::int64_t anchor_seq = 0;
    std::string anchor_hash;
    {
        auto& next_rows = db_->cached(
            "SELECT seq, hash, digest IS NULL FROM audit_records WHERE seq > ? ORDER BY seq LIMIT " +
            std::to_string(SWEEP_CHUNK));
        next_rows.bind(1, anchor_seq_);
        for (std::int64_t expected = anchor_seq_ + 1; next_rows.step(); ++expected) {
            if (next_rows.integer(0) != expected || next_rows.integer(2) != 0) break;  // a hole, or a live record
            anchor_seq = expected;
            anchor_hash = next_rows.blob(1);
        }
        next_rows.reset();
    }
    const std::uint64_t tombstoned = sweep_tombstoned_;
    // anchor_seq_ is the anchor as of the last record queued: records queued from now on are
    // committed with or after it, so they state it, and overlapping sweeps do not move it twice.
    const bool moves = anchor_seq > anchor_seq_;
    if (!moves && tombstoned == 0) return;
    sweep_tombstoned_ = 0;
    nlohmann::json detail{{"tombstoned", tombstoned}, {"swept_at_ms", now_ms}};
    // Every retention record states the anchor (the new one when it moves it): verify checks it.
    if (moves) {
        anchor_seq_ = anchor_seq;
        anchor_hash_ = anchor_hash;
        anchor_unstated_ = false;  // a move over rows the trail holds: stated from now on
    }
    if (anchor_seq_ > 0 && (!anchor_unstated_ || anchor_disputed_)) {
        detail["anchor_seq"] = anchor_seq_;
        detail["anchor_hash"] = to_hex(anchor_hash_);
        // An anchor moved on from a disputed one is not vouched for either: the records removed
        // before the disputed anchor stay in question (verify reports each such statement).
        if (anchor_disputed_) detail["anchor_disputed"] = "moved on from an anchor the audit key file does not authenticate";
        else detail["anchor_mac"] = keys_->anchor_mac(anchor_seq_, anchor_hash_);
    }
    // Stated here too: a sweep that removes the oldest writer_started records writes one.
    detail["shreds_authenticated_from"] = shreds_authenticated_from_;
    item it;
    it.what = moves ? item::op::anchor : item::op::record;
    it.record.at_ms = wall_ms();
    it.record.kind = audit_kind::retention;
    it.record.detail = detail.dump();
    it.now_ms = now_ms;
    it.anchor_seq = anchor_seq;
    it.anchor_hash = std::move(anchor_hash);
    it.sweep_through = through_seq;
    it.states_anchor = detail.contains("anchor_seq");
    std::lock_guard<std::mutex> lock(mutex_);
    mark_gap_locked();  // a hole is declared where it happened, before this record
    it.seq = next_seq_++;
    push_locked(std::move(it));
    wake_writer_.notify_one();
}

} // namespace gdpr
