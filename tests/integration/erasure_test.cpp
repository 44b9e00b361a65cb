// Erasure end to end (GDPR Art. 17) on a real broker: a simulated fleet (examples/device-sim)
// holding a subject's data, gdprctl asking for the erasure, the receipt; a restart in the middle
// of a request; the control API's refusals; the erase topics' guards.
#include <catch2/catch.hpp>

#include <algorithm>

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <signal.h>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "broker_fixture.hpp"
#include "gdpr/sqlite.hpp"
#include "gdpr/topic_sealer.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

const std::string GDPRCTL_OPERATOR = "gdprctl-operator";

struct erasure_setup {
    itest::scratch_dir dir;
    std::string db = (dir.path() / "gdpr.db").string();
    std::string key = dir.write("audit.key", itest::random_bytes(32), 0600);

    itest::broker_options options() const {
        itest::broker_options o;
        o.plugin_opts = {{"database", db},
                         {"audit_key_file", key},
                         {"record_flush_ms", "50"},
                         {"operator_client_ids", std::string(itest::OPERATOR_CLIENT_ID) + "," + GDPRCTL_OPERATOR},
                         {"erase_retry_seconds", "1"},
                         // Not reached by a test that waits for answers, however slow the machine.
                         {"erase_deadline_seconds", "60"}};
        return o;
    }
    // options() with another retry period and deadline.
    itest::broker_options options_with_timing(const char* retry_seconds, const char* deadline_seconds) const {
        itest::broker_options o = options();
        for (auto& [key, value] : o.plugin_opts) {
            if (key == "erase_retry_seconds") value = retry_seconds;
            if (key == "erase_deadline_seconds") value = deadline_seconds;
        }
        return o;
    }
    // options() with no audit key (no recording): the data map names subjects by pseudonym, or by
    // id without a pseudonymisation key either.
    itest::broker_options options_without_audit_key() const {
        itest::broker_options o = options();
        o.plugin_opts.erase(std::remove_if(o.plugin_opts.begin(), o.plugin_opts.end(),
                                           [](const auto& opt) { return opt.first == "audit_key_file"; }),
                            o.plugin_opts.end());
        return o;
    }
    // options() with a publisher's allowance of new data subjects.
    itest::broker_options options_with_allowance(const char* burst, const char* per_minute) const {
        itest::broker_options o = options();
        o.plugin_opts.push_back({"new_subjects_burst", burst});
        o.plugin_opts.push_back({"new_subjects_per_minute", per_minute});
        return o;
    }
};

json control(itest::client& c, const json& command) {
    const std::string answer = itest::control_exchange(c, json{{"commands", json::array({command})}}.dump());
    if (answer.empty()) FAIL("no control response");
    return json::parse(answer)["responses"][0];
}

// The client ids an erasure request told (getErasure with targets).
std::set<std::string> target_client_ids(const json& request) {
    std::set<std::string> ids;
    for (const auto& t : request["targets"]) ids.insert(t["clientId"].get<std::string>());
    return ids;
}

// The client ids an export names as holders of the subject's data (publishers and recipients).
std::set<std::string> holder_client_ids(const json& exported) {
    std::set<std::string> ids;
    for (const char* role : {"publishers", "recipients"})
        for (const auto& h : exported["data"]["holders"][role]) ids.insert(h["client_id"].get<std::string>());
    return ids;
}

std::string telemetry(const std::string& driver) {
    return json{{"driver_id", driver}, {"gps", {{"lat", 48.137154}, {"lon", 11.576124}}}, {"speed", 50}}.dump();
}

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
}

// A background process whose output goes to a file; SIGTERM and reaped when the object goes away.
class process {
public:
    process(const std::string& command, std::string output) : output_(std::move(output)) {
        pid_ = ::fork();
        if (pid_ == 0) {
            std::freopen(output_.c_str(), "w", stdout);
            std::freopen((output_ + ".err").c_str(), "w", stderr);
            ::execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
            std::_Exit(127);
        }
    }
    ~process() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
    }
    std::string output() const { return slurp(output_); }
    bool wait_for_output(const std::string& needle, std::size_t times, std::chrono::milliseconds timeout) const {
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < until) {
            if (count_of(output(), needle) >= times) return true;
            std::this_thread::sleep_for(50ms);
        }
        return false;
    }

private:
    std::string output_;
    pid_t pid_ = -1;
};

std::pair<int, std::string> run(const std::string& command) { return itest::run_command(command, false); }

int suback_reason(itest::client& c, const std::string& filter) {
    try {
        auto tok = c.raw().subscribe(filter, 1);
        tok->wait_for(std::chrono::seconds(5));
        const auto codes = tok->get_subscribe_response().get_reason_codes();
        return codes.empty() ? -1 : static_cast<int>(codes[0]);
    } catch (const mqtt::exception& e) {
        return e.get_reason_code();  // Paho reports a refused subscription as an exception
    }
}

} // namespace

TEST_CASE("a fleet of 50: the receipt names the device that came back, the one that never answered, the subscriber",
          "[integration][erasure]") {
    erasure_setup setup;
    // van-7 is asked at 0, 3 and 9 s (the next would be at 21 s), and fails at the deadline; the
    // others answer well before.
    itest::broker b(setup.options_with_timing("3", "16"));
    itest::client alerts(b, itest::OPERATOR_CLIENT_ID, 5);
    alerts.connect();
    alerts.subscribe("$CONTROL/gdpr/v1/alerts", 1);

    // 50 vans driven by one driver; van-7 never acknowledges; van-3 goes offline after publishing
    // and comes back 2.5 s later; "dashboard" is a downstream subscriber of the fleet's telemetry.
    const std::string sim = std::string(DEVICE_SIM_PATH) + " --port " + std::to_string(b.port()) +
                            " --devices 50 --fleet acme --messages 1 --shared-subject driver-77 --subscriber dashboard"
                            " --never-ack van-7 --offline van-3 --offline-ms 2500 --duration-s 120";
    process fleet(sim, (setup.dir.path() / "fleet.out").string());
    REQUIRE(fleet.wait_for_output("published van-", 50, 30s));
    REQUIRE(fleet.wait_for_output("offline van-3", 1, 5s));
    std::this_thread::sleep_for(300ms);  // the last deliveries reach the dashboard

    const auto [status, out] = run(std::string(GDPRCTL_PATH) + " --port " + std::to_string(b.port()) + " --client-id " +
                                   GDPRCTL_OPERATOR + " --json erase --subject driver-77 --id fleet-erasure-1 --wait 30");
    CHECK(status == 1);  // one holder failed
    // The output holds the progress-free JSON of the final getErasure.
    const auto receipt = json::parse(out)["data"];
    INFO(receipt.dump(2));
    CHECK(receipt["state"] == "completed_with_failures");
    CHECK_FALSE(receipt.contains("subject"));  // finished: only the reference is kept
    CHECK_FALSE(receipt["subjectRef"].get<std::string>().empty());
    CHECK(receipt["totals"]["targets"] == 51);
    CHECK(receipt["totals"]["acknowledged"] == 50);
    CHECK(receipt["totals"]["failed"] == 1);
    CHECK(receipt["totals"]["unreachable"] == 0);
    std::map<std::string, json> targets;
    for (const auto& t : receipt["targets"]) targets[t["clientId"]] = t;
    REQUIRE(targets.count("van-7"));
    CHECK(targets["van-7"]["outcome"] == "failed");
    CHECK(targets["van-7"]["attempts"].get<int>() >= 3);  // retried with backoff until the deadline
    CHECK(targets["van-7"]["detail"] == "no acknowledgement before the deadline");
    CHECK(targets["van-3"]["outcome"] == "acknowledged");
    CHECK(targets["van-3"]["state"] == "erased");
    CHECK(targets["van-3"]["attempts"] == 1);  // sent once, when it came back
    CHECK(targets["dashboard"]["roles"] == json::array({"recipient"}));
    CHECK(targets["dashboard"]["outcome"] == "acknowledged");
    CHECK(targets["dashboard"]["state"] == "erased");  // it found the pseudonym it had received
    CHECK(targets["van-0"]["roles"] == json::array({"publisher"}));
    CHECK(targets["van-0"]["state"] == "erased");
    CHECK(receipt["plugin"]["keyShredded"] == true);

    // Each device deleted its own copy before answering (a slow answer may have been asked for
    // again, and answered twice).
    std::set<std::string> answered;
    std::istringstream lines(fleet.output());
    for (std::string line; std::getline(lines, line);)
        if (line.rfind("ack van-", 0) == 0) answered.insert(line.substr(4, line.find(' ', 4) - 4));
    CHECK(answered.size() == 49);
    CHECK_FALSE(answered.count("van-7"));
    bool deadline_alert = false;
    for (const auto& m : alerts.drain()) {
        const auto a = json::parse(m->to_string());
        deadline_alert = deadline_alert || a["alert"] == "erasure_deadline";
        CHECK(m->to_string().find("driver-77") == std::string::npos);  // alerts name requests, not subjects
    }
    CHECK(deadline_alert);
    CHECK(b.log().find("driver-77") == std::string::npos);
}

