#include <catch2/catch.hpp>

#include <algorithm>

#include <sqlite3.h>

#include <map>
#include <random>
#include <thread>
#include <chrono>

#include "gdpr/consent_store.hpp"
#include "gdpr/sqlite.hpp"
#include "test_support.hpp"

namespace {

gdpr::purpose_registry purposes() {
    gdpr::purpose_registry r;
    r.add({"ops", gdpr::lawful_basis::contract, ""});
    r.add({"analytics", gdpr::lawful_basis::consent, ""});
    r.add({"marketing", gdpr::lawful_basis::consent, ""});
    return r;
}

// Applies queued changes and runs their completions, as the broker's tick would.
void settle(gdpr::consent_store& s) {
    s.wait_idle();
    s.drain();
}

} // namespace

TEST_CASE("consent is applied at once, persisted with history, and survives a reopen", "[consent]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    {
        auto store = gdpr::consent_store::open(path, reg);
        CHECK(store->consent_bit("analytics") == 0);
        CHECK(store->consent_bit("marketing") == 1);
        CHECK(store->consent_bit("ops") == -1);
        CHECK(store->granted_mask("D-1") == 0);
        std::vector<std::string> results;
        auto record = [&](const std::string& e) { results.push_back(e.empty() ? "ok" : e); };
        store->set_consent("D-1", "analytics", true, "client:op", "form#1", record);
        CHECK(store->granted_mask("D-1") == 0);  // a grant counts once it is durable
        store->set_consent("D-1", "marketing", true, "client:op", "", record);
        store->set_consent("D-2", "analytics", true, "client:op", "", record);
        settle(*store);
        CHECK(store->granted_mask("D-1") == 3);
        store->set_consent("D-2", "analytics", false, "username:dpo", "letter 2026-11-20", record);
        CHECK(store->granted_mask("D-2") == 0);  // a withdrawal counts at once
        settle(*store);
        CHECK(results == std::vector<std::string>{"ok", "ok", "ok", "ok"});
        CHECK(store->granted_purposes("D-1") == std::vector<std::string>{"analytics", "marketing"});
        CHECK(store->subjects_with_consent() == 1);

        std::vector<gdpr::consent_event> history;
        store->history("D-2", [&](std::vector<gdpr::consent_event> h, const std::string& error) {
            CHECK(error.empty());
            history = std::move(h);
        });
        settle(*store);
        REQUIRE(history.size() == 2);
        CHECK(history[0].granted);
        CHECK_FALSE(history[1].granted);
        CHECK(history[1].operator_id == "username:dpo");
        CHECK(history[1].evidence == "letter 2026-11-20");
        CHECK(history[0].seq < history[1].seq);
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->granted_mask("D-1") == 3);
    CHECK(reopened->granted_mask("D-2") == 0);
}

TEST_CASE("device bindings are many-to-many and persist", "[consent][bindings]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    {
        auto store = gdpr::consent_store::open(path, reg);
        CHECK(store->subjects_bound_to("sensor-1") == nullptr);
        CHECK(store->bind("sensor-1", "A", "client:op", nullptr));
        CHECK(store->bind("sensor-1", "B", "client:op", nullptr));
        CHECK(store->bind("sensor-2", "A", "client:op", nullptr));
        settle(*store);
        CHECK_FALSE(store->bind("sensor-1", "A", "client:op", nullptr));
        REQUIRE(store->subjects_bound_to("sensor-1") != nullptr);
        CHECK(*store->subjects_bound_to("sensor-1") == std::vector<std::string>{"A", "B"});
        CHECK(store->bindings("", "A").size() == 2);
        CHECK(store->bindings("sensor-1", "").size() == 2);
        CHECK(store->unbind("sensor-2", "A", "client:op", nullptr));
        settle(*store);
        CHECK_FALSE(store->unbind("sensor-2", "A", "client:op", nullptr));
        CHECK(store->subjects_bound_to("sensor-2") == nullptr);
        settle(*store);
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->binding_count() == 2);
    CHECK(*reopened->subjects_bound_to("sensor-1") == std::vector<std::string>{"A", "B"});
    // The history of bindings is kept too.
    gdpr::sqlite_db db(path);
    gdpr::sqlite_statement q(db.handle(), "SELECT COUNT(*) FROM binding_events");
    REQUIRE(q.step());
    CHECK(q.integer(0) == 4);
}

