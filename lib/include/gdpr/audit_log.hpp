#pragma once
// The audit trail writer. The broker thread appends records (a sequence number is assigned at
// once, so records can refer to each other); a background thread with its own SQLite connection
// seals personal parts per subject, chains and writes them in batched transactions every flush
// period, sweeps expired records, and shreds data keys. Records are never lost silently: the
// queue is bounded and the overflow policy is explicit.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gdpr/audit_chain.hpp"
#include "gdpr/audit_crypto.hpp"
#include "gdpr/audit_record.hpp"
#include "gdpr/audit_sealing.hpp"
#include "gdpr/sqlite.hpp"
#include "gdpr/subject_table.hpp"

namespace gdpr {

// What happens when the queue to the writer is full.
enum class overflow_policy {
    block,  // the appending thread waits for the writer: no record is ever lost
    drop,   // the record is dropped and counted; a `gap` record marks the hole in the chain
};

struct audit_options {
    std::string path;
    std::string synchronous = "NORMAL";
    std::chrono::milliseconds flush_period{200};
    std::size_t queue_limit = 100000;
    overflow_policy overflow = overflow_policy::block;
    std::int32_t default_retention_days = 365;
    std::chrono::seconds sweep_period{3600};
    // How long the write-ahead log may stay untruncated after a shred (a reader holds it open)
    // before it is reported: brief locks of the database's other connections are normal.
    std::chrono::milliseconds wipe_alert_after{10000};
    // Records per transaction: larger ones outgrow SQLite's page cache and spill.
    std::size_t transaction_records = 10000;
};

struct audit_stats {
    std::uint64_t appended = 0;
    std::uint64_t written = 0;
    std::uint64_t dropped = 0;
    std::uint64_t batches = 0;
    std::uint64_t failed_batches = 0;
    std::uint64_t tombstoned = 0;
    std::uint64_t keys_shredded = 0;
    std::size_t queued = 0;
    bool failing = false;
    std::string last_error;
};

class audit_log {
public:
    static constexpr int SCHEMA_VERSION = 4;  // opens versions 1 to 3 and upgrades them

    // Opens (creating when missing) the trail in the database at options.path, reserves a nonce
    // epoch, records `writer_started` and starts the writer. Throws storage_error.
    static std::unique_ptr<audit_log> open(const audit_options& options, std::shared_ptr<const audit_keys> keys);
    // stop(0) unless stopped before.
    ~audit_log();
    // Writes everything appended so far, then stops the writer. A writer that cannot write (disk
    // full, a lock held) is retried for at most `grace`; returns how many records it could not
    // write, which are lost (take_problems() says so too). Nothing may be appended after it.
    std::size_t stop(std::chrono::milliseconds grace);
    audit_log(const audit_log&) = delete;
    audit_log& operator=(const audit_log&) = delete;

    // Appends a record and returns its sequence number; returns 0 when the drop policy dropped it.
    // Under the block policy this waits while the queue is full and the writer is healthy.
    std::int64_t append(audit_record&& record);
    // An empty record to fill and append, reusing the memory of one the writer has finished with,
    // so that recording a publish costs the broker thread no allocation in steady state.
    audit_record blank_record();
    // False when a publish must be refused because it could not be recorded: the block policy,
    // a full queue and a writer that cannot write (disk full, read-only file).
    bool can_record_publish() const;

    // Destroys the data key of `subject` (crypto-shredding, GDPR Art. 17), in order with the
    // records appended before; the key is overwritten in the file (secure_delete + checkpoint).
    // Returns the sequence number of its key_shredded record: the key is gone from the file once
    // shredded_through() reaches it.
    std::int64_t shred_subject(const std::string& subject);
    // The highest sequence number committed to the file.
    std::int64_t committed_through() const { return committed_through_.load(std::memory_order_acquire); }
    // The highest key_shredded record whose key is gone from the database and its write-ahead log
    // (the log truncated after its commit; that waits while a reader holds an older snapshot).
    std::int64_t shredded_through() const { return shredded_through_.load(std::memory_order_acquire); }
    // Tombstones records whose retention ended before `now_ms` and anchors the chain (the writer
    // also does this every sweep_period).
    void sweep(std::int64_t now_ms);
    // Blocks until everything queued is written, follow-up work included, or the writer failed
    // (tests, shutdown; not for use while other threads keep appending).
    // Returns false when the writer is failing.
    bool flush();