TEST_CASE("a broker killed in the middle of an erasure resumes it after restart and completes it", "[integration][erasure]") {
    erasure_setup setup;
    const std::string topic = "fleet/acme/vehicle/%/telemetry";
    auto topic_of = [&](const std::string& van) { return "fleet/acme/vehicle/" + van + "/telemetry"; };
    {
        itest::broker b(setup.options());
        itest::client van1(b, "van-1", 5), van2(b, "van-2", 5), op(b, itest::OPERATOR_CLIENT_ID, 5);
        van1.connect();
        van2.connect();
        op.connect();
        CHECK(van1.publish(topic_of("van-1"), telemetry("driver-5")) == 0);
        CHECK(van2.publish(topic_of("van-2"), telemetry("driver-5")) == 0);
        van2.disconnect();  // van-2 is away when the request arrives
        const auto r = control(op, {{"command", "eraseSubject"}, {"subject", "driver-5"}, {"requestId", "resume-1"}});
        REQUIRE_FALSE(r.contains("error"));
        CHECK(r["data"]["totals"]["targets"] == 2);
        auto cmd = van1.next(10s);
        REQUIRE(cmd);
        CHECK(cmd->get_topic() == "gdpr/erase/van-1");
        const auto command = json::parse(cmd->to_string());
        CHECK(command["requestId"] == "resume-1");
        CHECK(command["subject"] == "driver-5");
        CHECK(command.contains("deadline"));
        CHECK(van1.publish("gdpr/erase/van-1/ack", json{{"requestId", "resume-1"}, {"status", "erased"}}.dump()) == 0);
        for (const auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {  // van-1's answer is durable before the crash
            const auto s = control(op, {{"command", "getErasure"}, {"requestId", "resume-1"}});
            if (s["data"]["totals"]["acknowledged"] == 1) break;
            std::this_thread::sleep_for(50ms);
        }
        bool written = false;  // in the register's file, not only in memory
        for (const auto until = std::chrono::steady_clock::now() + 20s; !written && std::chrono::steady_clock::now() < until;) {
            gdpr::sqlite_db raw(setup.db, gdpr::sqlite_db::read_only);
            gdpr::sqlite_statement q(raw.handle(), "SELECT state FROM erasure_targets WHERE request_id = 'resume-1' AND client_id = 'van-1'");
            written = q.step() && q.text(0) == "erased";
            if (!written) std::this_thread::sleep_for(50ms);
        }
        REQUIRE(written);
        b.kill_hard();
    }
    itest::broker b(setup.options());
    itest::client van2(b, "van-2", 5), op(b, itest::OPERATOR_CLIENT_ID, 5);
    op.connect();
    van2.connect();  // comes back: its pending command goes out at once
    auto cmd = van2.next(10s);
    REQUIRE(cmd);
    CHECK(cmd->get_topic() == "gdpr/erase/van-2");
    CHECK(van2.publish("gdpr/erase/van-2/ack", json{{"requestId", "resume-1"}, {"status", "not_found"}}.dump()) == 0);
    json receipt;
    for (const auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
        receipt = control(op, {{"command", "getErasure"}, {"requestId", "resume-1"}})["data"];
        if (receipt["state"] != "in_progress") break;
        std::this_thread::sleep_for(50ms);
    }
    INFO(receipt.dump(2));
    CHECK(receipt["state"] == "completed");
    CHECK(receipt["totals"]["acknowledged"] == 2);
    CHECK(receipt["targets"][0]["state"] == "erased");
    CHECK(receipt["targets"][1]["state"] == "not_found");
    (void)topic;
}

TEST_CASE("an erase command names the subject by pseudonym to a subscriber that never received its id",
          "[integration][erasure]") {
    erasure_setup setup;
    itest::broker b(setup.options());
    itest::client van1(b, "van-1", 5), van2(b, "van-2", 5), viewer(b, "viewer", 5), props_viewer(b, "props-viewer", 5),
        op(b, itest::OPERATOR_CLIENT_ID, 5);
    for (auto* c : {&van1, &van2, &viewer, &props_viewer, &op}) c->connect();
    viewer.subscribe("fleet/acme/vehicle/van-1/telemetry", 1);
    viewer.subscribe("gdpr/erase/viewer", 1);
    props_viewer.subscribe("fleet/acme/vehicle/van-2/telemetry", 1);
    props_viewer.subscribe("gdpr/erase/props-viewer", 1);
    van1.subscribe("gdpr/erase/van-1", 1);

    REQUIRE(van1.publish("fleet/acme/vehicle/van-1/telemetry", telemetry("driver-9")) == 0);
    auto received = viewer.next(5s);
    REQUIRE(received);
    const std::string held = json::parse(received->to_string())["driver_id"];
    CHECK(held != "driver-9");  // pseudonymised by the schema
    // The same subject's data with a user property the plugin does not read: it may carry the id.
    mqtt::properties props;
    props.add(mqtt::property(mqtt::property::USER_PROPERTY, "note", "anything"));
    REQUIRE(van2.publish("fleet/acme/vehicle/van-2/telemetry", telemetry("driver-9"), 1, false, props) == 0);
    REQUIRE(props_viewer.next(5s));
    // A retained message, delivered on a later subscribe: the data map knows it by the broker's copy.
    itest::client van3(b, "van-3", 5), late_viewer(b, "late-viewer", 5);
    van3.connect();
    REQUIRE(van3.publish("fleet/acme/vehicle/van-3/telemetry", telemetry("driver-9"), 1, true) == 0);
    // Another publish between: the delivery on subscribe is then not the last publish's.
    REQUIRE(van3.publish("fleet/acme/vehicle/van-3/status", json{{"fuel", 40}}.dump()) == 0);
    late_viewer.connect();
    late_viewer.subscribe("gdpr/erase/late-viewer", 1);
    late_viewer.subscribe("fleet/acme/vehicle/van-3/telemetry", 1);
    auto retained = late_viewer.next(5s);
    REQUIRE(retained);
    CHECK(retained->is_retained());
    CHECK(json::parse(retained->to_string())["driver_id"] == held);

    const auto r = control(op, {{"command", "eraseSubject"}, {"subject", "driver-9"}, {"requestId", "by-pseudonym-1"}});
    REQUIRE_FALSE(r.contains("error"));
    auto cmd = viewer.next(10s);
    REQUIRE(cmd);
    CHECK(cmd->get_topic() == "gdpr/erase/viewer");
    const auto to_viewer = json::parse(cmd->to_string());
    INFO(to_viewer.dump());
    CHECK_FALSE(to_viewer.contains("subject"));  // GDPR Art. 25(1): it never received the id
    CHECK(to_viewer["pseudonym"] == held);       // what it holds the data under
    CHECK(to_viewer["requestId"] == "by-pseudonym-1");
    auto to_props_viewer = props_viewer.next(10s);
    REQUIRE(to_props_viewer);
    CHECK(json::parse(to_props_viewer->to_string())["subject"] == "driver-9");
    auto to_van = van1.next(10s);
    REQUIRE(to_van);
    CHECK(json::parse(to_van->to_string())["subject"] == "driver-9");  // it sent the id itself
    auto to_late_viewer = late_viewer.next(10s);
    if (to_late_viewer && to_late_viewer->get_topic() != "gdpr/erase/late-viewer") {
        CHECK(to_late_viewer->get_payload().empty());  // the erasure clears the retained message first
        to_late_viewer = late_viewer.next(10s);
    }
    REQUIRE(to_late_viewer);
    CHECK(to_late_viewer->get_topic() == "gdpr/erase/late-viewer");
    CHECK_FALSE(json::parse(to_late_viewer->to_string()).contains("subject"));

    const auto status = control(op, {{"command", "getErasure"}, {"requestId", "by-pseudonym-1"}})["data"];
    INFO(status.dump(2));
    std::map<std::string, json> targets;
    for (const auto& t : status["targets"]) targets[t["clientId"]] = t;
    CHECK(targets["viewer"]["subjectNamedBy"] == "pseudonym");
    CHECK(targets["late-viewer"]["subjectNamedBy"] == "pseudonym");
    CHECK_FALSE(targets["props-viewer"].contains("subjectNamedBy"));
    CHECK_FALSE(targets["van-1"].contains("subjectNamedBy"));
}

TEST_CASE("a device on a listener that skips the password check (use_identity_as_username) gets its erase command",
          "[integration][erasure][tls]") {
    itest::test_pki pki;
    pki.issue_client("ops", "ops-console.example.org");
    pki.issue_client("van", "van-tls");
    erasure_setup setup;
    auto o = setup.options();
    o.plugin_opts.emplace_back("operator_cert_cns", "ops-console.example.org");
    o.listener_config = pki.listener_config() + "use_identity_as_username true\n";
    itest::broker b(o);
    const std::string tls = " -h 127.0.0.1 -p " + std::to_string(b.port()) + " --cafile " + pki.file("ca.crt");
    const std::string as_van = tls + " --cert " + pki.file("van.crt") + " --key " + pki.file("van.key");
    itest::scratch_dir out;
    // Connected all along: it reads its fleet's telemetry (a holder of the driver's data) and its
    // own erase topic. The broker shows no login of it to the plugin.
    process van("mosquitto_sub" + as_van + " -V 5 -q 1 -i van-tls -t fleet/acme/vehicle/+/telemetry -t gdpr/erase/van-tls -v",
                (out.path() / "van.txt").string());
    bool holds = false;
    for (int i = 0; i < 50 && !holds; ++i) {
        const auto [status, text] = run("mosquitto_pub" + as_van + " -V 5 -q 1 -i van-tls-pub -t fleet/acme/vehicle/van-tls/telemetry -m '" +
                                        telemetry("driver-9") + "'");
        REQUIRE(status == 0);
        holds = van.wait_for_output("fleet/acme/vehicle/van-tls/telemetry", 1, 200ms);
    }
    REQUIRE(holds);
    const auto [status, receipt] = run(std::string(GDPRCTL_PATH) + " --port " + std::to_string(b.port()) + " --cafile " +
                                       pki.file("ca.crt") + " --cert " + pki.file("ops.crt") + " --key " + pki.file("ops.key") +
                                       " --json erase --subject driver-9 --id tls-erasure-1 --no-wait");
    INFO(receipt);
    REQUIRE(status == 0);
    CHECK(van.wait_for_output("gdpr/erase/van-tls ", 1, 5s));
}

TEST_CASE("where the broker fires no tick (per_listener_settings), an erasure goes on with publishes and control messages",
          "[integration][erasure]") {
    erasure_setup setup;
    auto o = setup.options();
    o.listener_config = "per_listener_settings true";
    itest::broker b(o);
    itest::client van1(b, "van-1", 5), op(b, itest::OPERATOR_CLIENT_ID, 5);
    van1.connect();
    op.connect();
    CHECK(van1.publish("fleet/acme/vehicle/van-1/telemetry", telemetry("driver-6")) == 0);
    // Answers and steps go out with the next message the broker shows the plugin: the operator
    // following the request is what moves it on here.
    const auto send = [&](const json& command) {
        REQUIRE(op.publish("$CONTROL/gdpr/v1", json{{"commands", json::array({command})}}.dump(), 1) == 0);
    };
    send({{"command", "eraseSubject"}, {"subject", "driver-6"}, {"requestId", "no-tick-1"}});
    json answer;
    mqtt::const_message_ptr cmd;
    for (const auto until = std::chrono::steady_clock::now() + 20s;
         (!cmd || answer.is_null()) && std::chrono::steady_clock::now() < until;) {
        send({{"command", "getStats"}});
        for (auto m = op.next(50ms); m; m = op.next(10ms)) {
            const json response = json::parse(m->to_string())["responses"][0];
            if (response["command"] == "eraseSubject") answer = response;
        }
        if (!cmd) cmd = van1.next(50ms);
    }
    INFO(answer.dump());
    CHECK_FALSE(answer.contains("error"));
    CHECK(answer["data"]["totals"]["targets"] == 1);
    REQUIRE(cmd);
    CHECK(cmd->get_topic() == "gdpr/erase/van-1");
    CHECK(van1.publish("gdpr/erase/van-1/ack", json{{"requestId", "no-tick-1"}, {"status", "erased"}}.dump()) == 0);
    json receipt;
    for (const auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
        send({{"command", "getErasure"}, {"requestId", "no-tick-1"}});
        for (auto m = op.next(100ms); m; m = op.next(10ms)) {
            const json response = json::parse(m->to_string())["responses"][0];
            if (response["command"] == "getErasure") receipt = response["data"];
        }
        if (receipt.is_object() && receipt["state"] != "in_progress") break;
    }
    INFO(receipt.dump(2));
    CHECK(receipt["state"] == "completed");
    CHECK(receipt["totals"]["acknowledged"] == 1);
}

TEST_CASE("without observed logins, a device that keeps publishing is sent its unanswered command by the retry schedule",
          "[integration][erasure]") {
    erasure_setup setup;
    auto o = setup.options_with_timing("30", "120");
    o.plugin_opts.push_back({"track_logins", "false"});
    itest::broker b(o);
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), van(b, "van-chatty", 5);
    op.connect();
    van.connect();
    van.subscribe("gdpr/erase/van-chatty", 1);
    const std::string topic = "fleet/acme/vehicle/van-chatty/telemetry";
    REQUIRE(van.publish(topic, telemetry("driver-31")) == 0);
    REQUIRE_FALSE(control(op, {{"command", "eraseSubject"}, {"subject", "driver-31"}, {"requestId", "chatty-1"}}).contains("error"));
    const auto first = van.next(10s);
    REQUIRE(first);
    CHECK(first->get_topic() == "gdpr/erase/van-chatty");
    // Its publishes after the command are no sign that it came back: it never left. The command
    // it does not answer goes out again after 30 s, not at every publish.
    int repeats = 0;
    const auto until = std::chrono::steady_clock::now() + 4s;
    while (std::chrono::steady_clock::now() < until) {
        REQUIRE(van.publish(topic, telemetry("driver-32")) == 0);
        while (auto m = van.next(100ms))
            if (m->get_topic() == "gdpr/erase/van-chatty") ++repeats;
    }
    CHECK(repeats == 0);
    // Connected again, its first act counts as its login: the command comes at once.
    van.disconnect();
    van.connect();
    van.subscribe("gdpr/erase/van-chatty", 1);
    REQUIRE(van.publish(topic, telemetry("driver-32")) == 0);
    bool again = false;
    for (int i = 0; i < 100 && !again; ++i)
        if (auto m = van.next(100ms)) again = m->get_topic() == "gdpr/erase/van-chatty";
    CHECK(again);
}