TEST_CASE("the database carries a schema version and refuses a newer one", "[consent]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    gdpr::consent_store::open(path, reg);
    {
        gdpr::sqlite_db db(path);
        gdpr::sqlite_statement q(db.handle(), "SELECT version FROM schema_version WHERE component = 'consent'");
        REQUIRE(q.step());
        CHECK(q.integer(0) == gdpr::consent_store::SCHEMA_VERSION);
        db.exec("UPDATE schema_version SET version = 99 WHERE component = 'consent'");
    }
    CHECK_THROWS_WITH(gdpr::consent_store::open(path, reg), Catch::Contains("written by a newer version"));
    CHECK_THROWS_AS(gdpr::consent_store::open((dir.path() / "missing-dir" / "x.db").string(), reg), gdpr::storage_error);
}

TEST_CASE("the subject table finds, inserts and erases under heavy collision and growth", "[consent]") {
    gdpr::subject_table<int> t;
    std::map<std::string, int> reference;
    std::mt19937 rng(42);
    for (int step = 0; step < 20000; ++step) {
        const std::string key = "S-" + std::to_string(rng() % 3000) + (rng() % 7 == 0 ? std::string(20, 'x') : "");
        switch (rng() % 3) {
        case 0:
            t[key] = step;
            reference[key] = step;
            break;
        case 1:
            CHECK(t.erase(key) == (reference.erase(key) == 1));
            break;
        default: {
            const int* v = t.find(key);
            auto it = reference.find(key);
            REQUIRE((v != nullptr) == (it != reference.end()));
            if (v) CHECK(*v == it->second);
        }
        }
    }
    CHECK(t.size() == reference.size());
    std::size_t seen = 0;
    t.for_each([&](std::string_view k, int v) {
        ++seen;
        CHECK(reference.at(std::string(k)) == v);
    });
    CHECK(seen == reference.size());
}

