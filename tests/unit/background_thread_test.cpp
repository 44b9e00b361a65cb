#include <catch2/catch.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "gdpr/audit_log.hpp"
#include "gdpr/background_thread.hpp"
#include "gdpr/storage_worker.hpp"
#include "test_support.hpp"

namespace {

struct thread_facts {
    std::string name;
    int nice = 0;
    int policy = -1;  // SCHED_OTHER 0, SCHED_BATCH 3
};

// proc(5): /proc/self/task/<tid>/stat, where field 2 is "(comm)" and may hold spaces.
thread_facts facts_of(const std::filesystem::path& task) {
    thread_facts f;
    std::ifstream(task / "comm") >> f.name;
    std::ifstream stat_file(task / "stat");
    const std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int n = 3; rest >> field; ++n) {
        if (n == 19) f.nice = std::stoi(field);
        if (n == 41) f.policy = std::stoi(field);
    }
    return f;
}

// Every thread of this process, by name (the last one seen for a repeated name).
std::map<std::string, thread_facts> threads_by_name() {
    std::map<std::string, thread_facts> out;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        const thread_facts f = facts_of(task.path());
        out[f.name] = f;
    }
    return out;
}

thread_facts facts_of_self() {
    return facts_of("/proc/self/task/" + std::to_string(::syscall(SYS_gettid)));
}

} // namespace

TEST_CASE("a background thread is named and does not preempt the broker thread on wake-up", "[threads]") {
    const thread_facts caller = facts_of_self();
    thread_facts seen;
    std::thread([&] {
        gdpr::become_background_thread("gdpr-a-rather-long-name");
        seen = facts_of_self();
    }).join();
    CHECK(seen.name == "gdpr-a-rather-l");  // Linux keeps 15 bytes
    if (caller.policy == SCHED_OTHER) CHECK(seen.policy == SCHED_BATCH);
    CHECK(seen.nice == caller.nice);           // the same share of the CPU as the broker thread
    CHECK(facts_of_self().policy == caller.policy);  // the calling thread is left alone
}

TEST_CASE("a thread under SCHED_IDLE keeps it", "[threads]") {
    thread_facts seen;
    int set = -1;
    std::thread([&] {  // no assertions on this thread: Catch2 v2 is not thread-safe
        sched_param none{};
        set = sched_setscheduler(0, SCHED_IDLE, &none);
        gdpr::become_background_thread("gdpr-idle");
        seen = facts_of_self();
    }).join();
    if (set != 0) {
        WARN("SCHED_IDLE is not available here: nothing to check");
        return;
    }
    CHECK(seen.policy == SCHED_IDLE);
}

TEST_CASE("the audit writer's and the storage worker's threads are background threads", "[threads][audit]") {
    // Threads inherit the policy of the thread that starts them; only SCHED_OTHER is changed.
    if (facts_of_self().policy != SCHED_OTHER) {
        WARN("this test runs under a scheduling policy other than SCHED_OTHER: nothing to check");
        return;
    }
    test_support::temp_dir dir;
    gdpr::audit_options o;
    o.path = (dir.path() / "audit.db").string();
    auto log = gdpr::audit_log::open(o, std::make_shared<gdpr::audit_keys>(std::string(32, 'k')));
    auto worker = std::make_unique<gdpr::storage_worker>(std::make_unique<gdpr::sqlite_db>((dir.path() / "w.db").string()));
    bool ran = false;
    worker->submit([&](gdpr::sqlite_db&) { ran = true; }, [](const std::string&) {});
    worker->wait_idle();  // the job ran: the worker's thread has started
    REQUIRE(ran);
    REQUIRE(log->flush());
    const std::vector<std::string> names{"gdpr-audit", "gdpr-seal", "gdpr-checkpoint", "gdpr-store"};
    // Each thread names itself when it starts: give the last one a moment.
    auto threads = threads_by_name();
    const auto all_named = [&] {
        return std::all_of(names.begin(), names.end(), [&](const std::string& n) { return threads.count(n) > 0; });
    };
    for (int i = 0; i < 200 && !all_named(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        threads = threads_by_name();
    }
    for (const auto& name : names) {
        INFO(name);
        const auto it = threads.find(name);
        REQUIRE(it != threads.end());
        CHECK(it->second.policy == SCHED_BATCH);
    }
}