TEST_CASE("a publisher's allowance of new data subjects bounds the data map: past it, publishes are refused and reported",
          "[integration][erasure][quota]") {
    erasure_setup setup;
    itest::broker b(setup.options_with_allowance("3", "1"));
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), van1(b, "van-1", 5), van2(b, "van-2", 5), dash(b, "dashboard", 5);
    op.connect();
    op.subscribe("$CONTROL/gdpr/v1/alerts", 1);
    van1.connect();
    van2.connect();
    dash.connect();
    dash.subscribe("fleet/#", 1);
    const std::string topic1 = "fleet/acme/vehicle/van-1/telemetry", topic2 = "fleet/acme/vehicle/van-2/telemetry";
    for (const char* driver : {"driver-1", "driver-2", "driver-3"}) CHECK(van1.publish(topic1, telemetry(driver)) == 0);
    CHECK(van1.publish(topic1, telemetry("driver-4")) == 135);  // a fourth new subject: over the allowance
    CHECK(van1.publish(topic1, telemetry("driver-1")) == 0);    // subjects already known cost nothing
    CHECK(van1.publish(topic1, R"({"speed":50})") == 0);        // nor does a publish without a subject
    CHECK(van2.publish(topic2, telemetry("driver-4")) == 0);    // another client has its own allowance
    CHECK(van2.publish(topic2, telemetry("driver-2")) == 0);
    // Only a publish that goes through is charged: ones refused as malformed cost nothing, even
    // with more new subjects than the allowance holds.
    itest::client van3(b, "van-3", 5);
    van3.connect();
    const std::string topic3 = "fleet/acme/vehicle/van-3/telemetry";
    for (const char* driver : {"driver-10", "driver-11", "driver-12", "driver-13"})
        CHECK(van3.publish(topic3, R"({"driver_id":")" + std::string(driver) + R"(","speed":50)") == 135);
    for (const char* driver : {"driver-10", "driver-11", "driver-12"}) CHECK(van3.publish(topic3, telemetry(driver)) == 0);
    CHECK(van3.publish(topic3, telemetry("driver-13")) == 135);

    std::map<std::string, int> delivered;
    for (const auto& m : dash.drain(500ms)) ++delivered[m->get_topic()];
    CHECK(delivered[topic1] == 5);
    CHECK(delivered[topic2] == 2);
    CHECK(delivered[topic3] == 3);

    auto alert = op.next(10s);
    REQUIRE(alert);
    CHECK(alert->get_topic() == "$CONTROL/gdpr/v1/alerts");
    const auto a = json::parse(alert->to_string());
    CHECK(a["alert"] == "new_subjects");
    CHECK_THAT(a["detail"].get<std::string>(), Catch::Contains("refused 1 publish") && Catch::Contains("client 'van-1'") &&
                                                   Catch::Contains("new_subjects_burst 3"));
    REQUIRE(b.wait_for_log("beyond the publisher's allowance"));
    CHECK(b.log().find("driver-4") == std::string::npos);  // no subject id in the log

    const auto stats = control(op, {{"command", "getStats"}});
    CHECK(stats["data"]["refusals"]["newSubjects"] == 2);
    CHECK(stats["data"]["refusals"]["invalidPayload"] == 4);
    CHECK(stats["data"]["newSubjectAllowance"]["burst"] == 3);
    CHECK(stats["data"]["newSubjectAllowance"]["perMinute"] == 1);

    // The refusal is in the audit trail, with its reason and no subject data.
    std::int64_t refused = 0;
    for (int i = 0; i < 40 && refused == 0; ++i) {
        std::this_thread::sleep_for(50ms);
        gdpr::sqlite_db d(setup.db, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(d.handle(), "SELECT count(*) FROM audit_records WHERE kind = 'publish_refused' AND "
                                             "client_id = 'van-1' AND sealed IS NULL AND "
                                             "json_extract(detail, '$.reason') LIKE '%allowance of new data subjects%'");
        q.step();
        refused = q.integer(0);
    }
    CHECK(refused == 1);
}

