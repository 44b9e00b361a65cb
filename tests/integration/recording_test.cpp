// Session recording through a real broker: what is recorded, sealed and exported; a SIGKILL under
// load loses nothing that was flushed; re-authentication on SIGHUP is not a new session; a bad
// audit key refuses start-up. The chain is checked with gdprctl verify, as an auditor would.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "broker_fixture.hpp"
#include "gdpr/audit_reader.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

const std::string TOPIC = "fleet/acme/vehicle/v42/telemetry";
const std::string PAYLOAD = R"({"driver_id":"D-7781","driver_name":"Erika Mustermann","gps":{"lat":48.137154,"lon":11.576124},"speed":50})";

struct recording_setup {
    itest::scratch_dir dir;
    std::string db = (dir.path() / "gdpr.db").string();
    std::string key = dir.write("audit.key", itest::random_bytes(32), 0600);

    itest::broker_options options(std::vector<std::pair<std::string, std::string>> extra = {}) const {
        itest::broker_options o;
        o.plugin_opts = {{"database", db}, {"audit_key_file", key}, {"record_flush_ms", "50"}};
        for (auto& e : extra) {
            auto same = std::find_if(o.plugin_opts.begin(), o.plugin_opts.end(), [&](const auto& p) { return p.first == e.first; });
            if (same != o.plugin_opts.end()) same->second = e.second;
            else o.plugin_opts.push_back(std::move(e));
        }
        return o;
    }
};

// Runs a command; returns its exit status and what it printed.
std::pair<int, std::string> run(const std::string& command) { return itest::run_command(command); }

std::string gdprctl() { return GDPRCTL_PATH; }
// gdprctl talking to `b` as the operator.
std::string gdprctl_on(const itest::broker& b) {
    return gdprctl() + " --port " + std::to_string(b.port()) + " --client-id " + itest::OPERATOR_CLIENT_ID;
}

std::string file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::int64_t count_records(const std::string& db, const std::string& where) {
    gdpr::sqlite_db d(db, gdpr::sqlite_db::read_only);
    gdpr::sqlite_statement q(d.handle(), "SELECT count(*) FROM audit_records WHERE " + where);
    q.step();
    return q.integer(0);
}

} // namespace

TEST_CASE("a subject's export names every client that published or received their data, retained copies included",
          "[integration][recording][export]") {
    recording_setup setup;
    {
        itest::broker b(setup.options());
        itest::client dash(b, "dashboard"), car(b, "car-42"), late(b, "late-viewer");
        dash.connect();
        dash.subscribe("fleet/#", 1);
        car.connect();
        REQUIRE(car.publish(TOPIC, PAYLOAD, 1, true) == 0);
        REQUIRE(dash.next());
        // Subscribing later, it gets the retained copy: no publish record ties that delivery to
        // the driver, the data map does.
        late.connect();
        late.subscribe("fleet/#", 1);
        REQUIRE(late.next());
        b.stop();  // the data map's last holders are written at shutdown
    }
    const auto [status, doc] = run(gdprctl() + " export " + setup.db + " --subject D-7781 --key-file " + setup.key);
    INFO(doc);
    REQUIRE(status == 0);
    const json j = json::parse(doc);
    CHECK(j["recipients"].contains("dashboard"));
    CHECK_FALSE(j["recipients"].contains("late-viewer"));
    const auto names = [](const json& list, const char* key) {
        std::vector<std::string> out;
        for (const auto& h : list) out.push_back(h[key].get<std::string>());
        return out;
    };
    CHECK(names(j["holders"]["publishers"], "client_id") == std::vector<std::string>{"car-42"});
    CHECK(names(j["holders"]["recipients"], "client_id") == std::vector<std::string>{"dashboard", "late-viewer"});
    CHECK(names(j["holders"]["retained_topics"], "topic") == std::vector<std::string>{TOPIC});
    CHECK_FALSE(j["holders"].contains("sealed_retained_topics"));
}

