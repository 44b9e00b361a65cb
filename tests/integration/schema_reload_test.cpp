// Schema reload on a running broker: the control API's reloadSchemas and the broker's SIGHUP put
// an edited schemas directory in use without dropping a connection; a directory that does not
// load changes nothing and is reported.
#include <catch2/catch.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "broker_fixture.hpp"
#include "gdpr/sqlite.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string VEHICLE = "fleet/acme/vehicle/v7/telemetry";
const std::string VEHICLE_PAYLOAD = R"({"driver_id":"D-7","phone":"+49 170 1234567","speed":50})";
const std::string LAB = "lab/l1/reading";
const std::string LAB_SCHEMA = R"({"id": "lab-sensor", "version": 1, "topics": ["lab/+/reading"],
  "fields": {"/operator_name": {"category": "identifier", "personal": true, "purpose": "fleet-operations",
                                "action": "drop"}}})";

// A copy of the example schemas the test may edit.
struct reload_setup {
    itest::scratch_dir dir;
    fs::path schemas = dir.path() / "schemas";
    reload_setup() { fs::copy(fs::path(itest::source_dir()) / "schemas", schemas, fs::copy_options::recursive); }

    void write(const std::string& name, const std::string& text) const { std::ofstream(schemas / name) << text; }
    // vehicle-telemetry with another version and its phone number dropped instead of masked.
    void edit_vehicle_schema(int version) const {
        std::ifstream in(schemas / "vehicle-telemetry.json");
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        text = std::regex_replace(text, std::regex("\"version\": [0-9]+"), "\"version\": " + std::to_string(version));
        text = std::regex_replace(text, std::regex("\"action\": \"mask\",\\s*\"mask\": \"\\*\\*\\*\""), "\"action\": \"drop\"");
        write("vehicle-telemetry.json", text);
    }
    // Recording on, and residency enforced: a client named us-* sits in a region EU data may not go to.
    itest::broker_options options() const {
        itest::broker_options o;
        o.plugin_opts = {{"schemas", schemas.string()},
                         {"operator_client_ids", std::string(itest::OPERATOR_CLIENT_ID) + ",alert-watcher,gdprctl-op"},
                         {"audit_key_file", dir.write("audit.key", itest::random_bytes(32), 0600)},
                         {"database", (dir.path() / "gdpr.db").string()},
                         {"residency_file", dir.write("residency.json", R"({"regions": ["eu", "us"],
                             "transfers": {"us": ["eu"]}, "defaultRegion": "eu",
                             "clients": [{"clientId": "us-*", "region": "us"}]})")}};
        return o;
    }
};

json control(itest::client& c, const json& command) {
    const std::string answer = itest::control_exchange(c, json{{"commands", json::array({command})}}.dump());
    if (answer.empty()) FAIL("no control response");
    return json::parse(answer)["responses"][0];
}

// The schema tag and payload a subscriber gets for one publish.
std::pair<std::string, std::string> forwarded(itest::client& pub, itest::client& sub, const std::string& topic,
                                              const std::string& payload) {
    REQUIRE(pub.publish(topic, payload, 1) == 0);
    auto msg = sub.next(10s);
    REQUIRE(msg);
    return {itest::user_property(msg, "gdpr-schema").value_or(""), msg->to_string()};
}

// The details of the control records in the broker's audit trail, oldest first (stop the broker first).
std::vector<json> control_records(const reload_setup& setup) {
    gdpr::sqlite_db raw((setup.dir.path() / "gdpr.db").string());
    gdpr::sqlite_statement q(raw.handle(), "SELECT detail FROM audit_records WHERE kind = 'control' ORDER BY seq");
    std::vector<json> details;
    while (q.step()) details.push_back(json::parse(q.text(0)));
    return details;
}

bool alert_names(itest::client& alerts, const std::string& text) {
    for (int i = 0; i < 10; ++i) {
        auto m = alerts.next(300ms);
        if (m && m->get_topic() == "$CONTROL/gdpr/v1/alerts" && m->to_string().find(text) != std::string::npos)
            return true;
    }
    return false;
}

// A broker on a copy of the example schemas, with an operator, a vehicle, a dashboard subscribed to
// fleet/# and lab/#, and alerts on a connection of their own (control() passes over what is not
// its answer).
struct reload_broker {
    reload_setup setup;
    itest::broker b{setup.options()};
    itest::client op{b, itest::OPERATOR_CLIENT_ID, 5}, pub{b, "v7", 5}, sub{b, "dashboard", 5};
    itest::client alerts{b, "alert-watcher", 5};
    reload_broker() {
        for (auto* c : {&op, &pub, &sub, &alerts}) c->connect();
        sub.subscribe("fleet/#", 1);
        sub.subscribe("lab/#", 1);
        alerts.subscribe("$CONTROL/gdpr/v1/alerts", 1);
    }
};

} // namespace

