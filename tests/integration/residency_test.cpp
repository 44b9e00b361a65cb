// Residency through real brokers: an EU broker with the plugin, bridged on loopback to a bare US
// broker. EU personal data never reaches the US broker; non-personal data does; an EU client gets
// everything allowed; a US client on the EU broker is refused resident data, live, retained and
// queued; refusals are counted per region pair, recorded and alerted.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "broker_fixture.hpp"
#include "gdpr/sqlite.hpp"

using namespace std::chrono_literals;

namespace {

const std::string TELEMETRY = "fleet/acme/vehicle/v1/telemetry";
const std::string STATUS = "fleet/acme/vehicle/v1/status";
const std::string PRESENCE = "home/h1/presence/hall";
const std::string DRIVER = "D-EU-4711";
const std::string PERSONAL = R"({"driver_id":")" + DRIVER + R"(","gps":{"lat":48.137,"lon":11.575},"speed":50})";
const std::string NON_PERSONAL_TELEMETRY = R"({"speed":50,"fuel":0.4,"odometer":1200})";
const std::string VEHICLE_STATUS = R"({"battery_v":12.6,"doors_locked":true})";
const std::string OCCUPANT = "Erika Mustermann";
const std::string PRESENCE_PAYLOAD = R"({"occupant":")" + OCCUPANT + R"(","occupied":true,"room":"hall"})";

std::string residency_json(const std::string& bridge_conf) {
    return R"({
      "regions": ["eu", "us"],
      "transfers": { "us": ["eu"] },
      "defaultRegion": "eu",
      "clients": [ { "clientId": "us-*", "region": "us" } ],
      "bridges": [ { "name": "to-us", "region": "us" } ],
      "brokerConfig": ")" + bridge_conf + R"("
    })";
}

// The US broker (bare) and the EU broker (plugin, audit trail) whose bridge "to-us" carries fleet/#.
struct two_regions {
    itest::broker us{[] {
        itest::broker_options o;
        o.load_plugin = false;
        return o;
    }()};
    itest::scratch_dir files;
    std::string db;
    std::string audit_key;
    std::unique_ptr<itest::broker> eu;

    two_regions() {
        std::filesystem::create_directories(files.path() / "bridges");
        const std::string bridge_conf = files.write(
            "bridges/to-us.conf", "connection to-us\naddress 127.0.0.1:" + std::to_string(us.port()) +
                                      "\nremote_clientid eu-bridge\ntopic fleet/# out 1\ntopic home/+/summary out 0\n"
                                      "topic home/h9/# out 0\nrestart_timeout 1\n");
        // The residency file reads the bridges from a configuration that includes the same
        // directory the broker reads, as an operator's mosquitto.conf would.
        const std::string broker_conf =
            files.write("mosquitto-bridges.conf", "# as in mosquitto.conf\ninclude_dir bridges\n");
        audit_key = files.write("audit.key", itest::random_bytes(32), 0600);
        db = (files.path() / "gdpr.db").string();
        itest::broker_options o;
        o.plugin_opts = {{"residency_file", files.write("residency.json", residency_json(broker_conf))},
                         {"audit_key_file", audit_key},
                         {"database", db}};
        o.extra_config = "include_dir " + (files.path() / "bridges").string() + "\n";
        eu = std::make_unique<itest::broker>(o);
    }

    // Waits until the bridge delivers: non-personal status goes through.
    void wait_for_bridge(itest::client& us_sub, itest::client& eu_pub) const {
        for (int i = 0; i < 50; ++i) {
            eu_pub.publish(STATUS, VEHICLE_STATUS, 1);
            if (us_sub.next(200ms)) {
                us_sub.drain(300ms);
                return;
            }
        }
        FAIL("the bridge to the US broker never delivered; EU log:\n" << eu->log());
    }
};

nlohmann::json stats(const itest::broker& b) {
    const auto [status, out] = itest::run_command(std::string(GDPRCTL_PATH) + " --port " + std::to_string(b.port()) +
                                                  " --client-id " + itest::OPERATOR_CLIENT_ID + " --json stats",
                                                  false);
    REQUIRE(status == 0);
    return nlohmann::json::parse(out)["data"];
}

std::uint64_t refusals(const nlohmann::json& s, const std::string& to, const std::string& via) {
    for (const auto& r : s["residency"]["refusals"])
        if (r["from"] == "eu" && r["to"] == to && r["via"] == via) return r["count"].get<std::uint64_t>();
    return 0;
}

} // namespace