TEST_CASE("a retained topic that names the subject is stored sealed and opened in the subject's export",
          "[integration][recording][export]") {
    recording_setup setup;
    const std::string topic = "health/wearable/u-77/vitals";  // wearable-health: the subject is level 2
    const auto options =
        setup.options({{"pseudonym_key_file", setup.dir.write("pseudonym.key", itest::random_bytes(32), 0600)}});
    {
        itest::broker b(options);
        itest::client watch(b, "watch-1"), op(b, itest::OPERATOR_CLIENT_ID);
        watch.connect();
        op.connect();
        REQUIRE(watch.publish(topic, R"({"heart_rate":61})", 1, true) == 0);
        // Online, through the control API: the same document, read on the broker's export thread.
        json online;
        for (int i = 0; i < 50; ++i) {  // the data map writes its holders at the next tick
            const std::string answer = itest::control_exchange(
                op, json{{"commands", json::array({{{"command", "exportSubject"}, {"subject", "u-77"}}})}}.dump());
            REQUIRE_FALSE(answer.empty());
            online = json::parse(answer)["responses"][0]["data"];
            if (!online["holders"]["retained_topics"].empty()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        INFO(online.dump());
        REQUIRE(online["holders"]["retained_topics"].size() == 1);
        CHECK(online["holders"]["retained_topics"][0]["topic"] == topic);
        b.stop();
    }
    // The file holds the topic sealed: the subject's id is not in it.
    CHECK((file_bytes(setup.db) + file_bytes(setup.db + "-wal")).find("u-77") == std::string::npos);
    const auto [status, doc] = run(gdprctl() + " export " + setup.db + " --subject u-77 --key-file " + setup.key);
    INFO(doc);
    REQUIRE(status == 0);
    const json j = json::parse(doc);
    REQUIRE(j["holders"]["retained_topics"].size() == 1);
    CHECK(j["holders"]["retained_topics"][0]["topic"] == topic);
    CHECK(j["holders"]["publishers"][0]["client_id"] == "watch-1");
    // Another key file finds nothing: it is refused rather than answering that nothing is held.
    const std::string other = setup.dir.write("other.key", itest::random_bytes(32), 0600);
    const auto [status2, doc2] = run(gdprctl() + " export " + setup.db + " --subject u-77 --key-file " + other);
    CHECK(status2 == 5);
    CHECK_THAT(doc2, Catch::Contains("not the one this audit trail was written with"));
    CHECK(doc2.find("retained_topics") == std::string::npos);
}

TEST_CASE("sessions, subscriptions, publishes and deliveries are recorded, personal data only sealed",
          "[integration][recording]") {
    recording_setup setup;
    {
        itest::broker b(setup.options());
        itest::client dash(b, "dashboard");
        dash.connect();
        dash.subscribe("fleet/#", 1);
        itest::client car(b, "car-42");
        car.connect();
        REQUIRE(car.publish(TOPIC, PAYLOAD, 1) == 0);
        REQUIRE(car.publish("fleet/acme/status", R"({"ok":true})", 1) == 0);  // no schema covers it
        REQUIRE(car.publish(TOPIC, "not json", 1) == 135);
        auto msg = dash.next();
        REQUIRE(msg);
        CHECK(msg->to_string().find("Erika") == std::string::npos);
        dash.raw().unsubscribe("fleet/#")->wait();
        car.disconnect();
        dash.disconnect();
        b.stop();
    }
    const auto [status, out] = run(gdprctl() + " verify " + setup.db);
    INFO(out);
    CHECK(status == 0);
    CHECK_THAT(out, Catch::Contains("OK: the chain is intact and complete"));
    // With the key file every sealed part opens under its subject's key; another key file is refused.
    const auto [keyed_status, keyed_out] = run(gdprctl() + " verify " + setup.db + " --key-file " + setup.key);
    INFO(keyed_out);
    CHECK(keyed_status == 0);
    CHECK_THAT(keyed_out, Catch::Contains("OK: the chain is intact and complete"));
    const std::string other_key = setup.dir.write("not-the-key", itest::random_bytes(32), 0600);
    CHECK(run(gdprctl() + " verify " + setup.db + " --key-file " + other_key).first == 5);

    CHECK(count_records(setup.db, "kind = 'session_start'") == 2);
    CHECK(count_records(setup.db, "kind = 'session_end'") == 2);
    CHECK(count_records(setup.db, "kind = 'subscribe' AND json_extract(detail, '$.filter') = 'fleet/#'") == 1);
    CHECK(count_records(setup.db, "kind = 'unsubscribe' AND json_extract(detail, '$.filter') = 'fleet/#'") == 1);
    CHECK(count_records(setup.db, "kind = 'publish' AND schema = 'vehicle-telemetry@3' AND sealed IS NOT NULL") == 1);
    // Each classified publish says where its data is resident, as its schema declared it then.
    CHECK(count_records(setup.db, "kind = 'publish' AND schema = 'vehicle-telemetry@3' AND"
                                  " json_extract(detail, '$.residency') = 'eu'") == 1);
    CHECK(count_records(setup.db, "kind = 'publish' AND json_extract(detail, '$.classified') = 0") == 1);
    CHECK(count_records(setup.db, "kind = 'publish_refused' AND json_extract(detail, '$.reason') = 'not valid JSON'") == 1);
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'dashboard'") == 2);
    // Field names and actions are in clear; values never are.
    CHECK(count_records(setup.db, "kind = 'publish' AND json_extract(detail, '$.fields.\"/driver_name\"') = 'dropped'") == 1);
    const std::string file = file_bytes(setup.db) + file_bytes(setup.db + "-wal");
    CHECK(file.find("D-7781") == std::string::npos);
    CHECK(file.find("Erika") == std::string::npos);
    CHECK(file.find("48.13") == std::string::npos);

    SECTION("the subject's export holds the forwarded data and its recipients") {
        const auto [st, doc] = run(gdprctl() + " export " + setup.db + " --subject D-7781 --key-file " + setup.key);
        INFO(doc);
        REQUIRE(st == 0);
        const json j = json::parse(doc);
        REQUIRE(j["records"].size() == 1);
        const json& rec = j["records"][0];
        CHECK(rec["kind"] == "publish");
        CHECK(rec["data"]["topic"] == TOPIC);
        // As forwarded: no consent for route analytics, so no position; the name dropped.
        CHECK(rec["data"]["payload"]["speed"] == 50);
        CHECK(rec["data"]["payload"].dump().find("lat") == std::string::npos);
        CHECK_FALSE(rec["data"]["payload"].contains("driver_name"));
        CHECK(rec["detail"]["fields"].dump().find("no consent") != std::string::npos);
        CHECK(j["recipients"]["dashboard"]["delivered"] == 1);
        // Another key file cannot read it, and is told so.
        const std::string other = setup.dir.write("other.key", itest::random_bytes(32), 0600);
        const auto [st2, doc2] = run(gdprctl() + " export " + setup.db + " --subject D-7781 --key-file " + other);
        CHECK(st2 == 5);
        CHECK(doc2.find("\"records\"") == std::string::npos);
        // --output: a new private file replaces what was there, a readable file or a link elsewhere.
        const std::string readable = setup.dir.write("export.json", "old", 0644);
        const std::string elsewhere = setup.dir.write("elsewhere.json", "", 0666);
        const std::string link = (setup.dir.path() / "link.json").string();
        REQUIRE(::symlink(elsewhere.c_str(), link.c_str()) == 0);
        for (const std::string& target : {readable, link}) {
            INFO(target);
            const auto [st3, out3] =
                run(gdprctl() + " export " + setup.db + " --subject D-7781 --key-file " + setup.key + " --output " + target);
            CHECK(st3 == 0);
            struct stat st {};
            REQUIRE(::lstat(target.c_str(), &st) == 0);
            CHECK(S_ISREG(st.st_mode));
            CHECK((st.st_mode & 0777) == 0600);
            CHECK(json::parse(file_bytes(target))["records"].size() == 1);
        }
        CHECK(file_bytes(elsewhere).empty());
    }
    SECTION("report counts records per day, kind, schema and refusal reason") {
        const auto [st, doc] = run(gdprctl() + " report " + setup.db + " --json");
        REQUIRE(st == 0);
        bool refused = false, location = false;
        for (const auto& row : json::parse(doc)) {
            if (row["kind"] == "publish_refused" && row["reason"] == "not valid JSON" && row["count"] == 1) refused = true;
            if (row["kind"] == "fields" && row["category"] == "location" && row["count"] == 2) location = true;
        }
        CHECK(refused);
        CHECK(location);  // lat and lon, dropped for want of consent
    }
    SECTION("a modified record makes verify fail and name it") {
        {
            gdpr::sqlite_db d(setup.db);
            d.exec("UPDATE audit_records SET client_id = 'someone-else' WHERE kind = 'delivery'");
        }
        const auto [st, text] = run(gdprctl() + " verify " + setup.db);
        CHECK(st == 6);
        CHECK_THAT(text, Catch::Contains("FAILED") && Catch::Contains("PROBLEM at seq"));
    }
}

TEST_CASE("consent changes and control commands are recorded", "[integration][recording][consent]") {
    recording_setup setup;
    {
        itest::broker b(setup.options());
        const auto [st, out] = run(gdprctl_on(b) + " consent set D-7781 route-analytics granted --evidence form-12");
        INFO(out);
        REQUIRE(st == 0);
        itest::client intruder(b, "intruder");
        intruder.connect();
        REQUIRE(intruder.publish("$CONTROL/gdpr/v1", R"({"commands":[{"command":"getStats"}]})", 1) == 0);
        std::this_thread::sleep_for(300ms);
        b.stop();
    }
    CHECK(count_records(setup.db, "kind = 'consent' AND json_extract(detail, '$.change') = 'consent_granted'"
                                  " AND json_extract(detail, '$.purpose') = 'route-analytics'") == 1);
    CHECK(count_records(setup.db, "kind = 'control' AND json_extract(detail, '$.operator') != ''") == 1);
    CHECK(count_records(setup.db, "kind = 'control' AND client_id = 'intruder' AND json_extract(detail, '$.operator') = ''"
                                  " AND json_extract(detail, '$.commands[0].ok') = 0") == 1);
    const auto [st, doc] = run(gdprctl() + " export " + setup.db + " --subject D-7781 --key-file " + setup.key);
    const json j = json::parse(doc);
    REQUIRE(j["records"].size() == 1);
    CHECK(j["records"][0]["data"]["evidence"] == "form-12");
}

TEST_CASE("a stored message withheld for withdrawn consent is recorded as a refused delivery, then its copy",
          "[integration][recording][consent][retained]") {
    recording_setup setup;
    {
        itest::broker b(setup.options());
        auto consent = [&](const char* state) {
            const auto [st, out] = run(gdprctl_on(b) + " consent set D-7781 route-analytics " + state);
            INFO(out);
            REQUIRE(st == 0);
        };
        consent("granted");
        itest::client vehicle(b, "vehicle-42");
        vehicle.connect();
        REQUIRE(vehicle.publish(TOPIC, PAYLOAD, 1, true) == 0);
        consent("withdrawn");
        itest::client late(b, "late-dashboard");
        late.connect();
        late.subscribe(TOPIC, 1);
        auto got = late.next();
        REQUIRE(got);
        CHECK(json::parse(got->to_string())["gps"] == json::object());
        std::this_thread::sleep_for(300ms);
        b.stop();
    }
    CHECK(count_records(setup.db, "kind = 'delivery_refused' AND client_id = 'late-dashboard' AND "
                                  "json_extract(detail, '$.reason') LIKE 'consent withdrawn since the message was stored%'") == 1);
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'late-dashboard'") == 1);
    // The refusal first, then the copy: an auditor reads them in that order.
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'late-dashboard' AND seq > (SELECT seq FROM "
                                  "audit_records WHERE kind = 'delivery_refused' AND client_id = 'late-dashboard')") == 1);
    const auto [st, out] = run(gdprctl() + " verify " + setup.db);
    INFO(out);
    CHECK(st == 0);
}

TEST_CASE("a broker killed with SIGKILL under load keeps every flushed record and verifies after restart",
          "[integration][recording][crash]") {
    recording_setup setup;
    std::mutex m;
    std::vector<std::pair<int, std::chrono::steady_clock::time_point>> acked;
    std::chrono::steady_clock::time_point killed_at;
    {
        itest::broker b(setup.options());
        std::atomic<bool> stop{false};
        std::thread publisher([&] {
            try {
                itest::client car(b, "load-car");
                car.connect();
                for (int i = 0; !stop; ++i) {
                    if (car.publish("load/" + std::to_string(i), R"({"n":1})", 1) != 0) break;
                    std::lock_guard<std::mutex> lock(m);
                    acked.emplace_back(i, std::chrono::steady_clock::now());
                }
            } catch (...) {
                // the broker went away mid-publish
            }
        });
        std::this_thread::sleep_for(2500ms);
        killed_at = std::chrono::steady_clock::now();
        b.kill_hard();
        stop = true;
        publisher.join();
    }
    REQUIRE(acked.size() > 100);
    // Acknowledged well before the kill (20 flush periods of 50 ms: a sanitizer build sharing a
    // busy machine writes late, but it writes): must be on disk.
    std::set<std::string> expected;
    for (const auto& [i, at] : acked)
        if (at < killed_at - 1000ms) expected.insert("load/" + std::to_string(i));
    REQUIRE_FALSE(expected.empty());
    {
        gdpr::sqlite_db d(setup.db, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(d.handle(), "SELECT json_extract(detail, '$.topic') FROM audit_records WHERE kind = 'publish'");
        while (q.step()) expected.erase(q.text(0));
    }
    CHECK(expected.empty());
    auto [st, out] = run(gdprctl() + " verify " + setup.db);
    INFO(out);
    CHECK(st == 0);

    // The restarted broker continues the same chain.
    {
        itest::broker b(setup.options());
        itest::client car(b, "load-car");
        car.connect();
        REQUIRE(car.publish("load/after-restart", R"({"n":2})", 1) == 0);
        car.disconnect();
        b.stop();
    }
    std::tie(st, out) = run(gdprctl() + " verify " + setup.db);
    INFO(out);
    CHECK(st == 0);
    CHECK(count_records(setup.db, "kind = 'writer_started'") == 2);
    CHECK(count_records(setup.db, "kind = 'publish' AND json_extract(detail, '$.topic') = 'load/after-restart'") == 1);
}

TEST_CASE("a session survives SIGHUP re-authentication, a takeover starts a new one", "[integration][recording]") {
    recording_setup setup;
    {
        itest::broker b(setup.options());
        itest::client first(b, "car-7");
        first.connect();
        REQUIRE(first.publish("load/x", "{}", 1) == 0);
        b.signal(SIGHUP);
        REQUIRE(b.wait_for_log("Reloading config"));
        std::this_thread::sleep_for(200ms);
        REQUIRE(first.publish("load/y", "{}", 1) == 0);
        itest::client second(b, "car-7");  // takes the client id over
        second.connect();
        REQUIRE(second.publish("load/z", "{}", 1) == 0);
        second.disconnect();
        std::this_thread::sleep_for(200ms);
        b.stop();
    }
    CHECK(count_records(setup.db, "kind = 'session_start' AND client_id = 'car-7'") == 2);
    CHECK(count_records(setup.db, "kind = 'session_end' AND client_id = 'car-7'") == 2);
    // Both publishes of the first connection belong to its one session.
    CHECK(count_records(setup.db, "kind = 'publish' AND session = (SELECT min(seq) FROM audit_records WHERE"
                                  " kind = 'session_start' AND client_id = 'car-7')") == 2);
}

TEST_CASE("a SIGHUP does not take offline sessions for logins, ended here or restored from the broker's file",
          "[integration][recording]") {
    recording_setup setup;
    auto o = setup.options();
    o.extra_config = "persistence true\npersistence_location " + setup.dir.path().string() + "/\n";
    {
        itest::broker b(o);
        itest::client x(b, "persistent-x", 4);
        x.connect(std::nullopt, false);  // a session that outlives the connection
        x.subscribe("fleet/#", 1);
        x.disconnect();
        itest::client y(b, "persistent-y", 4);
        y.connect(std::nullopt, false);
        y.disconnect();
        std::this_thread::sleep_for(200ms);
        b.signal(SIGHUP);  // x and y are offline sessions the broker checks again
        REQUIRE(b.wait_for_log("Reloading config"));
        std::this_thread::sleep_for(300ms);
        b.stop();
    }
    {
        itest::broker b(o);  // x and y come back from the broker's persistence file, offline
        b.signal(SIGHUP);
        REQUIRE(b.wait_for_log("Reloading config"));
        std::this_thread::sleep_for(300ms);
        b.stop();
    }
    CHECK(count_records(setup.db, "kind = 'session_start' AND client_id = 'persistent-x'") == 1);
    CHECK(count_records(setup.db, "kind = 'session_start' AND client_id = 'persistent-y'") == 1);
}

TEST_CASE("a missing or exposed audit key file refuses start-up naming the option", "[integration][recording][startup]") {
    recording_setup setup;
    SECTION("readable by others") {
        const std::string exposed = setup.dir.write("exposed.key", itest::random_bytes(32), 0644);
        const auto [status, log] = itest::broker::expect_refusal(setup.options({{"audit_key_file", exposed}}));
        CHECK(status != 0);
        CHECK_THAT(log, Catch::Contains("audit_key_file") && Catch::Contains("0644"));
    }
    SECTION("missing") {
        auto o = setup.options();
        o.plugin_opts[1].second = (setup.dir.path() / "nope.key").string();
        const auto [status, log] = itest::broker::expect_refusal(o);
        CHECK(status != 0);
        CHECK_THAT(log, Catch::Contains("audit_key_file") && Catch::Contains("does not exist"));
    }
}

TEST_CASE("the drop overflow policy alerts operators and leaves a declared gap", "[integration][recording][overflow]") {
    recording_setup setup;
    {
        itest::broker b(setup.options({{"record_queue", "100"}, {"record_overflow", "drop"}, {"record_flush_ms", "2000"}}));
        itest::client op(b, itest::OPERATOR_CLIENT_ID);
        op.connect();
        op.subscribe("$CONTROL/gdpr/v1/alerts", 1);
        itest::client car(b, "flood-car");
        car.connect();
        // The writer takes the whole queue whenever it wakes, so whether 100 records ever wait
        // depends on how the threads are scheduled: flood in rounds until the queue overflows.
        mqtt::const_message_ptr alert;
        for (int round = 0; round < 40 && !alert; ++round) {
            for (int i = 0; i < 2000; ++i) car.publish("load/" + std::to_string(i), "{}", 0);
            for (auto m = op.next(250ms); m && !alert; m = op.next(50ms))
                if (m->get_topic() == "$CONTROL/gdpr/v1/alerts") alert = m;
        }
        REQUIRE(alert);
        const json a = json::parse(alert->to_string());
        CHECK(a["alert"] == "audit_trail");
        CHECK_THAT(a["detail"].get<std::string>(), Catch::Contains("drop"));
        CHECK(b.wait_for_log("gdpr: audit trail: audit queue full"));
        car.disconnect();
        op.disconnect();
        b.stop();
    }
    const auto [status, out] = run(gdprctl() + " verify " + setup.db);
    INFO(out);
    CHECK(status == 7);
    CHECK_THAT(out, Catch::Contains("GAP at seq"));
}

namespace {
// Publishes at QoS 1 until the broker refuses one with 135 (the audit trail cannot take it),
// counting the accepted ones; false when none was refused within a minute.
bool publish_until_refused(itest::client& car, int& accepted) {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
        const int rc = car.publish(TOPIC, PAYLOAD, 1);
        if (rc == 135) return true;
        if (rc != 0) FAIL("unexpected reason code " << rc);
        ++accepted;
    }
    return false;
}
} // namespace

TEST_CASE("a full disk stops publishes with an alert, and once space returns every accepted publish is recorded",
          "[integration][recording][overflow]") {
    recording_setup setup;
    int accepted = 0;
    {
        auto o = setup.options({{"record_queue", "100"}});
        o.file_size_limit = 2 * 1024 * 1024;  // the database file cannot grow past 2 MiB
        itest::broker b(o);
        itest::client op(b, itest::OPERATOR_CLIENT_ID);
        op.connect();
        op.subscribe("$CONTROL/gdpr/v1/alerts", 1);
        itest::client car(b, "car-full-disk");
        car.connect();
        const bool refused = publish_until_refused(car, accepted);
        INFO(b.log());
        REQUIRE(refused);  // block policy: nothing flows unrecorded
        REQUIRE(accepted > 100);
        CHECK(b.wait_for_log("gdpr: audit trail: cannot write the audit trail"));
        bool alerted = false;
        for (int i = 0; i < 40 && !alerted; ++i) {
            auto m = op.next(250ms);
            if (m && m->get_topic() == "$CONTROL/gdpr/v1/alerts") {
                const json a = json::parse(m->to_string());
                alerted = a["alert"] == "audit_trail" &&
                          a["detail"].get<std::string>().find("cannot write the audit trail") != std::string::npos;
            }
        }
        CHECK(alerted);
        // The broker still serves other clients meanwhile.
        itest::client watcher(b, "watcher-full-disk");
        watcher.connect();
        watcher.disconnect();

        b.set_file_size_limit(0);  // space again
        bool flowing = false;
        const auto recover_by = std::chrono::steady_clock::now() + 30s;
        while (!flowing && std::chrono::steady_clock::now() < recover_by) {
            const int rc = car.publish(TOPIC, PAYLOAD, 1);
            if (rc == 0) {
                ++accepted;
                flowing = true;
            } else {
                std::this_thread::sleep_for(100ms);
            }
        }
        REQUIRE(flowing);
        CHECK(b.wait_for_log("audit trail writable again", 10s));
        for (int i = 0; i < 10; ++i) REQUIRE(car.publish(TOPIC, PAYLOAD, 1) == 0);
        accepted += 10;
        car.disconnect();
        op.disconnect();
        b.stop();
    }
    const auto [status, out] = run(gdprctl() + " verify " + setup.db);
    INFO(out);
    CHECK(status == 0);
    CHECK(count_records(setup.db, "kind = 'publish' AND client_id = 'car-full-disk'") == accepted);
}

TEST_CASE("a broker stopped while its disk is full gives up on the audit trail after a grace period and says how much is lost",
          "[integration][recording][overflow]") {
    recording_setup setup;
    auto o = setup.options({{"record_queue", "100"}});
    o.file_size_limit = 2 * 1024 * 1024;
    itest::broker b(o);
    itest::client car(b, "car-stopped-full");
    car.connect();
    int accepted = 0;
    REQUIRE(publish_until_refused(car, accepted));
    REQUIRE(b.wait_for_log("gdpr: audit trail: cannot write the audit trail"));
    // A checkpoint can copy the write-ahead log into the database and let the log start over, so a
    // full disk may take more records a moment later. Another connection's write lock keeps the
    // trail unwritable until the broker has stopped, as a disk that stays full would; publishes
    // after it are refused, or, had the writer caught up just before, queued behind the lock.
    gdpr::sqlite_db holder(setup.db);
    holder.exec("BEGIN EXCLUSIVE");
    for (int i = 0; i < 5; ++i) {
        const int rc = car.publish(TOPIC, PAYLOAD, 1);
        CHECK((rc == 0 || rc == 135));
    }
    car.disconnect();
    // 5 s of retries, and the attempt under way (up to the 5 s busy timeout): it stops by itself,
    // well before a supervisor's patience runs out, and the log counts what the trail could not take.
    CHECK(b.stop(40s));
    holder.exec("COMMIT");
    const std::string log = b.log();
    INFO(log);
    CHECK(log.find("gdpr: audit trail: stopped with ") != std::string::npos);
    CHECK(log.find("audit records unwritten, which are lost") != std::string::npos);
    CHECK(log.find(" left unwritten at stop") != std::string::npos);
    CHECK(log.find(" 0 left unwritten at stop") == std::string::npos);
}

TEST_CASE("each publish records what was done to its own fields, however its neighbours came out",
          "[integration][recording]") {
    recording_setup setup;
    const std::string without_name = R"({"driver_id":"D-7781","gps":{"lat":48.137154,"lon":11.576124},"speed":51})";
    {
        itest::broker b(setup.options());
        itest::client car(b, "car-outcomes");
        car.connect();
        REQUIRE(car.publish(TOPIC, PAYLOAD, 1) == 0);       // no consent: position dropped
        REQUIRE(car.publish(TOPIC, PAYLOAD, 1) == 0);       // the same outcome again
        const auto [st, out] = run(gdprctl_on(b) + " consent set D-7781 route-analytics granted --evidence form-12");
        INFO(out);
        REQUIRE(st == 0);
        REQUIRE(car.publish(TOPIC, PAYLOAD, 1) == 0);       // consent: position generalised
        REQUIRE(car.publish(TOPIC, without_name, 1) == 0);  // nothing to drop by name
        REQUIRE(car.publish(TOPIC, PAYLOAD, 1) == 0);
        car.disconnect();
        b.stop();
    }
    std::vector<json> fields;
    {
        gdpr::sqlite_db d(setup.db, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(d.handle(), "SELECT detail FROM audit_records WHERE kind = 'publish' AND client_id = 'car-outcomes' ORDER BY seq");
        while (q.step()) fields.push_back(json::parse(q.text(0))["fields"]);
    }
    REQUIRE(fields.size() == 5);
    for (int i : {0, 1}) {
        CHECK(fields[i]["/gps/lat"] == "dropped: no consent for route-analytics");
        CHECK(fields[i]["/driver_name"] == "dropped");
    }
    CHECK(fields[2]["/gps/lat"] == "generalised");
    CHECK(fields[2]["/driver_name"] == "dropped");
    CHECK(fields[3]["/gps/lat"] == "generalised");
    CHECK_FALSE(fields[3].contains("/driver_name"));
    CHECK(fields[4] == fields[2]);
}

TEST_CASE("a topic that names its subject is recorded masked in publish and delivery records, in clear only sealed",
          "[integration][recording]") {
    recording_setup setup;
    const std::string vitals = "health/wearable/u-4711/vitals";
    const std::string masked = "health/wearable/<subject>/vitals";
    {
        itest::broker b(setup.options({{"record_deliveries", "all"}}));
        itest::client watcher(b, "clinic");
        watcher.connect();
        watcher.subscribe("health/#", 1);
        itest::client watch(b, "watch-4711");
        watch.connect();
        REQUIRE(watch.publish(vitals, R"({"hr":61,"battery":80})", 1, true) == 0);  // retained
        REQUIRE(watcher.next());
        REQUIRE(watch.publish("fleet/acme/status", R"({"ok":true})", 1) == 0);  // another topic in between
        itest::client late(b, "clinic-late");
        late.connect();
        late.subscribe("health/#", 1);  // the retained message: a delivery not checked right after its publish
        REQUIRE(late.next());
        watch.disconnect();
        watcher.disconnect();
        late.disconnect();
        b.stop();
    }
    CHECK(count_records(setup.db, "kind = 'publish' AND json_extract(detail, '$.topic') = '" + masked + "'") == 1);
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'clinic' AND json_extract(detail, '$.topic') = '" +
                                      masked + "' AND json_extract(detail, '$.publish_seq') > 0") == 1);
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'clinic-late' AND json_extract(detail, '$.topic') = '" +
                                      masked + "'") == 1);
    const std::string file = file_bytes(setup.db) + file_bytes(setup.db + "-wal");
    CHECK(file.find("u-4711") == std::string::npos);
    const auto [st, doc] = run(gdprctl() + " export " + setup.db + " --subject u-4711 --key-file " + setup.key);
    INFO(doc);
    REQUIRE(st == 0);
    const json j = json::parse(doc);
    REQUIRE(j["records"].size() == 1);
    CHECK(j["records"][0]["data"]["topic"] == vitals);
}