    audit_stats stats() const;
    // Problems found by the writer since the last call, for the broker thread to log and alert.
    std::vector<std::string> take_problems();

private:
    struct item {
        // op::anchor: a retention record that moves the chain's anchor in its own transaction,
        // so the anchor is never ahead of the record that states it.
        enum class op : std::uint8_t { record, shred, sweep, anchor } what = op::record;
        std::int64_t seq = 0;
        audit_record record;
        std::string subject;  // op::shred
        std::int64_t now_ms = 0;  // op::sweep, op::anchor
        std::int64_t anchor_seq = 0;  // op::anchor: rows up to here go
        std::string anchor_hash;      // op::anchor
        // op::sweep, op::anchor: the last record the sweep may remove (those appended before it
        // was asked for), so that its own retention records never expire under it.
        std::int64_t sweep_through = 0;
        bool states_anchor = false;  // a retention record that states the anchor
    };

    audit_log(const audit_options& options, std::shared_ptr<const audit_keys> keys);
    void start();
    void run();
    void run_checkpoints();
    void write_batch(std::vector<item>& batch, std::size_t& committed);
    void do_sweep(std::int64_t now_ms, std::int64_t through_seq);
    void continue_sweep(std::int64_t now_ms, std::int64_t through_seq);
    void push_sweep_locked(std::int64_t now_ms, std::int64_t through_seq);
    struct subject_entry {
        std::array<char, ENVELOPE_REF_BYTES> raw{};  // the reference as envelopes carry it
        data_key key{};
        subject_entry() = default;
        subject_entry(const subject_entry&) = default;
        subject_entry& operator=(const subject_entry&) = default;
        // Cleanses the key: also the copies the table leaves behind when it grows.
        ~subject_entry();
    };
    const subject_entry& subject_for(const std::string& subject);
    void plan_chunk(std::vector<item>& batch, std::size_t first, std::size_t count, chunk_plan& plan);
    void insert_chunk(const std::vector<item>& batch, std::size_t first, std::size_t count, const chunk_plan& plan,
                      std::uint64_t& written, std::uint64_t& shredded);
    // Records which expiry group (audit_expiry) an inserted record belongs to.
    void note_expiry(const record_view& v);
    void plan_shred(item& it);
    void move_anchor(const item& it);
    // Truncates the write-ahead log once shredded keys were committed (see shredded_through).
    void wipe_shredded_keys();
    // Counts what a committed chunk wrote, wipes shredded keys from the log, runs its sweeps.
    void after_commit(const std::vector<item>& batch, std::size_t first, std::size_t count, std::uint64_t written,
                      std::uint64_t shredded);
    void forget_keys();
    std::array<unsigned char, gcm_sealer::NONCE_BYTES> next_nonce();
    void push_locked(item&& it);
    // A large batch wakes the writer before the flush period ends; half the queue at most, so
    // the broker never waits for a writer that is still asleep.
    std::size_t wake_threshold() const {
        return std::max<std::size_t>(1, std::min<std::size_t>(10000, options_.queue_limit / 2));
    }
    void mark_gap_locked();
    // Wipes the finished records' personal parts and hands them to spare_.
    void recycle(std::vector<item>& finished);
    void problem(std::string text);