TEST_CASE("reloadSchemas puts an edited schemas directory in use at once, and one that does not load changes nothing",
          "[integration][schema][control]") {
    reload_broker fixture;
    auto& setup = fixture.setup;
    auto& b = fixture.b;
    auto &op = fixture.op, &pub = fixture.pub, &sub = fixture.sub, &alerts = fixture.alerts;
    auto [tag, payload] = forwarded(pub, sub, VEHICLE, VEHICLE_PAYLOAD);
    CHECK(tag == "vehicle-telemetry@3");
    CHECK(json::parse(payload)["phone"] == "***");
    CHECK(forwarded(pub, sub, LAB, R"({"operator_name":"Ann","t":1})").first.empty());  // no schema yet

    setup.edit_vehicle_schema(4);
    setup.write("lab-sensor.json", LAB_SCHEMA);
    fs::remove(setup.schemas / "home-presence.json");
    // A schema whose file is gone (a deploy half done?) would leave its topics unclassified: only
    // removed when asked for.
    const auto kept = control(op, {{"command", "reloadSchemas"}});
    REQUIRE(kept.contains("error"));
    CHECK_THAT(kept["error"].get<std::string>(),
               Catch::Contains("would remove home-presence@2") && Catch::Contains("allowRemovals"));
    CHECK(forwarded(pub, sub, VEHICLE, VEHICLE_PAYLOAD).first == "vehicle-telemetry@3");
    const auto r = control(op, {{"command", "reloadSchemas"}, {"allowRemovals", true}, {"correlationData", "r1"}});
    INFO(r.dump());
    REQUIRE_FALSE(r.contains("error"));
    CHECK(r["correlationData"] == "r1");
    CHECK(r["data"]["schemas"] == 5);
    CHECK(r["data"]["added"] == json::array({"lab-sensor@1"}));
    CHECK(r["data"]["removed"] == json::array({"home-presence@2"}));
    CHECK(r["data"]["newVersions"] == json::array({"vehicle-telemetry@3 -> vehicle-telemetry@4"}));
    CHECK(r["data"]["editedWithoutNewVersion"].empty());
    // The same connections, the new rules.
    std::tie(tag, payload) = forwarded(pub, sub, VEHICLE, VEHICLE_PAYLOAD);
    CHECK(tag == "vehicle-telemetry@4");
    CHECK_FALSE(json::parse(payload).contains("phone"));
    std::tie(tag, payload) = forwarded(pub, sub, LAB, R"({"operator_name":"Ann","t":1})");
    CHECK(tag == "lab-sensor@1");
    CHECK(payload == R"({})");  // the operator's name dropped, the unclassified "t" too
    CHECK(b.log().find("reloaded 5 schemas") != std::string::npos);
    CHECK(b.log().find("schema(s) removed by a reload: home-presence@2") != std::string::npos);

    // A file that does not parse: refused with its name, the schemas in use stay.
    setup.write("broken.json", "{");
    const auto bad = control(op, {{"command", "reloadSchemas"}});
    REQUIRE(bad.contains("error"));
    CHECK_THAT(bad["error"].get<std::string>(), Catch::Contains("schemas not reloaded, the ones in use stay") &&
                                                    Catch::Contains("broken.json"));
    CHECK(forwarded(pub, sub, VEHICLE, VEHICLE_PAYLOAD).first == "vehicle-telemetry@4");
    // A schema naming a purpose purposes.json does not have: refused as well.
    fs::remove(setup.schemas / "broken.json");
    setup.write("lab-sensor.json", std::regex_replace(LAB_SCHEMA, std::regex("fleet-operations"), "marketing"));
    const auto unknown = control(op, {{"command", "reloadSchemas"}});
    REQUIRE(unknown.contains("error"));
    CHECK_THAT(unknown["error"].get<std::string>(), Catch::Contains("marketing"));
    CHECK(forwarded(pub, sub, LAB, R"({"operator_name":"Ann","t":1})").first == "lab-sensor@1");

    // A version going back is refused: id@version would name two sets of rules.
    setup.write("lab-sensor.json", LAB_SCHEMA);
    setup.edit_vehicle_schema(2);
    CHECK_THAT(control(op, {{"command", "reloadSchemas"}})["error"].get<std::string>(),
               Catch::Contains("vehicle-telemetry@4 -> vehicle-telemetry@2 goes back"));
    setup.edit_vehicle_schema(4);
    // Layout alone is no change of rules.
    setup.write("lab-sensor.json", "\n\n  " + LAB_SCHEMA + "\n");
    const auto layout = control(op, {{"command", "reloadSchemas"}});
    REQUIRE_FALSE(layout.contains("error"));
    CHECK(layout["data"]["editedWithoutNewVersion"].empty());

    // A file edited under the same version loads, with a warning and an alert: the audit trail
    // names a publish's rules by id@version only.
    setup.write("lab-sensor.json", std::regex_replace(LAB_SCHEMA, std::regex("\"drop\""), "\"mask\", \"mask\": \"?\""));
    const auto same = control(op, {{"command", "reloadSchemas"}});
    REQUIRE_FALSE(same.contains("error"));
    CHECK(same["data"]["editedWithoutNewVersion"] == json::array({"lab-sensor@1"}));
    CHECK(alert_names(alerts, "without a new \\\"version\\\": lab-sensor@1"));
    CHECK(forwarded(pub, sub, LAB, R"({"operator_name":"Ann","t":1})").second == R"({"operator_name":"?"})");

    // From the command line: the answer summarised, a refusal as exit status 1.
    const std::string gdprctl = std::string(GDPRCTL_PATH) + " --port " + std::to_string(b.port()) +
                                " --client-id gdprctl-op schemas reload";
    auto [status, out] = itest::run_command(gdprctl);
    CHECK(status == 0);
    CHECK_THAT(out, Catch::Contains("schemas reloaded: 5 schemas, 6 topic filters"));
    setup.write("broken.json", "[]");
    std::tie(status, out) = itest::run_command(gdprctl);
    CHECK(status == 1);
    CHECK_THAT(out, Catch::Contains("broken.json"));
    CHECK(forwarded(pub, sub, LAB, R"({"operator_name":"Ann","t":1})").second == R"({"operator_name":"?"})");

    // Two reloads in one message: each answered in turn, the second finding nothing new.
    fs::remove(setup.schemas / "broken.json");
    const auto both = json::parse(itest::control_exchange(
        op, json{{"commands", json::array({{{"command", "reloadSchemas"}}, {{"command", "reloadSchemas"}}})}}.dump()));
    REQUIRE(both["responses"].size() == 2);
    CHECK_FALSE(both["responses"][0].contains("error"));
    CHECK(both["responses"][1]["data"]["schemas"] == 5);
    CHECK(both["responses"][1]["data"]["newVersions"].empty());

    // Only operators may reload.
    itest::client stranger(b, "stranger", 5);
    stranger.connect();
    const auto refused = control(stranger, {{"command", "reloadSchemas"}});
    CHECK_THAT(refused["error"].get<std::string>(), Catch::Contains("not authorised"));
}

