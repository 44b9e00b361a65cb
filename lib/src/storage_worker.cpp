#include "gdpr/storage_worker.hpp"

#include "gdpr/background_thread.hpp"

namespace gdpr {

namespace {
const char* const internal_error = "internal error while writing";

// Inside a catch block: the text of the exception being handled.
std::string describe_current_exception() {
    try {
        throw;
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return internal_error;
    }
}
} // namespace

storage_worker::storage_worker(std::unique_ptr<sqlite_db> db, std::string thread_name, batching mode)
    : db_(std::move(db)), mode_(mode), thread_([this, name = std::move(thread_name)] {
          become_background_thread(name);
          run();
      }) {}

storage_worker::~storage_worker() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void storage_worker::submit(work_fn work, done_fn done) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(job{std::move(work), std::move(done)});
    }
    wake_.notify_one();
}

void storage_worker::cancel_queued(const std::string& error) {
    std::vector<job> dropped;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        dropped.swap(queue_);
    }
    std::lock_guard<std::mutex> lock(done_mutex_);
    for (auto& j : dropped) completions_.push_back(completion{std::move(j.done), error});
    if (!dropped.empty()) completions_ready_.store(true, std::memory_order_release);
}

std::size_t storage_worker::drain() {
    if (!has_completions()) return 0;
    std::vector<completion> ready;
    {
        std::lock_guard<std::mutex> lock(done_mutex_);
        ready.swap(completions_);
        completions_ready_.store(false, std::memory_order_release);
    }
    for (auto& c : ready) {
        // One failing completion must not cost the others their replies.
        try {
            if (c.done) c.done(c.error);
        } catch (...) {
            ++failed_completions_;
        }
    }
    return ready.size();
}

void storage_worker::wait_idle() {
    std::unique_lock<std::mutex> lock(mutex_);
    idle_.wait(lock, [this] { return queue_.empty() && !busy_; });
}

void storage_worker::run() {
    for (;;) {
        std::vector<job> batch;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty() && stopping_) return;
            batch.swap(queue_);
            busy_ = true;
        }
        std::vector<completion> done;
        try {
            run_batch(batch, done);
        } catch (...) {
            // Out of memory while reporting. In a transaction nothing of the batch was committed;
            // run on their own, the jobs already answered keep their outcome. Every job is
            // answered: its done() may hold a reply an operator waits for.
            const bool committed_one_by_one = mode_ == batching::none;
            for (std::size_t i = 0; i < batch.size(); ++i) {
                if (i < done.size()) {
                    if (!committed_one_by_one) done[i].error = internal_error;
                } else {
                    done.push_back(completion{std::move(batch[i].done), internal_error});
                }
            }
        }
        ++batches_;
        {
            std::lock_guard<std::mutex> lock(done_mutex_);
            for (auto& c : done) completions_.push_back(std::move(c));
            completions_ready_.store(true, std::memory_order_release);
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            busy_ = false;
        }
        idle_.notify_all();
    }
}

void storage_worker::run_batch(std::vector<job>& batch, std::vector<completion>& done) {
    done.reserve(batch.size());
    if (mode_ == batching::none) {
        for (auto& j : batch) {
            std::string error;
            try {
                j.work(*db_);
            } catch (...) {
                error = describe_current_exception();
            }
            done.push_back(completion{std::move(j.done), std::move(error)});
        }
        return;
    }
    std::string batch_error;  // set when the transaction as a whole is lost
    try {
        sqlite_transaction tx(*db_);
        for (auto& j : batch) {
            if (!batch_error.empty()) {
                done.push_back(completion{std::move(j.done), batch_error});
                continue;
            }
            std::string error;
            try {
                db_->exec("SAVEPOINT job");
                j.work(*db_);
                db_->exec("RELEASE job");
            } catch (...) {
                error = describe_current_exception();
                if (db_->in_transaction()) {
                    try {
                        db_->exec("ROLLBACK TO job");
                        db_->exec("RELEASE job");
                    } catch (...) {
                    }
                }
            }
            if (!db_->in_transaction()) {
                // SQLite rolled the whole transaction back (I/O error, disk full, ...): every job
                // of the batch so far is lost too, and the rest must not run outside it.
                batch_error = "the batch was rolled back: " + (error.empty() ? std::string("transaction ended") : error);
                for (auto& c : done) c.error = batch_error;
                done.push_back(completion{std::move(j.done), batch_error});
                continue;
            }
            done.push_back(completion{std::move(j.done), std::move(error)});
        }
        if (batch_error.empty()) tx.commit();
    } catch (...) {
        const std::string error = "could not commit: " + describe_current_exception();
        for (auto& c : done) c.error = error;
        for (std::size_t i = done.size(); i < batch.size(); ++i) done.push_back(completion{std::move(batch[i].done), error});
    }
}

} // namespace gdpr