TEST_CASE("will messages are recorded as publishes, sent or refused, personal data only sealed", "[integration][recording]") {
    recording_setup setup;
    {
        itest::broker b(setup.options());
        itest::client watcher(b, "watcher", 5);
        watcher.connect();
        watcher.subscribe("fleet/#", 1);
        // Vehicle telemetry names its driver: a name to drop refuses the will; one that passes
        // unchanged is sent and sealed for its subject.
        itest::connect_and_vanish(b, "vehicle-dirty-will", TOPIC, R"({"driver_id":"D-1234","driver_name":"Annemarie Beispiel","speed":0})");
        itest::connect_and_vanish(b, "vehicle-clean-will", "fleet/acme/vehicle/v7/status", R"({"fuel":0.5})");
        REQUIRE(watcher.next());
        CHECK_FALSE(watcher.next(300ms));
        watcher.disconnect();
        b.stop();
    }
    const auto [status, out] = run(gdprctl() + " verify " + setup.db);
    INFO(out);
    CHECK(status == 0);
    CHECK(count_records(setup.db, "kind = 'publish_refused' AND client_id = 'vehicle-dirty-will' AND json_extract(detail, '$.will') = 1"
                                  " AND json_extract(detail, '$.reason') LIKE 'a will cannot be rewritten%'"
                                  " AND json_extract(detail, '$.fields.\"/driver_name\"') = 'dropped'"
                                  " AND schema = 'vehicle-telemetry@3' AND sealed IS NULL AND payload IS NULL") == 1);
    CHECK(count_records(setup.db, "kind = 'publish' AND client_id = 'vehicle-clean-will' AND json_extract(detail, '$.will') = 1"
                                  " AND schema = 'vehicle-status@1' AND json_extract(detail, '$.payload') = 'clear'"
                                  " AND CAST(payload AS TEXT) = '{\"fuel\":0.5}'") == 1);
    // The broker stores a will anew before delivering it; its delivery still names it.
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'watcher' AND json_extract(detail, '$.publish_seq') = "
                                  "(SELECT seq FROM audit_records WHERE kind = 'publish' AND client_id = 'vehicle-clean-will')") == 1);
    const std::string file = file_bytes(setup.db) + file_bytes(setup.db + "-wal");
    CHECK(file.find("Annemarie") == std::string::npos);
    CHECK(file.find("D-1234") == std::string::npos);
}