namespace {
// A persistent trigger makes chosen writes fail, on every connection, like a full disk would.
void add_failure(const std::string& path, const std::string& name, const std::string& when) {
    gdpr::sqlite_db db(path);
    db.exec("CREATE TRIGGER " + name + " BEFORE INSERT ON consent_events WHEN " + when +
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
}
void remove_failure(const std::string& path, const std::string& name) {
    gdpr::sqlite_db db(path);
    db.exec("DROP TRIGGER " + name);
}
// The failure is gone: the withdrawals waiting are retried, and written.
void recover(gdpr::consent_store& store, const std::string& path, const std::string& failure) {
    remove_failure(path, failure);
    store.retry_pending();
    settle(store);
}
// Everything the file holds of the subject's consent, in order.
std::vector<gdpr::consent_event> history_of(gdpr::consent_store& store, const std::string& subject) {
    std::vector<gdpr::consent_event> events{gdpr::consent_event{}};  // replaced by the answer
    store.history(subject, [&](std::vector<gdpr::consent_event> e, const std::string&) { events = std::move(e); });
    settle(store);
    return events;
}
// D-1 has consented to analytics; from now on, writes of consent events matching `when` fail.
void consented_then_failing(const std::string& path, const gdpr::purpose_registry& reg, const std::string& name,
                            const std::string& when) {
    {
        auto store = gdpr::consent_store::open(path, reg);
        store->set_consent("D-1", "analytics", true, "op", "", nullptr);
        settle(*store);
    }
    add_failure(path, name, when);
}
// Erasures fail (trigger "fail_erase") until remove_failure.
void fail_erasures(const std::string& path) {
    gdpr::sqlite_db db(path);
    db.exec("CREATE TRIGGER fail_erase BEFORE DELETE ON consent_current BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
}
// D-1 withdraws consent to analytics by phone, then confirms it by letter; neither can be written.
void two_withdrawals_waiting(gdpr::consent_store& store) {
    store.set_consent("D-1", "analytics", false, "op", "phone call", nullptr);
    settle(store);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a later time stamp
    store.set_consent("D-1", "analytics", false, "op", "letter", nullptr);
    settle(store);
    REQUIRE(store.pending_withdrawals() == 2);
}
} // namespace

TEST_CASE("a grant counts only once it is durable, and an older failure cannot undo a newer grant", "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    gdpr::consent_store::open(path, reg);
    add_failure(path, "fail_boom", "NEW.evidence = 'boom'");
    auto store = gdpr::consent_store::open(path, reg);
    std::vector<std::string> results;
    auto record = [&](const std::string& e) { results.push_back(e); };

    store->set_consent("D-1", "analytics", true, "op", "boom", record);
    CHECK(store->granted_mask("D-1") == 0);  // not before it is durable
    settle(*store);
    REQUIRE(results.size() == 1);
    CHECK(results[0].find("injected failure") != std::string::npos);
    CHECK(store->granted_mask("D-1") == 0);

    results.clear();
    store->set_consent("D-1", "analytics", true, "op", "boom", record);  // fails ...
    store->set_consent("D-1", "analytics", true, "op", "form#2", record);  // ... the newer one does not
    settle(*store);
    CHECK(results[0].find("injected failure") != std::string::npos);
    CHECK(results[1].empty());
    CHECK(store->granted_mask("D-1") == 1);

    results.clear();
    store->set_consent("D-1", "analytics", false, "op", "", record);  // withdrawal overtakes ...
    store->set_consent("D-1", "analytics", true, "op", "late", record);
    store->set_consent("D-1", "analytics", false, "op", "again", record);  // ... a grant in between
    settle(*store);
    CHECK(store->granted_mask("D-1") == 0);
}

TEST_CASE("a withdrawal that cannot be written stays in force and is retried", "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    consented_then_failing(path, reg, "fail_withdraw", "NEW.granted = 0");
    {
        auto store = gdpr::consent_store::open(path, reg);
        REQUIRE(store->granted_mask("D-1") == 1);
        std::string result;
        store->set_consent("D-1", "analytics", false, "op", "", [&](const std::string& e) { result = e; });
        CHECK(store->granted_mask("D-1") == 0);  // at once
        settle(*store);
        CHECK(result.find("in force but could not be recorded yet") != std::string::npos);
        CHECK(store->pending_withdrawals() == 1);
        CHECK(store->granted_mask("D-1") == 0);
        store->retry_pending();
        settle(*store);
        CHECK(store->pending_withdrawals() == 1);  // still failing: still pending
        recover(*store, path, "fail_withdraw");
        CHECK(store->pending_withdrawals() == 0);
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->granted_mask("D-1") == 0);  // the withdrawal survived the restart
}

TEST_CASE("a withdrawal retried after a newer grant goes into the history only", "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    consented_then_failing(path, reg, "fail_withdraw", "NEW.granted = 0");
    {
        auto store = gdpr::consent_store::open(path, reg);
        store->set_consent("D-1", "analytics", false, "op", "", nullptr);
        settle(*store);
        REQUIRE(store->pending_withdrawals() == 1);
        remove_failure(path, "fail_withdraw");
        // The subject consents again before the withdrawal is retried: the grant is the newer change.
        std::string answer = "unanswered";
        store->set_consent("D-1", "analytics", true, "op", "form#3", [&](const std::string& e) { answer = e; });
        store->retry_pending();  // while the grant is being written: it waits for the grant's outcome
        settle(*store);
        CHECK(answer.empty());
        CHECK(store->granted_mask("D-1") == 1);
        store->retry_pending();
        settle(*store);
        CHECK(store->pending_withdrawals() == 0);
        CHECK(store->granted_mask("D-1") == 1);
        const auto events = history_of(*store, "D-1");
        // In the order they happened: granted, withdrawn, granted again.
        REQUIRE(events.size() == 3);
        CHECK(events[0].granted);
        CHECK_FALSE(events[1].granted);
        CHECK(events[2].granted);
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->granted_mask("D-1") == 1);  // the file says what memory said
}

TEST_CASE("of two withdrawals waiting to be retried, the newer is the current state and the older goes into the history",
          "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    consented_then_failing(path, reg, "fail_withdraw", "NEW.granted = 0");
    auto store = gdpr::consent_store::open(path, reg);
    two_withdrawals_waiting(*store);
    recover(*store, path, "fail_withdraw");
    CHECK(store->pending_withdrawals() == 0);
    const auto events = history_of(*store, "D-1");
    REQUIRE(events.size() == 3);
    CHECK(events[1].evidence == "phone call");
    CHECK(events[2].evidence == "letter");
    gdpr::sqlite_db db(path);
    gdpr::sqlite_statement current(db.handle(), "SELECT granted, event_seq, at_ms FROM consent_current WHERE subject = 'D-1'");
    REQUIRE(current.step());
    CHECK(current.integer(0) == 0);
    CHECK(current.integer(1) == events[2].seq);
    CHECK(current.integer(2) == events[2].at_ms);
}

TEST_CASE("withdrawals waiting while a newer grant is written all wait for it, and the grant stands", "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    consented_then_failing(path, reg, "fail_withdraw", "NEW.granted = 0");
    {
        auto store = gdpr::consent_store::open(path, reg);
        two_withdrawals_waiting(*store);
        remove_failure(path, "fail_withdraw");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        std::vector<std::string> observed;
        store->observe([&](std::string_view change, const std::string&, const std::string&, const std::string&) {
            observed.emplace_back(change);
        });
        std::string answer = "unanswered";
        store->set_consent("D-1", "analytics", true, "op", "form#4", [&](const std::string& e) { answer = e; });
        store->retry_pending();  // while the grant is being written: neither withdrawal may start
        settle(*store);
        CHECK(answer.empty());
        CHECK(store->granted_mask("D-1") == 1);
        CHECK(observed == std::vector<std::string>{"consent_granted"});  // recorded in the audit trail
        store->retry_pending();
        settle(*store);
        CHECK(store->pending_withdrawals() == 0);
        CHECK(store->granted_mask("D-1") == 1);
        const auto events = history_of(*store, "D-1");
        REQUIRE(events.size() == 4);
        CHECK(events[1].evidence == "phone call");
        CHECK(events[2].evidence == "letter");
        CHECK(events[3].evidence == "form#4");
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->granted_mask("D-1") == 1);  // the file says what memory said
}

TEST_CASE("a withdrawal waiting to be retried still applies when the newer grant could not be written either",
          "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    consented_then_failing(path, reg, "fail_all", "1");
    {
        auto store = gdpr::consent_store::open(path, reg);
        store->set_consent("D-1", "analytics", false, "op", "", nullptr);
        settle(*store);
        std::string answer;
        store->set_consent("D-1", "analytics", true, "op", "", [&](const std::string& e) { answer = e; });
        settle(*store);
        CHECK_THAT(answer, Catch::Contains("not recorded"));
        CHECK(store->granted_mask("D-1") == 0);  // the withdrawal stays in force
        recover(*store, path, "fail_all");
        CHECK(store->pending_withdrawals() == 0);
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->granted_mask("D-1") == 0);  // and it survived the restart (GDPR Art. 7(3))
}

TEST_CASE("a withdrawal and a newer grant that fail together leave the withdrawal to be retried in force",
          "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    consented_then_failing(path, reg, "fail_all", "1");
    {
        auto store = gdpr::consent_store::open(path, reg);
        store->set_consent("D-1", "analytics", false, "op", "", nullptr);
        store->set_consent("D-1", "analytics", true, "op", "", nullptr);  // written with it, failing with it
        settle(*store);
        CHECK(store->granted_mask("D-1") == 0);
        recover(*store, path, "fail_all");
        CHECK(store->pending_withdrawals() == 0);
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->granted_mask("D-1") == 0);  // GDPR Art. 7(3)
}

TEST_CASE("a withdrawal that fails while its subject is erased is not written back afterwards", "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    consented_then_failing(path, reg, "fail_withdraw", "NEW.granted = 0");
    auto store = gdpr::consent_store::open(path, reg);
    store->set_consent("D-1", "analytics", false, "op", "by letter", nullptr);
    store->erase_subject("D-1", "op", nullptr);  // GDPR Art. 17, while the withdrawal is being written
    settle(*store);
    recover(*store, path, "fail_withdraw");
    CHECK(store->pending_withdrawals() == 0);
    CHECK(history_of(*store, "D-1").empty());
}

TEST_CASE("withdrawals waiting when an erasure fails wait again, and one in flight is kept too", "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    auto reg = purposes();
    reg.add({"ads", gdpr::lawful_basis::consent, ""});
    {
        auto store = gdpr::consent_store::open(path, reg);
        store->set_consent("D-1", "ads", true, "op", "", nullptr);
        settle(*store);
    }
    consented_then_failing(path, reg, "fail_withdraw", "NEW.granted = 0");
    fail_erasures(path);
    {
        auto store = gdpr::consent_store::open(path, reg);
        store->set_consent("D-1", "ads", false, "op", "", nullptr);
        settle(*store);
        REQUIRE(store->pending_withdrawals() == 1);                     // waiting when the erasure is asked for
        store->set_consent("D-1", "analytics", false, "op", "", nullptr);  // in flight when it is
        std::string erase_error;
        store->erase_subject("D-1", "op", [&](const std::string& e, std::int64_t, std::int64_t) { erase_error = e; });
        settle(*store);
        CHECK_FALSE(erase_error.empty());
        CHECK(store->pending_withdrawals() == 2);  // the erasure failed: both wait again
        remove_failure(path, "fail_withdraw");
        remove_failure(path, "fail_erase");
        store->retry_pending();
        settle(*store);
        CHECK(store->pending_withdrawals() == 0);
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->granted_mask("D-1") == 0);  // GDPR Art. 7(3): neither consent came back
}

TEST_CASE("a failed erasure leaves the waiting withdrawals to a second erasure of the subject still in flight",
          "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    consented_then_failing(path, reg, "fail_withdraw", "NEW.granted = 0");
    fail_erasures(path);
    auto store = gdpr::consent_store::open(path, reg);
    store->set_consent("D-1", "analytics", false, "op", "", nullptr);
    settle(*store);
    REQUIRE(store->pending_withdrawals() == 1);
    std::vector<std::string> erase_errors;
    const auto erased = [&](const std::string& e, std::int64_t, std::int64_t) { erase_errors.push_back(e); };
    store->erase_subject("D-1", "op", erased);
    store->wait_idle();  // the first erasure has failed, its answer not yet taken
    remove_failure(path, "fail_erase");
    store->erase_subject("D-1", "op", erased);  // GDPR Art. 17: asked again, and written
    settle(*store);
    REQUIRE(erase_errors.size() == 2);
    CHECK_FALSE(erase_errors[0].empty());
    CHECK(erase_errors[1].empty());
    CHECK(store->pending_withdrawals() == 0);  // nothing left to write the subject back
    recover(*store, path, "fail_withdraw");
    CHECK(history_of(*store, "D-1").empty());
}

TEST_CASE("a grant written while only newer grants are pending is in force even when they fail",
          "[consent][failure]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    gdpr::consent_store::open(path, reg);
    add_failure(path, "fail_boom", "NEW.evidence = 'boom'");
    {
        auto store = gdpr::consent_store::open(path, reg);
        std::vector<std::string> answers;
        store->set_consent("D-1", "analytics", true, "op", "form#1", [&](const std::string& e) { answers.push_back(e); });
        store->set_consent("D-1", "analytics", true, "op", "boom", [&](const std::string& e) { answers.push_back(e); });
        settle(*store);
        REQUIRE(answers.size() == 2);
        CHECK(answers[0].empty());
        CHECK_FALSE(answers[1].empty());
        CHECK(store->granted_mask("D-1") == 1);  // as the file says
        // With a withdrawal between them, the older grant does not count: the withdrawal is newer.
        store->set_consent("D-1", "analytics", true, "op", "form#2", nullptr);
        store->set_consent("D-1", "analytics", false, "op", "letter", nullptr);
        store->set_consent("D-1", "analytics", true, "op", "boom", nullptr);
        settle(*store);
        CHECK(store->granted_mask("D-1") == 0);
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    CHECK(reopened->granted_mask("D-1") == 0);
}

TEST_CASE("binding a pair twice while the first is still being written binds it once, in memory and in the file",
          "[consent][bindings]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    const auto reg = purposes();
    {
        auto store = gdpr::consent_store::open(path, reg);
        std::vector<std::string> answers;
        CHECK(store->bind("van-1", "D-1", "op", [&](const std::string& e) { answers.push_back(e); }));
        CHECK(store->bind("van-1", "D-1", "op", [&](const std::string& e) { answers.push_back(e); }));  // an operator's retry
        settle(*store);
        CHECK(answers == std::vector<std::string>{"", ""});
        REQUIRE(store->subjects_bound_to("van-1"));
        CHECK(*store->subjects_bound_to("van-1") == std::vector<std::string>{"D-1"});
    }
    auto reopened = gdpr::consent_store::open(path, reg);
    REQUIRE(reopened->subjects_bound_to("van-1"));
    CHECK(*reopened->subjects_bound_to("van-1") == std::vector<std::string>{"D-1"});
}

TEST_CASE("the pseudonym index follows consent: built over what is loaded, kept through changes and erasure",
          "[consent]") {
    test_support::temp_dir dir;
    const auto reg = purposes();
    auto store = gdpr::consent_store::open((dir.path() / "gdpr.db").string(), reg);
    store->set_consent("D-1", "analytics", true, "op", "", nullptr);
    store->set_consent("D-2", "marketing", true, "op", "", nullptr);
    settle(*store);
    auto pseudonym = [](std::string_view s) { return "p:" + std::string(s); };
    CHECK(store->granted_mask_by_pseudonym("p:D-1") == 0);  // not indexed yet
    CHECK_FALSE(store->indexes_pseudonyms());
    store->index_pseudonyms(pseudonym);
    CHECK(store->granted_mask_by_pseudonym("p:D-1") == 1);
    CHECK(store->granted_mask_by_pseudonym("p:D-2") == 2);
    CHECK(store->granted_mask_by_pseudonym("D-1") == 0);
    store->set_consent("D-3", "marketing", true, "op", "", nullptr);
    store->set_consent("D-1", "marketing", true, "op", "", nullptr);
    settle(*store);
    CHECK(store->granted_mask_by_pseudonym("p:D-3") == 2);
    CHECK(store->granted_mask_by_pseudonym("p:D-1") == 3);
    store->set_consent("D-1", "analytics", false, "op", "", nullptr);
    CHECK(store->granted_mask_by_pseudonym("p:D-1") == 2);
    store->set_consent("D-1", "marketing", false, "op", "", nullptr);
    CHECK(store->granted_mask_by_pseudonym("p:D-1") == 0);
    store->erase_subject("D-2", "op", nullptr);
    CHECK(store->granted_mask_by_pseudonym("p:D-2") == 0);
    settle(*store);
}

TEST_CASE("a failing pseudonym function leaves no half index and never stops a withdrawal", "[consent][failure]") {
    test_support::temp_dir dir;
    const auto reg = purposes();
    auto store = gdpr::consent_store::open((dir.path() / "gdpr.db").string(), reg);
    store->set_consent("D-1", "analytics", true, "op", "", nullptr);
    store->set_consent("BAD", "analytics", true, "op", "", nullptr);
    settle(*store);
    bool failing = true;
    auto pseudonym = [&failing](std::string_view s) {
        if (failing && s == "BAD") throw std::runtime_error("HMAC failed");
        return "p:" + std::string(s);
    };
    CHECK_THROWS(store->index_pseudonyms(pseudonym));
    CHECK_FALSE(store->indexes_pseudonyms());
    CHECK(store->granted_mask_by_pseudonym("p:D-1") == 0);
    failing = false;
    store->index_pseudonyms(pseudonym);
    CHECK(store->granted_mask_by_pseudonym("p:BAD") == 1);
    const auto before = store->generation();
    failing = true;  // the HMAC fails now: the withdrawal still takes effect, and the index follows
    store->set_consent("BAD", "analytics", false, "op", "", nullptr);
    CHECK(store->granted_mask("BAD") == 0);
    CHECK(store->granted_mask_by_pseudonym("p:BAD") == 0);
    CHECK(store->generation() > before);
    settle(*store);
    CHECK(store->pending_withdrawals() == 0);
}

TEST_CASE("reloaded purposes renumber consent bits, keep every grant, and bring back the grants of a purpose that "
          "rests on consent again",
          "[consent][schema]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    auto store = gdpr::consent_store::open(path, purposes());
    store->set_consent("D-1", "analytics", true, "op", "", nullptr);
    store->set_consent("D-1", "marketing", true, "op", "", nullptr);
    store->set_consent("D-2", "marketing", true, "op", "", nullptr);
    store->set_consent("D-3", "analytics", true, "op", "", nullptr);
    settle(*store);
    auto pseudonym = [](std::string_view s) { return "p:" + std::string(s); };
    store->index_pseudonyms(pseudonym);
    REQUIRE(store->granted_mask("D-2") == 2);

    // "ads" sorts first: every bit moves up by one, and each subject keeps what they consented to.
    auto next = purposes();
    next.add({"ads", gdpr::lawful_basis::consent, ""});
    auto generation = store->generation();
    store->use_purposes(next);
    CHECK(store->generation() > generation);
    CHECK(store->consent_bit("ads") == 0);
    CHECK(store->consent_bit("analytics") == 1);
    CHECK(store->consent_bit("marketing") == 2);
    CHECK(store->granted_mask("D-1") == 6);
    CHECK(store->granted_mask("D-2") == 4);
    CHECK(store->granted_purposes("D-1") == std::vector<std::string>{"analytics", "marketing"});
    CHECK(store->granted_mask_by_pseudonym("p:D-2") == 4);
    generation = store->generation();
    store->use_purposes(next);  // the same purposes: nothing to do
    CHECK(store->generation() == generation);

    // A grant in flight while the purposes change lands on the purpose's bit after the change.
    store->set_consent("D-4", "marketing", true, "op", "", nullptr);
    auto without_analytics = next;
    without_analytics.add({"analytics", gdpr::lawful_basis::legitimate_interests, ""});
    const auto held = store->use_purposes(without_analytics);
    settle(*store);
    CHECK(store->granted_mask("D-4") == 2);
    CHECK(held.held == std::map<std::string, std::size_t>{{"analytics", 2}});
    CHECK(held.revived.empty());

    // analytics no longer rests on consent: its grants stop counting (D-3 had only that one and
    // leaves the index) but are kept.
    CHECK(store->consent_bit("analytics") == -1);
    CHECK(store->granted_mask("D-1") == 2);
    CHECK(store->granted_mask("D-3") == 0);
    CHECK(store->granted_mask_by_pseudonym("p:D-3") == 0);
    CHECK(store->held_grants() == 2);
    CHECK(store->holds("D-3", "analytics"));
    CHECK(store->held_purposes("D-1") == std::vector<std::string>{"analytics"});
    CHECK_THROWS_AS(store->set_consent("D-3", "analytics", true, "op", "", nullptr), std::invalid_argument);
    // An erasure forgets kept grants too (GDPR Art. 17).
    store->erase_subject("D-1", "op", nullptr);
    settle(*store);
    CHECK(store->held_grants() == 1);

    // Back on consent: the grant kept counts again, as it would after a restart.
    CHECK(store->use_purposes(next).revived == std::map<std::string, std::size_t>{{"analytics", 1}});
    CHECK(store->granted_mask("D-3") == 2);
    CHECK(store->granted_mask_by_pseudonym("p:D-3") == 2);
    CHECK(store->granted_mask("D-1") == 0);
    CHECK(store->held_grants() == 0);
    const auto after_reload = store->granted_mask("D-4");

    // A restart under purposes that do not count analytics, then a reload that does: the grant
    // stored on disk comes back the same way.
    store.reset();
    store = gdpr::consent_store::open(path, without_analytics);
    CHECK(store->granted_mask("D-3") == 0);
    CHECK(store->held_grants() == 1);
    store->use_purposes(next);
    CHECK(store->granted_mask("D-3") == 2);
    CHECK(store->granted_mask("D-4") == after_reload);
    settle(*store);
}

TEST_CASE("a purposes reload that cannot be applied changes nothing", "[consent][schema][failure]") {
    test_support::temp_dir dir;
    auto store = gdpr::consent_store::open((dir.path() / "gdpr.db").string(), purposes());
    store->set_consent("D-1", "marketing", true, "op", "", nullptr);
    settle(*store);
    gdpr::purpose_registry too_many = purposes();
    for (int i = 0; i < gdpr::consent_store::MAX_CONSENT_PURPOSES; ++i)
        too_many.add({"p" + std::to_string(100 + i), gdpr::lawful_basis::consent, ""});
    CHECK_THROWS_WITH(store->use_purposes(too_many), Catch::Contains("64"));
    CHECK(store->consent_bit("marketing") == 1);
    CHECK(store->granted_mask("D-1") == 2);

    // A subject gaining their first counted consent needs a pseudonym; if it cannot be computed,
    // the reload changes nothing (no subject is missing from the index).
    auto dormant = purposes();
    dormant.add({"marketing", gdpr::lawful_basis::contract, ""});
    store->use_purposes(dormant);
    CHECK(store->granted_mask("D-1") == 0);
    store->index_pseudonyms([](std::string_view s) -> std::string {
        if (s == "D-1") throw std::runtime_error("HMAC failed");
        return "p:" + std::string(s);
    });
    const auto generation = store->generation();
    CHECK_THROWS(store->use_purposes(purposes()));
    CHECK(store->consent_bit("marketing") == -1);
    CHECK(store->granted_mask("D-1") == 0);
    CHECK(store->held_grants() == 1);
    CHECK(store->generation() == generation);
}

TEST_CASE("a held grant can be withdrawn, and an erasure reaches grants in flight whatever their purpose rests on",
          "[consent][schema]") {
    test_support::temp_dir dir;
    const auto path = (dir.path() / "gdpr.db").string();
    auto store = gdpr::consent_store::open(path, purposes());
    auto without_analytics = purposes();
    without_analytics.add({"analytics", gdpr::lawful_basis::legitimate_interests, ""});
    store->set_consent("D-1", "analytics", true, "op", "", nullptr);
    settle(*store);
    store->use_purposes(without_analytics);
    REQUIRE(store->holds("D-1", "analytics"));

    // GDPR Art. 7(3): withdrawn while held, it does not come back with the purpose, nor at a restart.
    std::string result = "not called";
    store->set_consent("D-1", "analytics", false, "op", "letter", [&](const std::string& e) { result = e; });
    CHECK_FALSE(store->holds("D-1", "analytics"));
    settle(*store);
    CHECK(result.empty());
    CHECK(store->use_purposes(purposes()).revived.empty());
    CHECK(store->granted_mask("D-1") == 0);
    store.reset();
    store = gdpr::consent_store::open(path, purposes());
    CHECK(store->granted_mask("D-1") == 0);
    // Only a held grant can be withdrawn for a purpose that needs no consent.
    CHECK_THROWS_AS(store->set_consent("D-1", "ops", false, "op", "", nullptr), std::invalid_argument);

    // A grant in flight while its purpose leaves consent and comes back, behind a new purpose
    // that takes its old bit, lands on its new bit.
    auto with_ads = purposes();
    with_ads.add({"ads", gdpr::lawful_basis::consent, ""});
    store->set_consent("D-2", "analytics", true, "op", "", nullptr);
    store->use_purposes(without_analytics);
    store->use_purposes(with_ads);
    settle(*store);
    CHECK(store->granted_mask("D-2") == 2);

    // GDPR Art. 17: a grant in flight for a purpose that has left consent is superseded by an
    // erasure; it is neither held nor brought back.
    store->set_consent("D-3", "analytics", true, "op", "", nullptr);
    store->use_purposes(without_analytics);
    store->erase_subject("D-3", "op", nullptr);
    settle(*store);
    CHECK_FALSE(store->holds("D-3", "analytics"));
    store->use_purposes(with_ads);
    CHECK(store->granted_mask("D-3") == 0);
    CHECK(store->granted_mask("D-2") == 2);

    // A grant still being written when its purpose left consent can be withdrawn before it lands.
    store->set_consent("D-4", "analytics", true, "op", "", nullptr);
    store->use_purposes(without_analytics);
    CHECK(store->withdrawable("D-4", "analytics"));
    store->set_consent("D-4", "analytics", false, "op", "", nullptr);
    // Once withdrawn, even before it is written, there is nothing left to withdraw.
    CHECK_FALSE(store->withdrawable("D-4", "analytics"));
    CHECK_THROWS_AS(store->set_consent("D-4", "analytics", false, "op", "", nullptr), std::invalid_argument);
    settle(*store);
    CHECK_FALSE(store->holds("D-4", "analytics"));
    store->use_purposes(with_ads);
    CHECK(store->granted_mask("D-4") == 0);

    // An erasure supersedes only its own subject's changes, even where subject ids hold a NUL.
    const std::string other("D-5\0x", 6);
    store->set_consent(other, "analytics", true, "op", "", nullptr);
    store->erase_subject("D-5", "op", nullptr);
    settle(*store);
    CHECK(store->granted_mask(other) == 2);
}
