#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
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

TEST_CASE("a background thread is named and yields to the broker thread", "[threads]") {
    const int before = getpriority(PRIO_PROCESS, 0);
    thread_facts seen;
    std::thread([&] {
        gdpr::become_background_thread("gdpr-a-rather-long-name");
        seen = facts_of_self();
    }).join();
    CHECK(seen.name == "gdpr-a-rather-l");  // Linux keeps 15 bytes
    CHECK(seen.nice == std::max(before, gdpr::BACKGROUND_NICE));  // a test run under nice stays there
    CHECK(seen.policy == SCHED_BATCH);
    CHECK(getpriority(PRIO_PROCESS, 0) == before);  // the calling thread keeps its priority
}

TEST_CASE("a thread already nicer than the background level is not raised", "[threads]") {
    thread_facts seen;
    std::thread([&] {
        setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), std::max(15, getpriority(PRIO_PROCESS, 0)));
        gdpr::become_background_thread("gdpr-nicer");
        seen = facts_of_self();
    }).join();
    CHECK(seen.nice >= 15);
}

TEST_CASE("the audit writer's and the storage worker's threads are background threads", "[threads][audit]") {
    test_support::temp_dir dir;
    gdpr::audit_options o;
    o.path = (dir.path() / "audit.db").string();
    auto log = gdpr::audit_log::open(o, std::make_shared<gdpr::audit_keys>(std::string(32, 'k')));
    auto worker = std::make_unique<gdpr::storage_worker>(std::make_unique<gdpr::sqlite_db>((dir.path() / "w.db").string()));
    worker->wait_idle();
    REQUIRE(log->flush());
    // Each thread names itself when it starts: give the last one a moment.
    auto threads = threads_by_name();
    for (int i = 0; i < 200 && threads.count("gdpr-checkpoint") == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        threads = threads_by_name();
    }
    for (const char* name : {"gdpr-audit", "gdpr-seal", "gdpr-checkpoint", "gdpr-store"}) {
        INFO(name);
        const auto it = threads.find(name);
        REQUIRE(it != threads.end());
        CHECK(it->second.nice >= gdpr::BACKGROUND_NICE);
        CHECK(it->second.policy == SCHED_BATCH);
    }
}