TEST_CASE("bridged to a US broker: EU personal data never arrives there, non-personal data does",
          "[integration][residency]") {
    two_regions r;
    itest::client us_sub(r.us, "us-analytics", 5);
    us_sub.connect();
    us_sub.subscribe("#", 1);
    itest::client eu_sub(*r.eu, "eu-dashboard", 5);
    eu_sub.connect();
    eu_sub.subscribe("fleet/#", 1);
    itest::client alerts(*r.eu, itest::OPERATOR_CLIENT_ID, 5);
    alerts.connect();
    alerts.subscribe("$CONTROL/gdpr/v1/alerts", 1);
    itest::client van(*r.eu, "van-1", 5);
    van.connect();
    r.wait_for_bridge(us_sub, van);
    eu_sub.drain(300ms);

    // Start-up lint named the pattern that can carry telemetry abroad.
    CHECK(r.eu->log().find("residency: bridge to-us (to us) topic \"fleet/#\" can carry eu-resident personal data of "
                           "schema vehicle-telemetry@3") != std::string::npos);
    CHECK(r.eu->log().find("vehicle-status") == std::string::npos);  // nothing personal to warn about

    // Personal telemetry: refused at publish time (135), for everyone, because the bridge would carry it.
    CHECK(van.publish(TELEMETRY, PERSONAL, 1) == 135);
    CHECK(van.publish(TELEMETRY, PERSONAL, 1) == 135);
    // The same topic without personal fields, and vehicle status: delivered here and in the US.
    CHECK(van.publish(TELEMETRY, NON_PERSONAL_TELEMETRY, 1) == 0);
    CHECK(van.publish(STATUS, VEHICLE_STATUS, 1) == 0);

    const auto in_us = us_sub.collect(2, 10s);
    REQUIRE(in_us.size() == 2);
    CHECK(in_us[0]->get_topic() == TELEMETRY);
    CHECK(in_us[0]->to_string() == NON_PERSONAL_TELEMETRY);
    CHECK(in_us[1]->get_topic() == STATUS);
    for (const auto& m : in_us) CHECK(m->to_string().find(DRIVER) == std::string::npos);
    const auto in_eu = eu_sub.collect(2, 10s);
    REQUIRE(in_eu.size() == 2);
    CHECK(itest::user_property(in_eu[0], "gdpr-residency") == std::optional<std::string>("eu"));

    // Alerted once (rate-limited), logged without values, counted per region pair and path.
    std::vector<nlohmann::json> residency_alerts;
    for (const auto& m : alerts.drain(500ms)) {
        INFO("alert: " << m->to_string());
        const auto a = nlohmann::json::parse(m->to_string());
        if (a["alert"] == "residency") residency_alerts.push_back(a);
    }
    REQUIRE(residency_alerts.size() == 1);
    CHECK(residency_alerts[0]["detail"].get<std::string>().find("bridge to-us would carry resident personal data to us") !=
          std::string::npos);
    const std::string log = r.eu->log();
    CHECK(log.find("refused publish on 'fleet/acme/vehicle/v1/telemetry' (schema vehicle-telemetry@3): residency: "
                   "bridge to-us") != std::string::npos);
    CHECK(log.find(DRIVER) == std::string::npos);
    const auto s = stats(*r.eu);
    CHECK(s["residency"]["enforced"] == true);
    CHECK(refusals(s, "us", "bridge to-us") == 2);
    CHECK(s["refusals"]["residency"] == 2);

    // The audit trail has each refusal with its reason; the report groups them.
    r.eu->stop();
    const auto [status, report] = itest::run_command(std::string(GDPRCTL_PATH) + " report " + r.db, false);
    REQUIRE(status == 0);
    CHECK(report.find("residency: bridge to-us would carry resident personal data to us") != std::string::npos);
}