TEST_CASE("a gateway named in the options draws on its own, larger allowance, and other clients keep theirs",
          "[integration][erasure][quota]") {
    erasure_setup setup;
    auto o = setup.options_with_allowance("2", "1");
    o.plugin_opts.push_back({"gateway_client_ids", "building-gw"});
    o.plugin_opts.push_back({"gateway_usernames", "gw-user"});
    o.plugin_opts.push_back({"gateway_new_subjects_burst", "5"});
    o.plugin_opts.push_back({"gateway_new_subjects_per_minute", "1"});
    // Usernames without a password file: logins are not observed, so the plugin recognises a
    // gateway at its first publish and forgets it when the connection ends.
    o.plugin_opts.push_back({"track_logins", "false"});
    itest::broker b(o);
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), gw(b, "building-gw", 5), van(b, "van-1", 5);
    op.connect();
    op.subscribe("$CONTROL/gdpr/v1/alerts", 1);
    gw.connect();
    van.connect();
    const std::string gw_topic = "fleet/acme/vehicle/shuttle-gw/telemetry", van_topic = "fleet/acme/vehicle/van-1/telemetry";
    for (int i = 1; i <= 5; ++i) CHECK(gw.publish(gw_topic, telemetry("rider-" + std::to_string(i))) == 0);
    CHECK(gw.publish(gw_topic, telemetry("rider-6")) == 135);  // bounded all the same, and alerted
    CHECK(van.publish(van_topic, telemetry("driver-a")) == 0);
    CHECK(van.publish(van_topic, telemetry("driver-b")) == 0);
    CHECK(van.publish(van_topic, telemetry("driver-c")) == 135);
    auto alert = op.next(10s);
    REQUIRE(alert);
    CHECK_THAT(alert->to_string(), Catch::Contains("client 'building-gw'") && Catch::Contains("gateway_new_subjects_burst 5"));

    // Named by username: the same client id under another username is an ordinary client. (MQTT
    // v3.1.1: without observed logins, a v5 client reconnecting in the memory of its last
    // connection may have its first publish taken for that connection's will.)
    auto pub = [&](const std::string& username, const std::string& driver) {
        return itest::run_command("mosquitto_pub -h 127.0.0.1 -p " + std::to_string(b.port()) +
                                  " -V 311 -q 1 -i shared-id -u " + username + " -t " + van_topic + " -m '" +
                                  telemetry(driver) + "'")
            .first;
    };
    REQUIRE(pub("gw-user", "tenant-1") == 0);
    REQUIRE(pub("gw-user", "tenant-2") == 0);
    REQUIRE(pub("gw-user", "tenant-3") == 0);
    for (const char* driver : {"guest-1", "guest-2", "guest-3"}) REQUIRE(pub("someone-else", driver) == 0);

    const auto stats = control(op, {{"command", "getStats"}});
    INFO(stats.dump());
    const auto& gateways = stats["data"]["newSubjectAllowance"]["gateways"];
    CHECK(gateways["subjectsAdmitted"] == 8);  // building-gw 5, gw-user 3
    CHECK(gateways["refused"] == 1);
    CHECK(gateways["burst"] == 5);
    CHECK(stats["data"]["refusals"]["newSubjects"] == 3);  // rider-6, driver-c, guest-3
    const std::string log = b.log();
    CHECK(log.find("gateways (2 named) bring in new data subjects from their own allowance: 5 each, then 1 per minute") !=
          std::string::npos);
    CHECK(log.find("gateways are named by client id") != std::string::npos);
}

