#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <optional>
#include <stdexcept>
#include <thread>

#include "gdpr/storage_worker.hpp"
#include "test_support.hpp"

namespace {

// Keeps the worker busy in a job of its own until release(), so that the jobs submitted
// meanwhile are taken as one batch.
class held_worker {
public:
    explicit held_worker(gdpr::storage_worker& worker) {
        std::shared_future<void> released = release_.get_future().share();
        std::promise<void> holding;
        auto held = holding.get_future();
        worker.submit(
            [released, holding = std::make_shared<std::promise<void>>(std::move(holding))](gdpr::sqlite_db&) {
                holding->set_value();
                released.wait();
            },
            [](const std::string&) {});
        held.wait();
    }
    ~held_worker() {
        if (!released_) release_.set_value();
    }
    void release() {
        released_ = true;
        release_.set_value();
    }

private:
    std::promise<void> release_;
    bool released_ = false;
};

struct worker_fixture {
    test_support::temp_dir dir;
    std::string path = (dir.path() / "w.db").string();
    std::unique_ptr<gdpr::storage_worker> worker = [this] {
        auto db = std::make_unique<gdpr::sqlite_db>(path);
        db->exec("CREATE TABLE t (v INTEGER PRIMARY KEY)");
        return std::make_unique<gdpr::storage_worker>(std::move(db));
    }();
    std::vector<std::string> results;

    void insert(int v) {
        worker->submit(
            [v](gdpr::sqlite_db& db) {
                auto& s = db.cached("INSERT INTO t (v) VALUES (?1)");
                s.bind(1, std::int64_t{v});
                s.run();
            },
            [this](const std::string& e) { results.push_back(e.empty() ? "ok" : e); });
    }
    std::int64_t rows() {
        worker->wait_idle();
        gdpr::sqlite_db check(path);
        gdpr::sqlite_statement q(check.handle(), "SELECT COUNT(*) FROM t");
        q.step();
        return q.integer(0);
    }
};

} // namespace

TEST_CASE_METHOD(worker_fixture, "a failing job does not undo its neighbours in the batch", "[storage]") {
    insert(1);
    insert(1);  // primary key violation
    insert(2);
    CHECK(rows() == 2);
    worker->drain();
    REQUIRE(results.size() == 3);
    CHECK(results[0] == "ok");
    CHECK(results[1].find("UNIQUE constraint failed") != std::string::npos);
    CHECK(results[2] == "ok");
}

TEST_CASE_METHOD(worker_fixture, "a batch whose transaction is lost reports every job as failed", "[storage]") {
    // The worker is held in a job of its own until the next three are queued, so that they form
    // one batch; the middle one takes the whole batch's transaction away, as SQLite does after an
    // I/O error.
    held_worker held(*worker);
    insert(10);
    worker->submit([](gdpr::sqlite_db& db) { db.exec("ROLLBACK"); },
                   [this](const std::string& e) { results.push_back(e.empty() ? "ok" : e); });
    insert(11);
    held.release();
    CHECK(rows() == 0);
    worker->drain();
    REQUIRE(results.size() == 3);
    for (const auto& r : results) CHECK(r.find("rolled back") != std::string::npos);
}

TEST_CASE_METHOD(worker_fixture, "a job that throws something other than an exception fails alone, and every job is answered",
                 "[storage]") {
    // Held so that the three jobs form one batch, as in the test above.
    held_worker held(*worker);
    insert(20);
    worker->submit([](gdpr::sqlite_db&) { throw 42; },
                   [this](const std::string& e) { results.push_back(e.empty() ? "ok" : e); });
    insert(21);
    held.release();
    CHECK(rows() == 2);
    worker->drain();
    REQUIRE(results.size() == 3);
    CHECK(results[0] == "ok");
    CHECK(results[1] == "internal error while writing");
    CHECK(results[2] == "ok");
}