TEST_CASE("after a reload, stored messages reach new subscribers as the schemas in use filter them",
          "[integration][schema][stored]") {
    reload_broker fixture;
    auto& setup = fixture.setup;
    auto& b = fixture.b;
    auto &op = fixture.op, &pub = fixture.pub, &sub = fixture.sub;
    REQUIRE(pub.publish(VEHICLE, VEHICLE_PAYLOAD, 1, true) == 0);
    auto live = sub.next(10s);
    REQUIRE(live);
    const json stored = json::parse(live->to_string());
    REQUIRE(stored["phone"] == "***");
    const auto subscribe_and_get = [&](const std::string& id) {
        auto c = std::make_unique<itest::client>(b, id, 5);
        c->connect();
        c->subscribe(VEHICLE, 1);
        auto m = c->next(10s);
        REQUIRE(m);
        CHECK_FALSE(c->next(500ms));  // one copy only: the stored message itself, or its copy
        return m;
    };
    auto m = subscribe_and_get("early");
    CHECK(json::parse(m->to_string()) == stored);

    // The phone number is dropped from now on, also from the message the broker keeps.
    setup.edit_vehicle_schema(4);
    REQUIRE_FALSE(control(op, {{"command", "reloadSchemas"}}).contains("error"));
    m = subscribe_and_get("late");
    const json copy = json::parse(m->to_string());
    CHECK_FALSE(copy.contains("phone"));
    CHECK(copy["speed"] == 50);
    CHECK(copy["driver_id"] == stored["driver_id"]);  // pseudonymised by every version: kept as it is
    CHECK(itest::user_property(m, "gdpr-schema") == "vehicle-telemetry@4");
    auto stats = control(op, {{"command", "getStats"}});
    CHECK(stats["data"]["refusals"]["storedMessageSchemaChanged"] == 1);
    CHECK(b.wait_for_log("that a schema reload has given other rules since"));

    // A message stored since then is what the rules in use made: delivered as it is.
    REQUIRE(pub.publish(VEHICLE, VEHICLE_PAYLOAD, 1, true) == 0);
    REQUIRE(sub.next(10s));
    m = subscribe_and_get("later");
    CHECK(json::parse(m->to_string()) == copy);
    stats = control(op, {{"command", "getStats"}});
    CHECK(stats["data"]["refusals"]["storedMessageSchemaChanged"] == 1);
}

