#pragma once
// The background thread that owns the SQLite connection. The broker thread submits jobs and never
// waits on disk: jobs run in batched transactions (one savepoint each, so one failing job does not
// undo its neighbours), and their completions are handed back to the broker thread, which runs
// them from drain().
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gdpr/sqlite.hpp"

namespace gdpr {

class storage_worker {
public:
    using work_fn = std::function<void(sqlite_db&)>;                 // worker thread; may throw
    using done_fn = std::function<void(const std::string& error)>;   // broker thread; "" on success

    // How the worker runs its jobs: batched in one transaction, a savepoint each (writers), or
    // each on its own, its statements in autocommit mode (readers that keep read transactions
    // short, so that they never hold up the writers' checkpoints for long).
    enum class batching { transaction, none };
    explicit storage_worker(std::unique_ptr<sqlite_db> db, std::string thread_name = "gdpr-store",
                            batching mode = batching::transaction);
    // Finishes every submitted job, then stops the thread. Completions not drained are dropped.
    ~storage_worker();
    storage_worker(const storage_worker&) = delete;
    storage_worker& operator=(const storage_worker&) = delete;

    void submit(work_fn work, done_fn done);
    // Jobs submitted but not started complete with `error` instead of running (shutdown).
    void cancel_queued(const std::string& error);
    // Runs the completions of finished jobs on the calling thread; returns how many ran.
    std::size_t drain();
    // Cheap check for the hot path: are there completions to drain?
    bool has_completions() const { return completions_ready_.load(std::memory_order_acquire); }
    // Blocks until every job submitted so far has run (start-up, shutdown and tests only).
    void wait_idle();

    std::uint64_t batches() const { return batches_.load(); }
    std::uint64_t failed_completions() const { return failed_completions_; }

private:
    struct job {
        work_fn work;
        done_fn done;
    };
    struct completion {
        done_fn done;
        std::string error;
    };
    void run();
    // Appends one completion per job, in order, to `done` (which the caller keeps if it throws).
    void run_batch(std::vector<job>& batch, std::vector<completion>& done);

    std::unique_ptr<sqlite_db> db_;
    batching mode_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable idle_;
    std::vector<job> queue_;
    bool busy_ = false;
    bool stopping_ = false;
    std::mutex done_mutex_;
    std::vector<completion> completions_;
    std::atomic<bool> completions_ready_{false};
    std::atomic<std::uint64_t> batches_{0};
    std::uint64_t failed_completions_ = 0;  // broker thread only
    std::thread thread_;
};

} // namespace gdpr