TEST_CASE("a reader job that throws something other than an exception is answered, and so are the others", "[storage]") {
    gdpr::storage_worker reader(std::make_unique<gdpr::sqlite_db>(":memory:"), "gdpr-test", gdpr::storage_worker::batching::none);
    std::vector<std::string> results;
    const auto record = [&](const std::string& e) { results.push_back(e.empty() ? "ok" : e); };
    held_worker held(reader);  // so that the next three jobs are taken together
    reader.submit([](gdpr::sqlite_db&) {}, record);
    reader.submit([](gdpr::sqlite_db&) { throw 42; }, record);
    reader.submit([](gdpr::sqlite_db&) {}, record);
    held.release();
    reader.wait_idle();
    reader.drain();
    CHECK(results == std::vector<std::string>{"ok", "internal error while writing", "ok"});
}

TEST_CASE_METHOD(worker_fixture, "a completion that throws does not cost the others their turn", "[storage]") {
    worker->submit([](gdpr::sqlite_db&) {}, [](const std::string&) { throw std::runtime_error("boom"); });
    insert(5);
    worker->wait_idle();
    CHECK(worker->drain() == 2);
    CHECK(results == std::vector<std::string>{"ok"});
    CHECK(worker->failed_completions() == 1);
}

TEST_CASE("databases are private: created 0600, refused when others can read them", "[storage]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "p.db").string();
    { gdpr::sqlite_db db(path); }
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    ::chmod(path.c_str(), 0644);
    CHECK_THROWS_WITH(gdpr::sqlite_db(path), Catch::Contains("accessible by group or others (mode 0644)"));
    CHECK_THROWS_WITH(gdpr::sqlite_db(dir.path().string()), Catch::Contains("is not a regular file"));
    if (::geteuid() != 0) {  // root may write any file
        ::chmod(path.c_str(), 0400);
        CHECK_THROWS_WITH(gdpr::sqlite_db(path), Catch::Contains("for reading and writing: Permission denied"));
    }
}

TEST_CASE("closing a database does not wait its busy timeout behind another connection's transaction", "[storage]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "held.db").string();
    gdpr::sqlite_db holder(path);
    holder.exec("CREATE TABLE t(x)");
    auto closing = std::make_unique<gdpr::sqlite_db>(path);
    closing->exec("INSERT INTO t VALUES (1)");
    holder.exec("BEGIN IMMEDIATE");
    const auto start = std::chrono::steady_clock::now();
    closing.reset();
    const auto waited = std::chrono::steady_clock::now() - start;
    holder.exec("COMMIT");
    // A stopping broker closes several connections in turn: each waiting the busy timeout behind
    // a backup or a shell holding the file made a stop take half a minute.
    CHECK(waited < std::chrono::milliseconds(gdpr::sqlite_db::BUSY_TIMEOUT_MS / 2));
    gdpr::sqlite_statement q(holder.handle(), "SELECT count(*) FROM t");
    REQUIRE(q.step());
    CHECK(q.integer(0) == 1);  // what was committed stays, folded back or not
}

TEST_CASE("a worker on an in-memory database runs jobs off the calling thread and leaves no file", "[storage]") {
    test_support::temp_dir dir;
    struct working_directory {  // where a file named ":memory:" would appear
        std::filesystem::path previous = std::filesystem::current_path();
        explicit working_directory(const std::filesystem::path& p) { std::filesystem::current_path(p); }
        ~working_directory() { std::filesystem::current_path(previous); }
    };
    std::optional<working_directory> in_dir(std::in_place, dir.path());
    std::thread::id ran_on;
    std::string outcome = "not run";
    {
        gdpr::storage_worker worker(std::make_unique<gdpr::sqlite_db>(":memory:"), "gdpr-test",
                                    gdpr::storage_worker::batching::none);
        worker.submit([&](gdpr::sqlite_db&) { ran_on = std::this_thread::get_id(); },
                      [&](const std::string& error) { outcome = error; });
        worker.wait_idle();
        CHECK(worker.drain() == 1);
    }
    in_dir.reset();
    CHECK(outcome.empty());
    CHECK(ran_on != std::this_thread::get_id());
    CHECK(std::filesystem::is_empty(dir.path()));
}