TEST_CASE("SIGHUP reloads the schemas, and a reload that fails keeps the ones in use, logs and alerts",
          "[integration][schema]") {
    reload_setup setup;
    itest::broker b(setup.options());
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), pub(b, "v7", 5), sub(b, "dashboard", 5), us(b, "us-dashboard", 5);
    op.connect();
    pub.connect();
    sub.connect();
    us.connect();
    sub.subscribe("fleet/#", 1);
    sub.subscribe("lab/#", 1);
    us.subscribe("fleet/#", 1);
    op.subscribe("$CONTROL/gdpr/v1/alerts", 1);
    CHECK(forwarded(pub, sub, VEHICLE, VEHICLE_PAYLOAD).first == "vehicle-telemetry@3");
    CHECK_FALSE(us.next(300ms));  // EU-resident personal data: refused to the US client
    CHECK(forwarded(pub, sub, VEHICLE, R"({"speed":50})").first == "vehicle-telemetry@3");
    REQUIRE(us.next(10s));  // no personal data: the US client gets it (its subscription works)

    setup.edit_vehicle_schema(4);
    b.signal(SIGHUP);
    REQUIRE(b.wait_for_log("new versions vehicle-telemetry@3 -> vehicle-telemetry@4"));
    CHECK(b.log().find("(SIGHUP)") != std::string::npos);
    auto [tag, payload] = forwarded(pub, sub, VEHICLE, VEHICLE_PAYLOAD);
    CHECK(tag == "vehicle-telemetry@4");
    CHECK_FALSE(json::parse(payload).contains("phone"));
    CHECK_FALSE(us.next(300ms));  // the reloaded schema is still EU-resident, and still enforced
    CHECK(forwarded(pub, sub, VEHICLE, R"({"speed":50})").first == "vehicle-telemetry@4");
    REQUIRE(us.next(10s));

    // A region the residency rules do not know: refused, the schemas in use stay.
    setup.write("lab-sensor.json", std::regex_replace(LAB_SCHEMA, std::regex("\\{\"id\""), "{\"residency\": \"mars\", \"id\""));
    b.signal(SIGHUP);
    REQUIRE(b.wait_for_log("\"mars\", which is not one of \"regions\""));
    CHECK(forwarded(pub, sub, LAB, R"({"operator_name":"Ann"})").first.empty());  // lab-sensor is not in use
    fs::remove(setup.schemas / "lab-sensor.json");

    // A SIGHUP (logrotate sends one every day) never removes a schema.
    fs::rename(setup.schemas / "home-presence.json", setup.dir.path() / "home-presence.json");
    b.signal(SIGHUP);
    REQUIRE(b.wait_for_log("would remove home-presence@2"));
    fs::rename(setup.dir.path() / "home-presence.json", setup.schemas / "home-presence.json");

    setup.write("broken.json", "{\"id\": \"broken\"}");
    b.signal(SIGHUP);
    REQUIRE(b.wait_for_log("the ones in use stay: " + (setup.schemas / "broken.json").string()));
    bool alerted = false;
    for (int i = 0; i < 10 && !alerted; ++i) {
        auto m = op.next(300ms);
        alerted = m && m->get_topic() == "$CONTROL/gdpr/v1/alerts" && m->to_string().find("broken.json") != std::string::npos;
    }
    CHECK(alerted);
    CHECK(forwarded(pub, sub, VEHICLE, VEHICLE_PAYLOAD).first == "vehicle-telemetry@4");

    // Each SIGHUP is in the audit trail, with its outcome.
    b.stop();
    std::vector<bool> outcomes;
    for (const auto& d : control_records(setup))
        if (d.value("operator", "") == "broker:SIGHUP" && d["commands"][0]["command"] == "reloadSchemas")
            outcomes.push_back(d["commands"][0]["ok"].get<bool>());
    CHECK(outcomes == std::vector<bool>{true, false, false, false});
}

namespace {

const std::string CRASH = "lab/l1/crash";
const std::string CRASH_SCHEMA = R"({"id": "crash-sensor", "version": 1, "topics": ["lab/+/crash"],
  "subject": {"field": "/wearer"},
  "fields": {"/wearer": {"category": "identifier", "personal": true, "purpose": "fleet-operations", "action": "keep"},
             "/crash_g": {"category": "health", "personal": true, "purpose": "accident-insurance", "action": "keep"}}})";

std::string gps_payload(const std::string& driver) {
    return R"({"driver_id":")" + driver + R"(","gps":{"lat":52.5201,"lon":13.4049},"speed":50})";
}

bool has_gps(itest::client& pub, itest::client& sub, const std::string& driver) {
    const auto [tag, payload] = forwarded(pub, sub, VEHICLE, gps_payload(driver));
    const auto doc = json::parse(payload);
    return doc.contains("gps") && doc["gps"].contains("lat");
}

// The example purposes.json, with `edit` applied to its "purposes" object.
void edit_purposes(const reload_setup& setup, const std::function<void(json&)>& edit) {
    json doc = json::parse(std::ifstream(setup.schemas / "purposes.json"));
    edit(doc["purposes"]);
    setup.write("purposes.json", doc.dump(2));
}

} // namespace