TEST_CASE("only the deliveries checked right after a will are tied to it", "[integration][recording][will]") {
    recording_setup setup;
    const std::string topic = "fleet/acme/vehicle/v9/status", payload = R"({"fuel":0.25})";
    {
        itest::broker b(setup.options());
        itest::client watcher(b, "watcher", 5), publisher(b, "v9-gateway", 5), late(b, "late", 5);
        watcher.connect();
        watcher.subscribe("fleet/#", 1);
        publisher.connect();
        REQUIRE(publisher.publish(topic, payload, 1, true) == 0);
        REQUIRE(watcher.next());
        // A will with the same topic and content as the retained message.
        itest::connect_and_vanish(b, "vehicle-v9", topic, payload, 1);
        REQUIRE(watcher.next());
        // The retained message, not the will, is what a later subscriber gets.
        late.connect();
        late.subscribe(topic, 1);
        REQUIRE(late.next());
        late.disconnect();
        watcher.disconnect();
        b.stop();
    }
    const std::string will_seq = "(SELECT seq FROM audit_records WHERE kind = 'publish' AND client_id = 'vehicle-v9')";
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'watcher' AND json_extract(detail, '$.publish_seq') = " + will_seq) == 1);
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'late'") == 1);
    CHECK(count_records(setup.db, "kind = 'delivery' AND client_id = 'late' AND json_extract(detail, '$.publish_seq') IS NULL") == 1);
}