TEST_CASE("refusals past the new-subject allowance are reported at most every 10 s, the later ones together",
          "[integration][erasure][quota]") {
    erasure_setup setup;
    itest::broker b(setup.options_with_allowance("1", "1"));
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), van(b, "van-1", 5);
    op.connect();
    op.subscribe("$CONTROL/gdpr/v1/alerts", 1);
    van.connect();
    const std::string topic = "fleet/acme/vehicle/van-1/telemetry";
    CHECK(van.publish(topic, telemetry("driver-1")) == 0);
    CHECK(van.publish(topic, telemetry("driver-2")) == 135);
    const auto first_at = std::chrono::steady_clock::now();
    auto first = op.next(10s);
    REQUIRE(first);
    CHECK_THAT(json::parse(first->to_string())["detail"].get<std::string>(), Catch::Contains("refused 1 publish"));
    CHECK(van.publish(topic, telemetry("driver-3")) == 135);
    CHECK(van.publish(topic, telemetry("driver-4")) == 135);
    // Not one alert per refusal: the next comes once 10 s have passed, with no publish to prompt it.
    auto second = op.next(15s);
    REQUIRE(second);
    CHECK(std::chrono::steady_clock::now() - first_at >= 9s);
    const std::string detail = json::parse(second->to_string())["detail"];
    CHECK_THAT(detail, Catch::Contains("refused 2 publish(es)") && Catch::Contains("client 'van-1'"));
    CHECK(detail.find("driver-") == std::string::npos);
    CHECK_FALSE(op.next(500ms));
}

TEST_CASE("erasure refuses non-operators, keeps one request per id, rate-limits a subject, guards erase topics",
          "[integration][erasure][authorisation]") {
    erasure_setup setup;
    itest::broker b(setup.options());
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), device(b, "van-1", 5), spy(b, "spy", 5);
    op.connect();
    device.connect();
    spy.connect();
    CHECK(device.publish("fleet/acme/vehicle/van-1/telemetry", telemetry("driver-9")) == 0);

    const auto refused = control(spy, {{"command", "eraseSubject"}, {"subject", "driver-9"}, {"requestId", "x"}});
    CHECK_THAT(refused["error"].get<std::string>(), Catch::Contains("not authorised"));

    const auto first = control(op, {{"command", "eraseSubject"}, {"subject", "driver-9"}, {"requestId", "once"}});
    REQUIRE_FALSE(first.contains("error"));
    CHECK(first["data"]["requestId"] == "once");
    const auto again = control(op, {{"command", "eraseSubject"}, {"subject", "driver-9"}, {"requestId", "once"}});
    REQUIRE_FALSE(again.contains("error"));
    CHECK(again["data"]["requestedAt"] == first["data"]["requestedAt"]);  // the same request
    const auto other = control(op, {{"command", "eraseSubject"}, {"subject", "driver-1"}, {"requestId", "once"}});
    CHECK_THAT(other["error"].get<std::string>(), Catch::Contains("already used for another subject"));
    const auto limited = control(op, {{"command", "eraseSubject"}, {"subject", "driver-9"}, {"requestId", "twice"}});
    CHECK_THAT(limited["error"].get<std::string>(), Catch::Contains("rate limit"));
    // A request id is logged and alerted: one that carries the subject is refused, and nothing is logged.
    const auto named = control(op, {{"command", "eraseSubject"}, {"subject", "driver-1"}, {"requestId", "erase-driver-1"}});
    CHECK_THAT(named["error"].get<std::string>(), Catch::Contains("must not contain the subject"));
    CHECK(b.log().find("erase-driver-1") == std::string::npos);
    const auto shouted = control(op, {{"command", "eraseSubject"}, {"subject", "driver-1"}, {"requestId", "erase-DRIVER-1"}});
    CHECK_THAT(shouted["error"].get<std::string>(), Catch::Contains("must not contain the subject"));
    const auto bad = control(op, {{"command", "eraseSubject"}, {"subject", 9}, {"requestId", "t"}});
    CHECK_THAT(bad["error"].get<std::string>(), Catch::Contains("\"subject\" must be a string"));
    const auto unknown = control(op, {{"command", "getErasure"}, {"requestId", "nope"}});
    CHECK_THAT(unknown["error"].get<std::string>(), Catch::Contains("no erasure request"));

    // Only the plugin sends erase commands; only the addressed device may read or answer them.
    CHECK(spy.publish("gdpr/erase/van-1", R"({"requestId":"once","subject":"driver-9"})") == 135);
    CHECK(spy.publish("gdpr/erase/van-1/ack", R"({"requestId":"once","status":"erased"})") == 135);
    CHECK(suback_reason(spy, "gdpr/erase/van-1") == 135);
    CHECK(suback_reason(spy, "gdpr/#") == 1);  // allowed, but other devices' erase traffic is withheld
    CHECK(suback_reason(device, "gdpr/erase/van-1") == 1);
    auto cmd = device.next(10s);
    REQUIRE(cmd);
    CHECK(cmd->get_topic() == "gdpr/erase/van-1");
    CHECK(device.publish("gdpr/erase/van-1/ack", R"({"requestId":"once","status":"erased"})") == 0);
    for (const auto& m : spy.drain()) CHECK(m->get_topic().rfind("gdpr/erase/", 0) != 0);

    json list;
    for (const auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
        list = control(op, {{"command", "listErasures"}})["data"]["erasures"];
        if (!list.empty() && list[0]["state"] != "in_progress") break;
        std::this_thread::sleep_for(50ms);
    }
    REQUIRE(list.size() == 1);
    CHECK(list[0]["requestId"] == "once");
    CHECK(list[0]["state"] == "completed");
    CHECK(b.log().find("driver-9") == std::string::npos);
}

TEST_CASE("after a restart, an erasure still clears a retained message on a topic that names the subject",
          "[integration][erasure]") {
    erasure_setup setup;
    itest::broker_options o = setup.options();
    // The broker keeps its retained messages across the restart, as a production broker does.
    o.extra_config = "persistence true\npersistence_location " + setup.dir.path().string() + "/\n";
    const std::string topic = "health/wearable/u-31/vitals";
    {
        itest::broker b(o);
        itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), band(b, "band-31", 5), watcher(b, "watcher", 5);
        op.connect();
        band.connect();
        watcher.connect();
        REQUIRE_FALSE(control(op, {{"command", "setConsent"}, {"subject", "u-31"}, {"purpose", "health-monitoring"},
                                   {"granted", true}})
                          .contains("error"));
        watcher.subscribe("health/#", 1);
        CHECK(band.publish(topic, R"({"hr":71,"spo2":98,"battery":80})", 1, true) == 0);
        REQUIRE(watcher.next(10s));
    }
    {
        // The file holds the topic sealed: not the subject id.
        gdpr::sqlite_db raw(setup.db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT holder FROM data_map WHERE role = 'retained'");
        REQUIRE(q.step());
        CHECK(gdpr::topic_sealer::is_sealed(q.text(0)));
        CHECK(q.text(0).find("u-31") == std::string::npos);
    }
    itest::broker b(o);
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), before(b, "before", 5);
    op.connect();
    before.connect();
    before.subscribe(topic, 1);
    REQUIRE(before.next(10s));  // the broker kept the retained message across the restart

    const auto r = control(op, {{"command", "eraseSubject"}, {"subject", "u-31"}, {"requestId", "after-restart"}});
    REQUIRE_FALSE(r.contains("error"));
    const auto cleared = control(op, {{"command", "getErasure"}, {"requestId", "after-restart"}})["data"]["plugin"];
    CHECK(cleared["retainedCleared"] == json::array({"health/wearable/<subject>/vitals"}));
    // Cleared before the request's answer went out.
    itest::client after(b, "after", 5);
    after.connect();
    after.subscribe(topic, 1);
    CHECK_FALSE(after.next(700ms));
    // The plugin's lines name the topic masked (the broker's own debug lines are not ours).
    std::istringstream log(b.log());
    for (std::string line; std::getline(log, line);)
        if (line.find("gdpr: ") != std::string::npos) CHECK(line.find("u-31") == std::string::npos);
}