TEST_CASE("a reload reads purposes.json too: new purposes and lawful bases apply without a restart, consent given "
          "stays",
          "[integration][schema][consent]") {
    reload_broker fixture;
    auto& setup = fixture.setup;
    auto& b = fixture.b;
    auto &op = fixture.op, &pub = fixture.pub, &sub = fixture.sub, &alerts = fixture.alerts;
    const auto set_consent = [&](const std::string& subject, const std::string& purpose, bool granted = true) {
        return control(op, {{"command", "setConsent"}, {"subject", subject}, {"purpose", purpose}, {"granted", granted}});
    };
    REQUIRE_FALSE(set_consent("D-7", "route-analytics").contains("error"));
    REQUIRE_FALSE(set_consent("D-9", "route-analytics").contains("error"));
    CHECK(has_gps(pub, sub, "D-7"));
    CHECK_FALSE(has_gps(pub, sub, "D-8"));

    // A new consent purpose with the schema that uses it. "accident-insurance" sorts before every
    // consent purpose in use, so each one's consent bit moves: D-7's consent must move with it.
    edit_purposes(setup, [](json& p) { p["accident-insurance"] = {{"lawfulBasis", "consent"}}; });
    setup.write("crash-sensor.json", CRASH_SCHEMA);
    auto r = control(op, {{"command", "reloadSchemas"}});
    INFO(r.dump());
    REQUIRE_FALSE(r.contains("error"));
    CHECK(r["data"]["added"] == json::array({"crash-sensor@1"}));
    CHECK(r["data"]["purposes"]["added"] == json::array({"accident-insurance (consent)"}));
    CHECK(has_gps(pub, sub, "D-7"));
    CHECK_FALSE(has_gps(pub, sub, "D-8"));
    CHECK(forwarded(pub, sub, CRASH, R"({"wearer":"W-1","crash_g":3.5})").second == R"({"wearer":"W-1"})");
    REQUIRE_FALSE(set_consent("W-1", "accident-insurance").contains("error"));
    CHECK(forwarded(pub, sub, CRASH, R"({"wearer":"W-1","crash_g":3.5})").second == R"({"wearer":"W-1","crash_g":3.5})");
    CHECK(b.log().find("reloaded purposes from") != std::string::npos);

    // A field moved to a purpose that needs no consent passes without one as well: the same permission.
    setup.write("crash-sensor.json", std::regex_replace(std::regex_replace(CRASH_SCHEMA, std::regex("\"version\": 1"),
                                                                           "\"version\": 2"),
                                                        std::regex("accident-insurance"), "fleet-operations"));
    r = control(op, {{"command", "reloadSchemas"}});
    CHECK_THAT(r.value("error", ""), Catch::Contains("crash-sensor /crash_g (accident-insurance -> fleet-operations)") &&
                                         Catch::Contains("allowBasisChanges"));
    CHECK(forwarded(pub, sub, CRASH, R"({"wearer":"W-2","crash_g":3.5})").second == R"({"wearer":"W-2"})");
    // Asked for, it goes into use, alerted and recorded though purposes.json did not change.
    r = control(op, {{"command", "reloadSchemas"}, {"allowBasisChanges", true}});
    CHECK(r["data"]["fieldsLeavingConsent"] ==
          json::array({"crash-sensor /crash_g (accident-insurance -> fleet-operations)"}));
    CHECK(alert_names(alerts, "fields that now pass without a consent record: crash-sensor /crash_g"));
    CHECK(forwarded(pub, sub, CRASH, R"({"wearer":"W-2","crash_g":3.5})").second == R"({"wearer":"W-2","crash_g":3.5})");
    // Back to needing consent: no permission needed.
    setup.write("crash-sensor.json", std::regex_replace(CRASH_SCHEMA, std::regex("\"version\": 1"), "\"version\": 3"));
    REQUIRE_FALSE(control(op, {{"command", "reloadSchemas"}}).contains("error"));
    CHECK(forwarded(pub, sub, CRASH, R"({"wearer":"W-2","crash_g":3.5})").second == R"({"wearer":"W-2"})");

    // More than 64 consent purposes: checked only when the consent store takes them, after every
    // other check passed; still nothing changes.
    edit_purposes(setup, [](json& p) {
        for (int i = 0; i < 64; ++i) p["extra-" + std::to_string(100 + i)] = {{"lawfulBasis", "consent"}};
    });
    r = control(op, {{"command", "reloadSchemas"}});
    CHECK_THAT(r.value("error", ""), Catch::Contains("more than 64 purposes rest on consent"));
    CHECK(has_gps(pub, sub, "D-7"));
    CHECK(forwarded(pub, sub, CRASH, R"({"wearer":"W-1","crash_g":3.5})").second == R"({"wearer":"W-1","crash_g":3.5})");
    edit_purposes(setup, [](json& p) {
        for (int i = 0; i < 64; ++i) p.erase("extra-" + std::to_string(100 + i));
    });

    // Moving a purpose off consent lets its fields pass for subjects who never consented: refused
    // unless asked for, and a SIGHUP never asks.
    edit_purposes(setup, [](json& p) { p["route-analytics"]["lawfulBasis"] = "legitimate_interests"; });
    r = control(op, {{"command", "reloadSchemas"}});
    REQUIRE(r.contains("error"));
    CHECK_THAT(r["error"].get<std::string>(), Catch::Contains("moves route-analytics off consent") &&
                                                  Catch::Contains("allowBasisChanges"));
    b.signal(SIGHUP);
    REQUIRE(b.wait_for_log("moves route-analytics off consent"));
    CHECK_FALSE(has_gps(pub, sub, "D-8"));
    // From the command line, asked for.
    const auto [status, out] = itest::run_command(std::string(GDPRCTL_PATH) + " --port " + std::to_string(b.port()) +
                                                  " --client-id gdprctl-op schemas reload --allow-basis-changes");
    CHECK(status == 0);
    CHECK_THAT(out, Catch::Contains("lawful basis changed: route-analytics: consent -> legitimate_interests") &&
                        Catch::Contains("consent grants held: route-analytics 2"));
    CHECK(has_gps(pub, sub, "D-8"));
    CHECK(alert_names(alerts, "route-analytics: consent -> legitimate_interests"));
    CHECK_THAT(set_consent("D-8", "route-analytics")["error"].get<std::string>(),
               Catch::Contains("rests on legitimate_interests"));
    // The consent given is held, shown, and can still be withdrawn (GDPR Art. 7(3)).
    const auto held = control(op, {{"command", "getConsent"}, {"subject", "D-9"}});
    CHECK(held["data"]["held"] == json::array({"route-analytics"}));
    CHECK(held["data"]["granted"].empty());
    REQUIRE_FALSE(set_consent("D-9", "route-analytics", false).contains("error"));

    // Back on consent (no permission needed: that tightens): the consent D-7 gave counts again,
    // as it would after a restart; D-8 gave none, D-9 withdrew it while it was held.
    edit_purposes(setup, [](json& p) { p["route-analytics"]["lawfulBasis"] = "consent"; });
    b.signal(SIGHUP);
    REQUIRE(b.wait_for_log("lawful basis changed: route-analytics: legitimate_interests -> consent"));
    REQUIRE(b.wait_for_log("consent grants given earlier that count again: route-analytics: 1"));
    CHECK(has_gps(pub, sub, "D-7"));
    CHECK_FALSE(has_gps(pub, sub, "D-8"));
    CHECK_FALSE(has_gps(pub, sub, "D-9"));

    // Each change of purposes is in the audit trail, with who asked.
    b.stop();
    std::vector<json> changes;
    for (const auto& d : control_records(setup))
        if (d.contains("purposes")) changes.push_back(d);
    REQUIRE(changes.size() == 4);
    const auto &added = changes[0], &moved_field = changes[1], &off_consent = changes[2], &on_consent = changes[3];
    CHECK(added["purposes"]["added"] == json::array({"accident-insurance (consent)"}));
    CHECK(added["reload"] == "reloadSchemas by client:" + std::string(itest::OPERATOR_CLIENT_ID));
    CHECK(moved_field["fieldsLeavingConsent"] ==
          json::array({"crash-sensor /crash_g (accident-insurance -> fleet-operations)"}));
    CHECK(moved_field["purposes"]["basisChanged"].empty());
    CHECK(off_consent["reload"] == "reloadSchemas by client:gdprctl-op");
    CHECK(off_consent["purposes"]["basisChanged"] == json::array({"route-analytics: consent -> legitimate_interests"}));
    CHECK(off_consent["allowBasisChanges"] == true);
    CHECK(off_consent["purposes"]["grantsHeld"] == json{{"route-analytics", 2}});
    CHECK(off_consent["fieldsLeavingConsent"] ==
          json::array({"vehicle-telemetry /gps/lat (route-analytics)", "vehicle-telemetry /gps/lon (route-analytics)"}));
    CHECK(on_consent["reload"] == "SIGHUP");
    CHECK(on_consent["purposes"]["basisChanged"] == json::array({"route-analytics: legitimate_interests -> consent"}));
    CHECK(on_consent["purposes"]["grantsRevived"] == json{{"route-analytics", 1}});
}