TEST_CASE("a US client on the EU broker is refused resident data: live, retained and queued",
          "[integration][residency]") {
    two_regions r;
    itest::client us_client(*r.eu, "us-dashboard", 5);
    us_client.connect(std::nullopt, false);
    us_client.subscribe("home/#", 2);
    us_client.subscribe("fleet/#", 1);
    itest::client eu_client(*r.eu, "eu-home-app", 5);
    eu_client.connect(std::nullopt, false);
    eu_client.subscribe("home/#", 2);
    itest::client home(*r.eu, "home-hub-1", 5);
    home.connect();
    itest::client van(*r.eu, "van-1", 5);
    van.connect();

    // Live: presence (EU personal data, not bridged) reaches the EU app only.
    CHECK(home.publish(PRESENCE, PRESENCE_PAYLOAD, 1) == 0);
    auto got = eu_client.next();
    REQUIRE(got);
    CHECK(got->get_topic() == PRESENCE);
    CHECK_FALSE(us_client.next(500ms));
    // Non-personal data reaches the US client too.
    CHECK(van.publish(STATUS, VEHICLE_STATUS, 1) == 0);
    got = us_client.next();
    REQUIRE(got);
    CHECK(got->get_topic() == STATUS);
    // QoS 2: the broker delivers at PUBREL, from the stored message.
    CHECK(home.publish("home/h1/presence/stairs", PRESENCE_PAYLOAD, 2) == 0);
    got = eu_client.next();
    REQUIRE(got);
    CHECK(got->get_qos() == 2);
    CHECK_FALSE(us_client.next(500ms));

    // Retained: stored filtered, checked again when a subscription brings it.
    CHECK(home.publish("home/h1/presence/kitchen", PRESENCE_PAYLOAD, 1, true) == 0);
    eu_client.drain(300ms);
    us_client.drain(300ms);
    itest::client us_late(*r.eu, "us-late", 5);
    us_late.connect();
    us_late.subscribe("home/#", 1);
    CHECK_FALSE(us_late.next(500ms));
    itest::client eu_late(*r.eu, "eu-late", 5);
    eu_late.connect();
    eu_late.subscribe("home/#", 1);
    got = eu_late.next();
    REQUIRE(got);
    CHECK(got->is_retained());

    // Queued: both persistent clients go away, presence arrives, they come back.
    us_client.disconnect();
    eu_client.disconnect();
    CHECK(home.publish("home/h1/presence/garden", PRESENCE_PAYLOAD, 1) == 0);
    itest::client us_back(*r.eu, "us-dashboard", 5);
    us_back.connect(std::nullopt, false);
    itest::client eu_back(*r.eu, "eu-home-app", 5);
    eu_back.connect(std::nullopt, false);
    got = eu_back.next();
    REQUIRE(got);
    CHECK(got->get_topic() == "home/h1/presence/garden");
    CHECK_FALSE(us_back.next(500ms));

    const auto s = stats(*r.eu);
    INFO(s.dump());
    // live, QoS 2, retained (live to us-dashboard, then to us-late on subscribe), queued (when
    // queued and again when the queue is delivered)
    CHECK(refusals(s, "us", "delivery") == 6);
    CHECK(s["refusals"]["residency"] == 6);
    const std::string log = r.eu->log();
    CHECK(log.find(OCCUPANT) == std::string::npos);
    r.eu->stop();
    const auto [status, report] = itest::run_command(std::string(GDPRCTL_PATH) + " report " + r.db, false);
    REQUIRE(status == 0);
    CHECK(report.find("residency: eu-resident personal data may not go to region us") != std::string::npos);
}