TEST_CASE("a retained message an erasure cleared stays cleared after a crash before the broker saved it",
          "[integration][erasure]") {
    erasure_setup setup;
    // A short deadline: the request is over before the crash, so that no resumed request erases
    // the message set after it (it carries the subject's data too).
    itest::broker_options o = setup.options_with_timing("1", "3");
    // The broker saves its retained messages when it stops cleanly and every 30 minutes (its
    // default autosave_interval): a crash in between brings back what the file held.
    o.extra_config = "persistence true\npersistence_location " + setup.dir.path().string() + "/\n";
    const std::string topic = "health/wearable/u-32/vitals";
    const auto rows = [&](const char* sql) {
        gdpr::sqlite_db raw(setup.db, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(raw.handle(), sql);
        REQUIRE(q.step());
        return q.integer(0);
    };
    const char* const notes = "SELECT count(*) FROM data_map_cleared_retained";
    {
        itest::broker b(o);
        itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), band(b, "band-32", 5), watcher(b, "watcher", 5);
        op.connect();
        band.connect();
        watcher.connect();
        REQUIRE_FALSE(control(op, {{"command", "setConsent"}, {"subject", "u-32"}, {"purpose", "health-monitoring"},
                                   {"granted", true}})
                          .contains("error"));
        watcher.subscribe("health/#", 1);
        CHECK(band.publish(topic, R"({"hr":72,"spo2":97,"battery":80})", 1, true) == 0);
        REQUIRE(watcher.next(10s));
    }  // a clean stop: the broker's file holds the retained message
    {
        itest::broker b(o);
        itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), before(b, "before", 5);
        op.connect();
        before.connect();
        before.subscribe(topic, 1);
        REQUIRE(before.next(10s));
        REQUIRE_FALSE(control(op, {{"command", "eraseSubject"}, {"subject", "u-32"}, {"requestId", "crash-after-clear"}})
                          .contains("error"));
        bool noted = false;
        for (const auto until = std::chrono::steady_clock::now() + 20s; !noted && std::chrono::steady_clock::now() < until;) {
            noted = rows(notes) == 1 && rows("SELECT count(*) FROM data_map WHERE role = 'retained'") == 0;
            if (!noted) std::this_thread::sleep_for(50ms);
        }
        REQUIRE(noted);
        json receipt;
        for (const auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
            receipt = control(op, {{"command", "getErasure"}, {"requestId", "crash-after-clear"}})["data"];
            if (receipt["state"] != "in_progress") break;
            std::this_thread::sleep_for(100ms);
        }
        REQUIRE(receipt["state"] == "completed_with_failures");
        {
            // Noted as the data map stores a topic that names a subject: sealed.
            gdpr::sqlite_db raw(setup.db, gdpr::sqlite_db::read_only);
            gdpr::sqlite_statement q(raw.handle(), "SELECT holder FROM data_map_cleared_retained");
            REQUIRE(q.step());
            CHECK(gdpr::topic_sealer::is_sealed(q.text(0)));
        }
        itest::client after(b, "after", 5);
        after.connect();
        after.subscribe(topic, 1);
        CHECK_FALSE(after.next(700ms));
        b.kill_hard();  // before the broker saved its retained messages again
    }
    {
        itest::broker b(o);
        CHECK(b.wait_for_log("cleared 1 retained topic(s) again"));
        itest::client after(b, "after-crash", 5), band(b, "band-32", 5);
        after.connect();
        after.subscribe(topic, 1);
        CHECK_FALSE(after.next(700ms));  // the file brought it back; the plugin cleared it again
        // A message set since is the broker's to keep: a clean stop saves it, and the note goes.
        band.connect();
        CHECK(band.publish(topic, R"({"battery":81})", 1, true) == 0);
        REQUIRE(after.next(10s));
    }
    CHECK(rows(notes) == 0);
    itest::broker b(o);
    itest::client later(b, "later", 5);
    later.connect();
    later.subscribe(topic, 1);
    const auto kept = later.next(10s);
    REQUIRE(kept);
    CHECK(kept->to_string().find("81") != std::string::npos);
    CHECK(b.log().find("retained topic(s) again") == std::string::npos);
}

TEST_CASE("holders seen before the audit key was configured are still told of an erasure and exported",
          "[integration][erasure][export]") {
    erasure_setup setup;
    const std::string pseudonym_key = setup.dir.write("pseudonym.key", itest::random_bytes(32), 0600);
    const std::string topic = "fleet/acme/vehicle/v51/telemetry";
    {
        // Without recording: the data map names subjects by pseudonym.
        itest::broker_options o = setup.options_without_audit_key();
        o.plugin_opts.push_back({"pseudonym_key_file", pseudonym_key});
        itest::broker b(o);
        itest::client van(b, "v51", 5), watcher(b, "watcher", 5);
        van.connect();
        watcher.connect();
        watcher.subscribe("fleet/#", 1);
        CHECK(van.publish(topic, R"({"driver_id":"D-51","speed":40})") == 0);
        REQUIRE(watcher.next(10s));
        // A retained message on a topic that names its subject: stored sealed under the pseudonymisation key.
        itest::client band(b, "band-51", 5);
        band.connect();
        CHECK(band.publish("health/wearable/u-51/vitals", R"({"battery":80})", 1, true) == 0);
    }
    itest::broker_options o = setup.options();  // recording on from now
    o.plugin_opts.push_back({"pseudonym_key_file", pseudonym_key});
    itest::broker b(o);
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5);
    op.connect();
    const auto exported = control(op, {{"command", "exportSubject"}, {"subject", "D-51"}});
    REQUIRE_FALSE(exported.contains("error"));
    INFO(exported.dump());
    CHECK(holder_client_ids(exported) == std::set<std::string>{"v51", "watcher"});

    REQUIRE_FALSE(control(op, {{"command", "eraseSubject"}, {"subject", "D-51"}, {"requestId", "earlier"}}).contains("error"));
    const auto request = control(op, {{"command", "getErasure"}, {"requestId", "earlier"}, {"targets", true}})["data"];
    INFO(request.dump());
    CHECK(target_client_ids(request) == std::set<std::string>{"v51", "watcher"});

    // Its export opens the topic sealed under the pseudonymisation key (GDPR Art. 15).
    const auto band_export = control(op, {{"command", "exportSubject"}, {"subject", "u-51"}});
    REQUIRE_FALSE(band_export.contains("error"));
    CHECK(band_export["data"]["holders"]["retained_topics"].size() == 1);
    CHECK_FALSE(band_export["data"]["holders"].contains("sealed_retained_topics"));
    REQUIRE_FALSE(control(op, {{"command", "eraseSubject"}, {"subject", "u-51"}, {"requestId", "sealed"}}).contains("error"));
    const auto sealed = control(op, {{"command", "getErasure"}, {"requestId", "sealed"}, {"targets", true}})["data"];
    INFO(sealed.dump());
    CHECK(sealed["plugin"]["retainedCleared"] == json::array({"health/wearable/<subject>/vitals"}));
    CHECK(sealed["targets"].size() == 1);
    CHECK(b.log().find("cannot open") == std::string::npos);  // no sealed topic left unreadable
}