TEST_CASE("a reload that hands a consent field's topics to another schema, or to none, needs the same permission",
          "[integration][schema][consent]") {
    reload_broker fixture;
    auto& setup = fixture.setup;
    auto& b = fixture.b;
    auto &op = fixture.op, &pub = fixture.pub, &sub = fixture.sub, &alerts = fixture.alerts;
    REQUIRE_FALSE(has_gps(pub, sub, "D-8"));  // no consent to route-analytics

    // A more specific schema for one fleet that keeps what it does not classify: D-8's position
    // would pass on acme's topics.
    setup.write("acme-telemetry.json", R"({"id": "acme-telemetry", "version": 1, "residency": "eu",
      "topics": ["fleet/acme/vehicle/+/telemetry"], "subject": {"field": "/driver_id"}, "unclassified": "keep",
      "fields": {"/driver_id": {"category": "identifier", "personal": true, "purpose": "fleet-operations",
                                "action": "keep"}}})");
    const std::string taken = "vehicle-telemetry /gps/lat (route-analytics -> acme-telemetry: unclassified, kept) on "
                              "fleet/acme/vehicle/+/telemetry";
    auto r = control(op, {{"command", "reloadSchemas"}});
    CHECK_THAT(r.value("error", ""), Catch::Contains(taken) && Catch::Contains("allowBasisChanges"));
    b.signal(SIGHUP);
    REQUIRE(b.wait_for_log("schemas not reloaded on SIGHUP"));
    CHECK(b.log().find("acme-telemetry: unclassified, kept") != std::string::npos);
    CHECK_FALSE(has_gps(pub, sub, "D-8"));
    // Asked for, it goes into use and is alerted.
    r = control(op, {{"command", "reloadSchemas"}, {"allowBasisChanges", true}});
    INFO(r.dump());
    CHECK(r["data"]["added"] == json::array({"acme-telemetry@1"}));
    CHECK(r["data"]["fieldsLeavingConsent"].size() == 2);
    CHECK(r["data"]["fieldsLeavingConsent"][0] == taken);
    CHECK(alert_names(alerts, "fields that now pass without a consent record: " + taken));
    CHECK(has_gps(pub, sub, "D-8"));
    // Removed again, acme's topics go back to vehicle-telemetry, which needs consent: that
    // tightens and needs only the removal's own permission.
    fs::remove(setup.schemas / "acme-telemetry.json");
    r = control(op, {{"command", "reloadSchemas"}, {"allowRemovals", true}});
    REQUIRE_FALSE(r.contains("error"));
    CHECK(r["data"]["removed"] == json::array({"acme-telemetry@1"}));
    CHECK(r["data"]["fieldsLeavingConsent"].empty());
    CHECK_FALSE(has_gps(pub, sub, "D-8"));

    // A filter narrowed so that acme's topics match no schema: with unmatched_topics pass they
    // would go through whole.
    std::ifstream in(setup.schemas / "vehicle-telemetry.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    setup.write("vehicle-telemetry.json", std::regex_replace(text, std::regex("fleet/\\+/vehicle"), "fleet/other/vehicle"));
    r = control(op, {{"command", "reloadSchemas"}});
    CHECK_THAT(r.value("error", ""),
               Catch::Contains("vehicle-telemetry /gps/lon (route-analytics -> no schema, passed) on "
                               "fleet/+/vehicle/+/telemetry"));
    CHECK_FALSE(has_gps(pub, sub, "D-8"));
}