TEST_CASE("an operator exports a subject's records over the control API while the broker runs", "[integration][recording][export]") {
    recording_setup setup;
    itest::broker b(setup.options());
    itest::client car(b, "car-42");
    car.connect();
    REQUIRE(car.publish(TOPIC, PAYLOAD, 1) == 0);
    REQUIRE(car.publish(TOPIC, R"({"driver_id":"D-1000","speed":20})", 1) == 0);  // someone else
    const std::string online = gdprctl() + " --port " + std::to_string(b.port()) + " --json --client-id ";
    json d;
    for (int attempt = 0; attempt < 50; ++attempt) {  // until the writer has committed the publish
        const auto [st, out] = itest::run_command(online + itest::OPERATOR_CLIENT_ID + " subject export D-7781", false);
        INFO(out);
        REQUIRE(st == 0);
        d = json::parse(out)["data"];
        if (!d["records"].empty()) break;
        std::this_thread::sleep_for(100ms);
    }
    CHECK(d["subject"] == "D-7781");
    REQUIRE(d["records"].size() == 1);
    CHECK(d["records"][0]["data"]["topic"] == TOPIC);
    CHECK(d["records"][0]["data"]["payload"]["speed"] == 50);  // as forwarded
    CHECK_FALSE(d["records"][0]["data"]["payload"].contains("driver_name"));
    CHECK(d["consent"]["granted"].empty());
    // Only operators: anyone else is told so, and learns nothing.
    const auto [st2, out2] = run(online + "curious-client subject export D-7781");
    CHECK(st2 != 0);
    CHECK_THAT(out2, Catch::Contains("not authorised"));
    b.stop();
    CHECK(b.log().find("D-7781") == std::string::npos);
    // The command is recorded by name and outcome: the export's content stays out of the trail.
    CHECK(count_records(setup.db, "kind = 'control' AND detail LIKE '%exportSubject%'") >= 2);
    const std::string file = file_bytes(setup.db) + file_bytes(setup.db + "-wal");
    CHECK(file.find("D-7781") == std::string::npos);
}