TEST_CASE("an erasure finished before the audit key was configured still answers to its request id and rate-limits",
          "[integration][erasure]") {
    erasure_setup setup;
    const std::string pseudonym_key = setup.dir.write("pseudonym.key", itest::random_bytes(32), 0600);
    {
        // Pseudonymisation key only: the register names the subject by pseudonym. Nobody holds
        // D-99's data, so the data map keeps nothing under that name.
        itest::broker_options o = setup.options_without_audit_key();
        o.plugin_opts.push_back({"pseudonym_key_file", pseudonym_key});
        itest::broker b(o);
        itest::client op(b, itest::OPERATOR_CLIENT_ID, 5);
        op.connect();
        const auto first = control(op, {{"command", "eraseSubject"}, {"subject", "D-99"}, {"requestId", "p-era"}});
        REQUIRE_FALSE(first.contains("error"));
    }
    itest::broker_options o = setup.options();
    o.plugin_opts.push_back({"pseudonym_key_file", pseudonym_key});
    itest::broker b(o);
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5);
    op.connect();
    const auto same = control(op, {{"command", "eraseSubject"}, {"subject", "D-99"}, {"requestId", "p-era"}});
    INFO(same.dump());
    CHECK(same["data"]["requestId"] == "p-era");
    const auto again = control(op, {{"command", "eraseSubject"}, {"subject", "D-99"}, {"requestId", "audit-era"}});
    INFO(again.dump());
    REQUIRE(again.contains("error"));
    CHECK_THAT(again["error"].get<std::string>(), Catch::Contains("rate limit"));
}

TEST_CASE("subjects stored by id before any key file are renamed once one is configured, and erasures still reach them",
          "[integration][erasure]") {
    erasure_setup setup;
    // Schemas that need no pseudonymisation key, so that the first broker runs with no key file.
    setup.dir.write("schemas/purposes.json", R"({"purposes":{"fleet-ops":{"lawfulBasis":"contract"}}})");
    setup.dir.write("schemas/fleet.json", R"({"id":"fleet","version":1,"topics":["fleet/+/telemetry"],
        "subject":{"field":"/driver_id"},"unclassified":"drop",
        "fields":{"/driver_id":{"category":"identifier","personal":true,"purpose":"fleet-ops","action":"keep"},
                  "/speed":{"category":"motion","personal":true,"purpose":"fleet-ops","action":"keep"}}})");
    setup.dir.write("schemas/health.json", R"({"id":"health","version":1,"topics":["health/+/vitals"],
        "subject":{"topicLevel":1},"unclassified":"drop",
        "fields":{"/battery":{"category":"device","personal":false}}})");
    const std::string vitals = "health/u-61/vitals";
    auto options = [&](bool audit_key) {
        itest::broker_options o = audit_key ? setup.options() : setup.options_without_audit_key();
        o.plugin_opts.push_back({"schemas", (setup.dir.path() / "schemas").string()});
        o.plugin_opts.push_back({"pseudonym_key_file", ""});
        return o;
    };
    // A running broker's file is only read from outside, as gdprctl does.
    auto rows_naming = [&](const std::string& id) {
        gdpr::sqlite_db raw(setup.db, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(raw.handle(), "SELECT count(*) FROM data_map WHERE subject_ref = ?1 OR instr(holder, ?1) > 0");
        q.bind(1, id);
        REQUIRE(q.step());
        return q.integer(0);
    };
    {
        // No key file at all: the data map names subjects, and stores topics, in clear.
        itest::broker b(options(false));
        CHECK(b.log().find("subject ids are kept in clear") != std::string::npos);
        itest::client van(b, "v61", 5), watcher(b, "watcher", 5), band(b, "band-61", 5);
        van.connect();
        watcher.connect();
        band.connect();
        watcher.subscribe("fleet/#", 1);
        CHECK(van.publish("fleet/v61/telemetry", R"({"driver_id":"D-61","speed":40})") == 0);
        REQUIRE(watcher.next(10s));
        CHECK(band.publish(vitals, R"({"battery":80})", 1, true) == 0);
        // An erasure of a subject nobody holds finishes at once; the register names it by id.
        itest::client op(b, itest::OPERATOR_CLIENT_ID, 5);
        op.connect();
        REQUIRE_FALSE(control(op, {{"command", "eraseSubject"}, {"subject", "D-62"}, {"requestId", "no-key"}}).contains("error"));
    }
    auto register_naming = [&](const std::string& id) {
        gdpr::sqlite_db raw(setup.db, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(raw.handle(), "SELECT count(*) FROM erasure_requests WHERE subject_ref = ?1 OR subject = ?1");
        q.bind(1, id);
        REQUIRE(q.step());
        return q.integer(0);
    };
    REQUIRE(register_naming("D-62") == 1);
    REQUIRE(rows_naming("D-61") == 2);  // publisher and recipient, by id
    REQUIRE(rows_naming("u-61") == 2);  // publisher by id, and the topic in clear
    itest::broker b(options(true));
    CHECK(b.log().find("2 data subject(s) in the data map, stored by id before a key file was configured") !=
          std::string::npos);
    CHECK(b.log().find("1 erasure request(s), made under no key file or an earlier one, now name their subject") !=
          std::string::npos);
    CHECK(rows_naming("D-61") == 0);
    CHECK(rows_naming("u-61") == 0);
    CHECK(register_naming("D-62") == 0);
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5);
    op.connect();
    // An export finds the renamed holders (GDPR Art. 15).
    const auto exported = control(op, {{"command", "exportSubject"}, {"subject", "D-61"}});
    INFO(exported.dump());
    CHECK(holder_client_ids(exported) == std::set<std::string>{"v61", "watcher"});
    // The request is still itself, and still limits the subject's next one.
    CHECK(control(op, {{"command", "eraseSubject"}, {"subject", "D-62"}, {"requestId", "no-key"}})["data"]["requestId"] == "no-key");
    CHECK_THAT(control(op, {{"command", "eraseSubject"}, {"subject", "D-62"}, {"requestId", "again"}})["error"].get<std::string>(),
               Catch::Contains("rate limit"));
    REQUIRE_FALSE(control(op, {{"command", "eraseSubject"}, {"subject", "D-61"}, {"requestId", "renamed"}}).contains("error"));
    const auto request = control(op, {{"command", "getErasure"}, {"requestId", "renamed"}, {"targets", true}})["data"];
    INFO(request.dump());
    CHECK(target_client_ids(request) == std::set<std::string>{"v61", "watcher"});
    REQUIRE_FALSE(control(op, {{"command", "eraseSubject"}, {"subject", "u-61"}, {"requestId", "topic"}}).contains("error"));
    const auto topic = control(op, {{"command", "getErasure"}, {"requestId", "topic"}})["data"];
    INFO(topic.dump());
    CHECK(topic["plugin"]["retainedCleared"] == json::array({"health/<subject>/vitals"}));
}

TEST_CASE("a retained will holding a subject's data is known to the data map: its erasure clears it",
          "[integration][erasure][will]") {
    erasure_setup setup;
    itest::broker b(setup.options());
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), watcher(b, "watcher", 5);
    op.connect();
    watcher.connect();
    watcher.subscribe("health/#", 1);
    // A wearable that drops off leaves a retained will on a topic that names its wearer.
    const std::string topic = "health/wearable/u-41/vitals";
    itest::connect_and_vanish(b, "band-41", topic, "{}", 1, true);
    REQUIRE(watcher.next(10s));
    itest::client late(b, "late", 5);
    late.connect();
    late.subscribe(topic, 1);
    REQUIRE(late.next(10s));  // the retained will

    const auto r = control(op, {{"command", "eraseSubject"}, {"subject", "u-41"}, {"requestId", "will"}});
    REQUIRE_FALSE(r.contains("error"));
    const auto request = control(op, {{"command", "getErasure"}, {"requestId", "will"}, {"targets", true}})["data"];
    INFO(request.dump());
    CHECK(request["plugin"]["retainedCleared"] == json::array({"health/wearable/<subject>/vitals"}));
    // Its publisher and both recipients (live, and from the retained copy) are holders the erasure tells.
    const auto targets = target_client_ids(request);
    CHECK(targets.count("band-41"));
    CHECK(targets.count("watcher"));
    CHECK(targets.count("late"));
    itest::client after(b, "after", 5);
    after.connect();
    after.subscribe(topic, 1);
    CHECK_FALSE(after.next(700ms));
}