TEST_CASE("a reload reads the residency file again: placements and transfers change without a restart, a new "
          "transfer only when asked for",
          "[integration][schema][residency]") {
    reload_broker fixture;
    auto& setup = fixture.setup;
    auto& b = fixture.b;
    auto &op = fixture.op, &pub = fixture.pub, &sub = fixture.sub, &alerts = fixture.alerts;
    itest::client us{b, "us-dash", 5}, partner{b, "partner-1", 5};
    for (auto* c : {&us, &partner}) {
        c->connect();
        c->subscribe("fleet/#", 1);
    }
    // Whether each of the two gets the next eu-resident publish (the dashboard, in eu, always does):
    // one expected to get it is waited for longer than one expected not to.
    const auto receivers = [&](std::pair<bool, bool> expected) {
        forwarded(pub, sub, VEHICLE, VEHICLE_PAYLOAD);
        const auto wait = [](bool expect) { return expect ? std::chrono::milliseconds(5000) : std::chrono::milliseconds(1500); };
        return std::make_pair(us.next(wait(expected.first)) != nullptr, partner.next(wait(expected.second)) != nullptr);
    };
    CHECK(receivers({false, true}) == std::make_pair(false, true));
    const auto write_residency = [&](const std::string& transfers, const std::string& clients) {
        std::ofstream(setup.dir.path() / "residency.json")
            << R"({"regions": ["eu", "us"], "transfers": )" << transfers
            << R"(, "defaultRegion": "eu", "clients": )" << clients << "}";
    };
    const std::string US_CLIENTS = R"([{"clientId": "us-*", "region": "us"}])";

    // A transfer of eu data to us: refused unless asked for, and a SIGHUP never asks.
    write_residency(R"({"us": ["eu"], "eu": ["us"]})", US_CLIENTS);
    auto r = control(op, {{"command", "reloadSchemas"}});
    CHECK_THAT(r.value("error", ""), Catch::Contains("eu -> us") && Catch::Contains("allowTransferChanges"));
    b.signal(SIGHUP);
    REQUIRE(b.wait_for_log("schemas not reloaded on SIGHUP"));
    CHECK(b.log().find("transfer eu -> us); send reloadSchemas with \"allowTransferChanges\"") != std::string::npos);
    CHECK(receivers({false, true}) == std::make_pair(false, true));
    // Asked for (from the command line), it goes into use, alerted.
    const auto [status, out] = itest::run_command(std::string(GDPRCTL_PATH) + " --port " + std::to_string(b.port()) +
                                                  " --client-id gdprctl-op schemas reload --allow-transfer-changes");
    CHECK(status == 0);
    CHECK_THAT(out, Catch::Contains("transfers added: eu -> us"));
    CHECK(alert_names(alerts, "resident personal data may reach regions it could not before: transfer eu -> us"));
    CHECK(receivers({true, true}) == std::make_pair(true, true));

    // A new placement, and the transfer closed again: no permission needed; connected clients are
    // placed again (a SIGHUP would make the broker check every login again, so the control command
    // shows the reload itself does it).
    write_residency(R"({"us": ["eu"]})", R"([{"clientId": "us-*", "region": "us"}, {"clientId": "partner-*", "region": "us"}])");
    r = control(op, {{"command", "reloadSchemas"}});
    REQUIRE_FALSE(r.contains("error"));
    CHECK(r["data"]["residency"]["transfersRemoved"] == json::array({"eu -> us"}));
    CHECK(r["data"]["residency"]["placementsChanged"] == true);
    CHECK(b.log().find("client placements changed") != std::string::npos);
    CHECK(receivers({false, false}) == std::make_pair(false, false));

    // Refusals counted before the reloads are still counted, under their region names.
    r = control(op, {{"command", "getStats"}});
    std::uint64_t eu_to_us = 0;
    for (const auto& pair : r["data"]["residency"]["refusals"])
        if (pair["from"] == "eu" && pair["to"] == "us") eu_to_us += pair["count"].get<std::uint64_t>();
    CHECK(eu_to_us >= 4);  // us-dash three times (one refused delivery each), partner-1 once

    // A new schema without residency taking over eu topics would free their data: the same permission.
    setup.write("acme-free.json", R"({"id": "acme-free", "version": 1, "topics": ["fleet/acme/vehicle/+/telemetry"],
      "fields": {"/driver_id": {"category": "identifier", "personal": true, "purpose": "fleet-operations",
                                "action": "keep"}}})");
    r = control(op, {{"command", "reloadSchemas"}});
    CHECK_THAT(r.value("error", ""),
               Catch::Contains("topics fleet/acme/vehicle/+/telemetry: vehicle-telemetry (eu) -> acme-free (none)") &&
                   Catch::Contains("allowTransferChanges"));
    fs::remove(setup.schemas / "acme-free.json");

    // A broken file: refused naming it; the rules in use stay.
    std::ofstream(setup.dir.path() / "residency.json") << R"({"regions": ["eu", "us"], "defaultRegion": "mars"})";
    r = control(op, {{"command", "reloadSchemas"}});
    CHECK_THAT(r.value("error", ""), Catch::Contains("residency.json") && Catch::Contains("mars"));
    CHECK(receivers({false, false}) == std::make_pair(false, false));

    // Each change is in the audit trail.
    b.stop();
    std::vector<json> changes;
    for (const auto& d : control_records(setup))
        if (d.contains("residency")) changes.push_back(d);
    REQUIRE(changes.size() == 2);
    CHECK(changes[0]["residency"]["transfersAdded"] == json::array({"eu -> us"}));
    CHECK(changes[0]["allowTransferChanges"] == true);
    CHECK(changes[0]["reload"] == "reloadSchemas by client:gdprctl-op");
    CHECK(changes[1]["residency"]["transfersRemoved"] == json::array({"eu -> us"}));
    CHECK(changes[1]["residency"]["placementsChanged"] == true);
    CHECK(changes[1]["reload"] == "reloadSchemas by client:" + std::string(itest::OPERATOR_CLIENT_ID));
}