    audit_options options_;
    std::shared_ptr<const audit_keys> keys_;
    std::unique_ptr<sqlite_db> db_;  // writer thread only (after start)
    // Per-record statements, declared after db_ so they are finalized before it closes.
    std::unique_ptr<sqlite_statement> insert_;
    std::unique_ptr<sqlite_statement> find_key_;
    std::unique_ptr<sqlite_statement> insert_key_;

    // Writer-thread state.
    chain_hash head_{};
    chain_hash pending_head_{};
    std::int64_t pending_seq_ = 0;
    std::int64_t anchor_seq_ = 0;
    std::string anchor_hash_;
    bool anchor_unstated_ = false;  // the anchor found at open is stated by no live record
    bool anchor_disputed_ = false;  // ... or by a statement the key file does not authenticate
    bool anchor_inherited_ = false;  // stated at open without authentication, taken as it is
    std::int64_t anchor_statement_seq_ = 0;  // the newest committed record that states the anchor
    std::int64_t shreds_authenticated_from_ = 1;  // key_shredded records from here on carry shred_mac
    std::int64_t latest_record_expiry_ms_ = 0;    // of the records planned so far, shreds left out
    // Expired statements that a sweep had to pass over while each was the newest: their expiry
    // groups have moved past them, so later sweeps remove them by seq (kept in audit_meta).
    std::vector<std::int64_t> held_statements_;
    std::uint64_t sweep_tombstoned_ = 0;  // across the steps of the sweep in progress
    std::uint32_t nonce_epoch_ = 0;
    std::uint64_t nonce_counter_ = 0;
    // References and data keys by subject id, so a record costs one lookup (no HMAC, no key
    // table read).
    subject_table<subject_entry> subjects_;
    struct expiry_group {
        std::int64_t days = 0;    // retention period
        std::int64_t bucket = 0;  // hour of expiry (expires_ms / EXPIRY_BUCKET_MS)
        std::int64_t first_seq = 0;
        std::int64_t last_seq = 0;
    };
    std::vector<expiry_group> expiry_groups_;  // of the chunk being inserted
    std::array<chunk_plan, 2> plans_;  // the chunk being inserted and the one being sealed
    std::chrono::steady_clock::time_point next_sweep_{};

    mutable std::mutex mutex_;
    std::condition_variable wake_writer_;
    std::condition_variable space_;
    std::condition_variable progress_;
    std::vector<item> queue_;
    // Records the writer has finished with, wiped, for blank_record(): the broker thread fills
    // them again instead of allocating memory that the writer thread would then free (at most
    // one wake-up batch is kept).
    std::vector<audit_record> spare_;
    std::int64_t next_seq_ = 1;
    std::uint64_t pushed_ = 0;  // items queued so far
    std::uint64_t done_ = 0;    // items written (a flush waits for done_ to reach pushed_)
    std::uint64_t dropped_unmarked_ = 0;
    bool flush_requested_ = false;
    bool stopping_ = false;
    std::chrono::steady_clock::time_point stop_deadline_{};  // with stopping_: retry until then
    std::size_t unwritten_at_stop_ = 0;
    std::atomic<bool> failing_{false};
    std::atomic<std::int64_t> committed_through_{0};
    std::atomic<std::int64_t> shredded_through_{0};
    std::int64_t unwiped_shred_seq_ = 0;  // writer thread: the newest shred committed
    bool wipe_failing_ = false;           // writer thread: reported as failing
    std::chrono::steady_clock::time_point wipe_failing_since_{};  // writer thread; epoch: not failing
    audit_stats stats_;
    std::vector<std::string> problems_;
    std::thread::id writer_id_{};
    std::unique_ptr<sealing_stage> sealing_;  // declared before thread_: outlives the writer
    std::thread thread_;
    std::unique_ptr<sqlite_db> checkpoint_db_;  // the checkpointer's own connection
    std::condition_variable checkpoint_wake_;
    std::thread checkpointer_;
};

// The table layout, created by audit_log::open; shared with the offline reader.
void create_audit_tables(sqlite_db& db);

} // namespace gdpr