TEST_CASE("the recipients of a will that is not retained are holders its subject's erasure tells",
          "[integration][erasure][will]") {
    erasure_setup setup;
    itest::broker b(setup.options());
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), watcher(b, "watcher", 5), away(b, "away", 5);
    op.connect();
    watcher.connect();
    watcher.subscribe("health/#", 1);
    // A persistent session whose client is away: the broker queues the will for it.
    away.connect(std::nullopt, false);
    away.subscribe("health/#", 1);
    away.disconnect();
    const std::string topic = "health/wearable/u-44/vitals";
    itest::connect_and_vanish(b, "band-44", topic, "{}", 1);
    REQUIRE(watcher.next(10s));

    const auto r = control(op, {{"command", "eraseSubject"}, {"subject", "u-44"}, {"requestId", "will-live"}});
    REQUIRE_FALSE(r.contains("error"));
    const auto request = control(op, {{"command", "getErasure"}, {"requestId", "will-live"}, {"targets", true}})["data"];
    INFO(request.dump());
    CHECK(target_client_ids(request) == std::set<std::string>{"away", "band-44", "watcher"});
    CHECK(request["plugin"]["retainedCleared"].empty());
}

TEST_CASE("a will that would bring new data subjects past its client's allowance is not sent", "[integration][quota][will]") {
    erasure_setup setup;
    itest::broker b(setup.options_with_allowance("1", "1"));
    itest::client watcher(b, "watcher", 5);
    watcher.connect();
    watcher.subscribe("health/#", 1);
    itest::connect_and_vanish(b, "band-43", "health/wearable/u-43a/vitals", "{}", 1);
    REQUIRE(watcher.next(10s));  // its one new subject fits the allowance
    // The same device again, its will naming another wearer: the allowance refills one a minute.
    itest::connect_and_vanish(b, "band-43", "health/wearable/u-43b/vitals", "{}", 1);
    CHECK_FALSE(watcher.next(1s));
    CHECK(b.wait_for_log("publish(es) or will(s) bringing data subjects the broker had not seen"));
}

TEST_CASE("the broker's own part: retained data cleared, consent and bindings removed, the data key shredded, all recorded",
          "[integration][erasure][audit]") {
    erasure_setup setup;
    const std::string topic = "fleet/acme/vehicle/van-1/telemetry";
    {
        itest::broker b(setup.options());
        itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), van(b, "van-1", 5), late(b, "late-subscriber", 5);
        op.connect();
        van.connect();
        late.connect();
        REQUIRE_FALSE(control(op, {{"command", "setConsent"}, {"subject", "driver-12"}, {"purpose", "route-analytics"},
                                   {"granted", true}})
                          .contains("error"));
        REQUIRE_FALSE(control(op, {{"command", "bindDevice"}, {"clientId", "van-1"}, {"subject", "driver-12"}}).contains("error"));
        CHECK(van.publish(topic, telemetry("driver-12"), 1, true) == 0);
        late.subscribe(topic, 1);  // receives the retained message: a recipient too
        REQUIRE(late.next(10s));

        const auto r = control(op, {{"command", "eraseSubject"}, {"subject", "driver-12"}, {"requestId", "own-part"}});
        REQUIRE_FALSE(r.contains("error"));
        CHECK(r["data"]["totals"]["targets"] == 2);
        for (auto* holder : {&van, &late}) {
            std::string id = holder == &van ? "van-1" : "late-subscriber";
            mqtt::const_message_ptr cmd;
            for (int i = 0; i < 10 && (!cmd || cmd->get_topic() != "gdpr/erase/" + id); ++i) cmd = holder->next(1s);
            REQUIRE(cmd);
            CHECK(holder->publish("gdpr/erase/" + id + "/ack", json{{"requestId", "own-part"}, {"status", "erased"}}.dump()) == 0);
        }
        json receipt;
        for (const auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
            receipt = control(op, {{"command", "getErasure"}, {"requestId", "own-part"}})["data"];
            if (receipt["state"] != "in_progress") break;
            std::this_thread::sleep_for(50ms);
        }
        INFO(receipt.dump(2));
        CHECK(receipt["state"] == "completed");
        CHECK(receipt["plugin"]["retainedCleared"] == json::array({topic}));
        CHECK(receipt["plugin"]["consentEventsRemoved"] == 1);
        CHECK(receipt["plugin"]["bindingsRemoved"] == 1);
        CHECK(receipt["plugin"]["keyShredded"] == true);

        // Nothing of the subject is left on the broker.
        itest::client fresh(b, "fresh-subscriber", 5);
        fresh.connect();
        fresh.subscribe(topic, 1);
        CHECK_FALSE(fresh.next(700ms));
        const auto consent = control(op, {{"command", "getConsent"}, {"subject", "driver-12"}});
        CHECK(consent["data"]["granted"].empty());
        CHECK(consent["data"]["history"].empty());
        CHECK(control(op, {{"command", "listBindings"}, {"subject", "driver-12"}})["data"]["bindings"].empty());
    }
    // Offline: the trail still verifies, records the erasure, and the subject's records are unreadable.
    const auto [verify_status, verify_out] = run(std::string(GDPRCTL_PATH) + " verify " + setup.db);
    CHECK(verify_status == 0);
    const auto [report_status, report_out] = run(std::string(GDPRCTL_PATH) + " report " + setup.db + " --json");
    CHECK(report_status == 0);
    CHECK_THAT(report_out, Catch::Contains("erasure"));
    const auto [export_status, export_out] =
        run(std::string(GDPRCTL_PATH) + " export " + setup.db + " --subject driver-12 --key-file " + setup.key);
    CHECK(export_status == 0);
    const auto doc = json::parse(export_out);
    CHECK(doc["records"].empty());
    CHECK(doc["unreadable_records"].get<int>() > 0);
    CHECK(doc["consent_history"].empty());
    // The file keeps no subject id in clear: the data map and the finished request hold its reference only.
    std::ifstream in(setup.db, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    CHECK(bytes.str().find("driver-12") == std::string::npos);
}


TEST_CASE("another process's read-write connection to the live database leaves the broker's log in place",
          "[integration][storage]") {
    // An operator's sqlite3 shell, say: on closing, a connection that can lock the file exclusively
    // takes itself for the last one and checks the write-ahead log in and deletes it. The broker's
    // connections must keep holding their locks for that to be refused.
    erasure_setup setup;
    itest::broker b(setup.options());
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), van(b, "v80", 5);
    op.connect();
    van.connect();
    const int rounds = 10;
    for (int round = 0; round < rounds; ++round) {
        const std::string driver = "D-8" + std::to_string(round);
        CHECK(van.publish("fleet/acme/vehicle/v80/telemetry", R"({"driver_id":")" + driver + R"(","speed":40})") == 0);
        std::this_thread::sleep_for(150ms);
        sqlite3* outside = nullptr;
        REQUIRE(sqlite3_open_v2(setup.db.c_str(), &outside, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
        sqlite3_busy_timeout(outside, 5000);
        CHECK(sqlite3_exec(outside, "SELECT count(*) FROM data_map", nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close_v2(outside);
        const auto exported = control(op, {{"command", "exportSubject"}, {"subject", driver}});
        INFO(exported.dump());
        CHECK_FALSE(exported.contains("error"));
    }
    b.stop();
    // Nothing written after one of those closes was lost with a deleted log.
    gdpr::sqlite_db raw(setup.db, gdpr::sqlite_db::read_only);
    gdpr::sqlite_statement q(raw.handle(), "SELECT count(*) FROM data_map WHERE role = 'publisher' AND holder = 'v80'");
    REQUIRE(q.step());
    CHECK(q.integer(0) == rounds);
    const auto [status, out] = itest::run_command(std::string(GDPRCTL_PATH) + " verify " + setup.db);
    INFO(out);
    CHECK(status == 0);
}