TEST_CASE("a delivery after a reload that makes a topic name its subject records the topic masked",
          "[integration][schema][recording]") {
    reload_setup setup;
    const std::string v1 = LAB_SCHEMA;
    setup.write("lab-sensor.json", v1);
    auto o = setup.options();
    o.plugin_opts.emplace_back("record_deliveries", "all");
    {
        itest::broker b(o);
        itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), pub(b, "lab-l1", 5);
        op.connect();
        pub.connect();
        REQUIRE(pub.publish(LAB, R"({"operator_name":"Ada","temp":21})", 1, true) == 0);  // retained
        // From now on the second level names the data subject: topics on it are personal data.
        std::string v2 = std::regex_replace(v1, std::regex("\"version\": 1"), "\"version\": 2");
        v2 = std::regex_replace(v2, std::regex("\"topics\""), "\"subject\": {\"topicLevel\": 1}, \"topics\"");
        setup.write("lab-sensor.json", v2);
        REQUIRE_FALSE(control(op, {{"command", "reloadSchemas"}}).contains("error"));
        // The stored message, on the very topic the last publish had, goes out (or is withheld)
        // under the schema in use.
        itest::client viewer(b, "lab-viewer", 5);
        viewer.connect();
        viewer.subscribe("lab/#", 1);
        viewer.next(2s);
        viewer.disconnect();
        pub.disconnect();
        op.disconnect();
        b.stop();
    }
    gdpr::sqlite_db raw((setup.dir.path() / "gdpr.db").string(), gdpr::sqlite_db::read_only);
    gdpr::sqlite_statement q(raw.handle(), "SELECT json_extract(detail, '$.topic') FROM audit_records "
                                           "WHERE kind LIKE 'delivery%' AND client_id = 'lab-viewer'");
    std::vector<std::string> topics;
    while (q.step()) topics.push_back(q.text(0));
    CHECK(topics == std::vector<std::string>{"lab/<subject>/reading"});
}

TEST_CASE("records of a schema a reload removed are exported only where every region's data may go",
          "[integration][schema][residency][export]") {
    reload_setup setup;
    auto o = setup.options();
    for (auto& [key, value] : o.plugin_opts)
        if (key == "operator_client_ids") value += ",us-ops";
    itest::broker b(o);
    itest::client op{b, itest::OPERATOR_CLIENT_ID, 5}, us{b, "us-ops", 5}, pub{b, "v7", 5};
    for (auto* c : {&op, &us, &pub}) c->connect();
    REQUIRE(pub.publish(VEHICLE, VEHICLE_PAYLOAD, 1) == 0);  // EU-resident data of D-7
    const json ask{{"command", "exportSubject"}, {"subject", "D-7"}};
    json eu_export;
    for (int i = 0; i < 50; ++i) {  // until the trail has written the publish
        eu_export = control(op, ask);
        if (eu_export.contains("data") && !eu_export["data"]["records"].empty()) break;
        std::this_thread::sleep_for(100ms);
    }
    REQUIRE(eu_export["data"]["records"].size() == 1);
    CHECK_THAT(control(us, ask).value("error", ""), Catch::Contains("may not go to region us"));

    // Only a US-resident schema stays in use: nothing in use says the export holds EU data any more.
    for (const auto* name : {"home-presence.json", "vehicle-status.json", "vehicle-telemetry.json", "wearable-health.json"})
        fs::remove(setup.schemas / name);
    setup.write("lab-sensor.json", std::regex_replace(LAB_SCHEMA, std::regex("\"version\": 1,"), "\"version\": 1, \"residency\": \"us\","));
    const auto reload = control(op, {{"command", "reloadSchemas"}, {"allowRemovals", true}, {"allowTransferChanges", true}});
    INFO(reload.dump());
    REQUIRE_FALSE(reload.contains("error"));
    // The record says where its data is resident.
    const auto refused = control(us, ask);
    INFO(refused.dump());
    CHECK_FALSE(refused.contains("data"));
    CHECK_THAT(refused.value("error", ""), Catch::Contains("resident in eu (schema vehicle-telemetry@3)") &&
                                               Catch::Contains("may not go to region us"));
    // A record that does not say (written before records stated it): its schema is no longer in use.
    {
        gdpr::sqlite_db raw((setup.dir.path() / "gdpr.db").string());
        raw.exec("UPDATE audit_records SET detail = json_remove(detail, '$.residency') WHERE kind = 'publish'");
    }
    const auto unknown = control(us, ask);
    INFO(unknown.dump());
    CHECK_FALSE(unknown.contains("data"));
    CHECK_THAT(unknown.value("error", ""), Catch::Contains("vehicle-telemetry@3, no longer in use") &&
                                               Catch::Contains("may not receive every region's data"));
    // The EU, which may receive every region's data, still gets it.
    const auto eu_again = control(op, ask);
    REQUIRE(eu_again.contains("data"));
    CHECK(eu_again["data"]["records"].size() == 1);
}