TEST_CASE("residency start-up: a bad residency file refuses start naming it, and a mixed shared group is warned about",
          "[integration][residency]") {
    itest::scratch_dir files;
    {
        itest::broker_options o;
        o.plugin_opts = {{"residency_file", files.write("r.json", R"({"regions":["us"],"defaultRegion":"us"})")}};
        const auto [status, log] = itest::broker::expect_refusal(o);
        CHECK(status != 0);
        CHECK(log.find("gdpr: Error: invalid 'residency_file' value: " + (files.path() / "r.json").string() +
                       ": schema home-presence@") != std::string::npos);
    }
    {
        itest::broker_options o;
        o.plugin_opts = {{"residency_file", (files.path() / "missing.json").string()}};
        const auto [status, log] = itest::broker::expect_refusal(o);
        CHECK(log.find("missing.json: cannot be opened for reading") != std::string::npos);
    }
    itest::broker_options o;
    o.plugin_opts = {{"residency_file", files.write("ok.json", R"({"regions":["eu","us"],"defaultRegion":"eu",
        "clients":[{"clientId":"us-*","region":"us"}]})")}};
    itest::broker b(o);
    CHECK(b.wait_for_log("residency from "));
    itest::client eu_member(b, "eu-worker", 5);
    eu_member.connect();
    eu_member.subscribe("$share/workers/home/#", 1);
    itest::client us_member(b, "us-worker", 5);
    us_member.connect();
    us_member.subscribe("$share/workers/home/#", 1);
    CHECK(b.wait_for_log("shared subscription group 'workers' on 'home/#' has members in regions eu, us"));
}

TEST_CASE("wills: refused when a bridge would carry them abroad, and refused to a US subscriber",
          "[integration][residency]") {
    two_regions r;
    itest::client us_sub(r.us, "us-analytics", 5);
    us_sub.connect();
    us_sub.subscribe("#", 1);
    itest::client eu_sub(*r.eu, "eu-home-app", 5);
    eu_sub.connect();
    eu_sub.subscribe("home/#", 1);
    itest::client us_watch(*r.eu, "us-watch", 5);
    us_watch.connect();
    us_watch.subscribe("home/#", 1);
    itest::client van(*r.eu, "van-1", 5);
    van.connect();
    r.wait_for_bridge(us_sub, van);

    // Classification leaves this will unchanged (presence is kept), so only residency can stop it.
    const std::string will = R"({"occupied":false,"room":"hall"})";
    itest::connect_and_vanish(*r.eu, "hub-h9", "home/h9/presence/hall", will);
    CHECK(r.eu->wait_for_log("refused will message on 'home/h9/presence/hall' (schema home-presence@2): residency: "
                             "bridge to-us would carry resident personal data to us"));
    itest::connect_and_vanish(*r.eu, "hub-h1", "home/h1/presence/hall", will);
    const auto got = eu_sub.next();
    REQUIRE(got);
    CHECK(got->get_topic() == "home/h1/presence/hall");  // the h9 will never came
    CHECK(got->to_string() == will);
    CHECK_FALSE(eu_sub.next(300ms));
    CHECK_FALSE(us_watch.next(300ms));
    CHECK(us_sub.drain(300ms).empty());
    const auto s = stats(*r.eu);
    INFO(s.dump());
    CHECK(refusals(s, "us", "bridge to-us") == 1);
    CHECK(refusals(s, "us", "delivery") == 1);
    // The audit trail records both wills: the refused one with the bridge's reason.
    r.eu->stop();
    gdpr::sqlite_db d(r.db, gdpr::sqlite_db::read_only);
    gdpr::sqlite_statement q(d.handle(), "SELECT client_id, kind, json_extract(detail, '$.reason') FROM audit_records"
                                         " WHERE json_extract(detail, '$.will') = 1 ORDER BY seq");
    std::vector<std::string> wills;
    while (q.step()) wills.push_back(q.text(0) + " " + q.text(1) + (q.is_null(2) ? "" : ": " + q.text(2)));
    CHECK(wills == std::vector<std::string>{
                       "hub-h9 publish_refused: residency: bridge to-us would carry resident personal data to us",
                       "hub-h1 publish"});
}

TEST_CASE("a subject's export goes only to an operator whose connection may receive every region's data",
          "[integration][residency][export]") {
    itest::scratch_dir files;
    itest::broker_options o;
    o.plugin_opts = {{"residency_file", files.write("residency.json", R"({
                        "regions": ["eu", "us"], "transfers": { "us": ["eu"] }, "defaultRegion": "eu",
                        "clients": [ { "clientId": "us-*", "region": "us" } ] })")},
                     {"audit_key_file", files.write("audit.key", itest::random_bytes(32), 0600)},
                     {"operator_client_ids", std::string(itest::OPERATOR_CLIENT_ID) + ",us-ops"}};
    itest::broker b(o);
    auto export_as = [&](const std::string& operator_id) {
        const auto [status, out] = itest::run_command(std::string(GDPRCTL_PATH) + " --port " + std::to_string(b.port()) +
                                                          " --client-id " + operator_id + " --json subject export D-1",
                                                      false);
        INFO(out);
        return nlohmann::json::parse(out);
    };
    // Placed in the EU, with the EU's data: the export is answered.
    const auto eu = export_as(itest::OPERATOR_CLIENT_ID);
    CHECK_FALSE(eu.contains("error"));
    CHECK(eu["data"]["subject"] == "D-1");
    // Placed in the US, which may not receive EU-resident data (GDPR Art. 44): refused, with the reason.
    const auto us = export_as("us-ops");
    REQUIRE(us.contains("error"));
    CHECK_THAT(us["error"].get<std::string>(), Catch::Contains("may not go to region us"));
    CHECK_FALSE(us.contains("data"));
}
