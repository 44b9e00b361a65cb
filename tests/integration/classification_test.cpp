// Classification through a real broker: exact payloads subscribers receive, v5 and v3.1.1,
// QoS 0/1/2, retained messages, refusals and wills.
#include <catch2/catch.hpp>

#include <csignal>

#include "broker_fixture.hpp"
#include "gdpr/pseudonymiser.hpp"

using namespace std::chrono_literals;

namespace {

const std::string KEY = "0123456789abcdef0123456789abcdef-integration";
const std::string TOPIC = "fleet/acme/vehicle/v42/telemetry";
const std::string RAW =
    R"({"driver_id":"D-1234","driver_name":"Ann Example","phone":"+49 170 1234567",)"
    R"("gps":{"lat":48.137154,"lon":11.576124},"speed":52.5,"fuel":0.61,"ts":"2026-11-23T16:41:55.250Z","vin":"WVW-123"})";

// Without consent records: the GPS position serves route-analytics, which rests on consent, so it
// is dropped; the phone number (vital interests) is masked, the timestamp (contract) generalised.
std::string expected_filtered() {
    gdpr::pseudonymiser p(KEY);
    return R"({"driver_id":")" + p.pseudonym("D-1234") +
           R"(","phone":"***","gps":{},"speed":52.5,"fuel":0.61,"ts":"2026-11-23T16:41:00Z"})";
}

struct plugin_broker {
    itest::scratch_dir keys;
    itest::broker b;
    explicit plugin_broker(std::vector<std::pair<std::string, std::string>> extra = {})
        : b(make_options(keys, std::move(extra))) {}
    static itest::broker_options make_options(const itest::scratch_dir& keys,
                                              std::vector<std::pair<std::string, std::string>> extra) {
        itest::broker_options o;
        o.plugin_opts = std::move(extra);
        o.plugin_opts.emplace_back("pseudonym_key_file", keys.write("p.key", KEY, 0600));
        return o;
    }
};

} // namespace

TEST_CASE("v5 subscribers receive the filtered payload with gdpr user properties at every QoS",
          "[integration][classification]") {
    plugin_broker pb;
    itest::client sub(pb.b, "sub-v5", 5);
    sub.connect();
    sub.subscribe("fleet/#", 2);
    itest::client pub(pb.b, "vehicle-v42", 5);
    pub.connect();
    for (int qos = 0; qos <= 2; ++qos) {
        INFO("QoS " << qos);
        CHECK(pub.publish(TOPIC, RAW, qos) == 0);
        auto msg = sub.next();
        REQUIRE(msg);
        CHECK(msg->get_topic() == TOPIC);
        CHECK(msg->to_string() == expected_filtered());
        CHECK(itest::user_property(msg, "gdpr-schema") == std::optional<std::string>("vehicle-telemetry@3"));
        CHECK(itest::user_property(msg, "gdpr-residency") == std::optional<std::string>("eu"));
    }
    const auto log = pb.b.log();
    CHECK(log.find("D-1234") == std::string::npos);
    CHECK(log.find("Ann Example") == std::string::npos);
}

TEST_CASE("v3.1.1 subscribers receive the same filtered payload", "[integration][classification]") {
    plugin_broker pb;
    itest::client sub(pb.b, "sub-v311", 4);
    sub.connect();
    sub.subscribe(TOPIC, 1);
    itest::client pub(pb.b, "pub-v311", 4);
    pub.connect();
    CHECK(pub.publish(TOPIC, RAW, 1) == 0);
    auto msg = sub.next();
    REQUIRE(msg);
    CHECK(msg->to_string() == expected_filtered());
    CHECK_FALSE(itest::user_property(msg, "gdpr-schema"));
}

TEST_CASE("retained messages are stored filtered", "[integration][classification]") {
    plugin_broker pb;
    {
        itest::client pub(pb.b, "retainer", 5);
        pub.connect();
        CHECK(pub.publish(TOPIC, RAW, 1, true) == 0);
        pub.disconnect();
    }
    itest::client late(pb.b, "late-subscriber", 4);
    late.connect();
    late.subscribe(TOPIC, 1);
    auto msg = late.next();
    REQUIRE(msg);
    CHECK(msg->is_retained());
    CHECK(msg->to_string() == expected_filtered());

    // An empty retained publish still clears the retained message.
    itest::client clearer(pb.b, "clearer", 5);
    clearer.connect();
    CHECK(clearer.publish(TOPIC, "", 1, true) == 0);
    itest::client later(pb.b, "later-subscriber", 5);
    later.connect();
    later.subscribe(TOPIC, 1);
    CHECK_FALSE(later.next(500ms));
}

TEST_CASE("a payload that needs no change is forwarded byte for byte", "[integration][classification]") {
    plugin_broker pb;
    itest::client sub(pb.b, "sub", 5);
    sub.connect();
    sub.subscribe(TOPIC, 1);
    itest::client pub(pb.b, "pub", 5);
    pub.connect();
    const std::string clean = "{ \"speed\" : 52.50,\n  \"fuel\": 6.1e-1 }";
    CHECK(pub.publish(TOPIC, clean, 1) == 0);
    auto msg = sub.next();
    REQUIRE(msg);
    CHECK(msg->to_string() == clean);
    CHECK(itest::user_property(msg, "gdpr-schema") == std::optional<std::string>("vehicle-telemetry@3"));
}

TEST_CASE("a classified topic with invalid JSON is refused with reason 135 and logged without content",
          "[integration][classification]") {
    plugin_broker pb;
    itest::client sub(pb.b, "sub", 5);
    sub.connect();
    sub.subscribe("fleet/#", 1);
    itest::client pub(pb.b, "pub", 5);
    pub.connect();
    const std::string secret = "driver D-9876 secret-marker";
    CHECK(pub.publish(TOPIC, secret, 1) == 135);
    CHECK(pub.publish(TOPIC, "{\"driver_id\":\"D-9876\",", 1) == 135);
    CHECK(pub.publish(TOPIC, R"([{"driver_id":"D-9876"}])", 1) == 135);  // the schema describes an object
    CHECK_FALSE(sub.next(300ms));
    const auto log = pb.b.log();
    CHECK(log.find("gdpr: refused publish on '" + TOPIC + "' (schema vehicle-telemetry@3): not valid JSON at byte 0") !=
          std::string::npos);
    CHECK(log.find("(schema vehicle-telemetry@3): top level is an array but the schema describes an object") !=
          std::string::npos);
    CHECK(log.find("secret-marker") == std::string::npos);
    CHECK(log.find("D-9876") == std::string::npos);
    // The publisher is not disconnected and the broker keeps serving.
    CHECK(pub.publish(TOPIC, R"({"speed":1})", 1) == 0);
    REQUIRE(sub.next());
}

TEST_CASE("a v3.1.1 publisher's invalid payload is dropped silently for subscribers", "[integration][classification]") {
    plugin_broker pb;
    itest::client sub(pb.b, "sub", 4);
    sub.connect();
    sub.subscribe("fleet/#", 1);
    itest::client pub(pb.b, "pub", 4);
    pub.connect();
    CHECK(pub.publish(TOPIC, "nope", 1) == 0);  // v3.1.1 has no reason codes: a normal PUBACK
    CHECK_FALSE(sub.next(500ms));
}

TEST_CASE("unmatched topics pass by default and are refused with unmatched_topics deny",
          "[integration][classification]") {
    {
        plugin_broker pb;
        itest::client sub(pb.b, "sub", 5);
        sub.connect();
        sub.subscribe("misc/#", 1);
        itest::client pub(pb.b, "pub", 5);
        pub.connect();
        CHECK(pub.publish("misc/status", "plain text, no schema", 1) == 0);
        auto msg = sub.next();
        REQUIRE(msg);
        CHECK(msg->to_string() == "plain text, no schema");
        CHECK_FALSE(itest::user_property(msg, "gdpr-schema"));
    }
    {
        plugin_broker pb(std::vector<std::pair<std::string, std::string>>{{"unmatched_topics", "deny"}});
        itest::client sub(pb.b, "sub", 5);
        sub.connect();
        sub.subscribe("#", 1);
        itest::client pub(pb.b, "pub", 5);
        pub.connect();
        CHECK(pub.publish("misc/status", "plain text, no schema", 1) == 135);
        CHECK(pub.publish(TOPIC, R"({"speed":1})", 1) == 0);
        auto msg = sub.next();
        REQUIRE(msg);
        CHECK(msg->get_topic() == TOPIC);
        CHECK_FALSE(sub.next(300ms));
        CHECK(pb.b.log().find("refused publish on 'misc/status': no schema covers the topic") != std::string::npos);
    }
}

TEST_CASE("a will on a classified topic that would need filtering is refused", "[integration][classification]") {
    plugin_broker pb;
    itest::client sub(pb.b, "watcher", 5);
    sub.connect();
    sub.subscribe("fleet/#", 1);
    itest::connect_and_vanish(pb.b, "vehicle-dirty-will", TOPIC, R"({"driver_id":"D-1234","speed":0})");
    itest::connect_and_vanish(pb.b, "vehicle-clean-will", TOPIC, R"({"speed":0})");
    auto msg = sub.next();
    REQUIRE(msg);
    CHECK(msg->to_string() == R"({"speed":0})");
    CHECK_FALSE(sub.next(500ms));
    const auto log = pb.b.log();
    CHECK(log.find("gdpr: refused will message on '" + TOPIC + "'") != std::string::npos);
    CHECK(log.find("D-1234") == std::string::npos);

    // A later ordinary publish from a reconnected client of the same id is filtered, not refused.
    itest::client again(pb.b, "vehicle-dirty-will", 5);
    again.connect();
    CHECK(again.publish(TOPIC, R"({"driver_name":"Ann","speed":3})", 1) == 0);
    msg = sub.next();
    REQUIRE(msg);
    CHECK(msg->to_string() == R"({"speed":3})");
}

TEST_CASE("a delayed will is checked when the broker sends it, with or without observed logins",
          "[integration][classification][will]") {
    for (const char* track_logins : {"true", "false"}) {
        INFO("track_logins " << track_logins);
        plugin_broker pb(std::vector<std::pair<std::string, std::string>>{{"track_logins", track_logins}});
        itest::broker& b = pb.b;
        itest::client sub(b, "watcher", 5);
        sub.connect();
        sub.subscribe("fleet/#", 1);
        itest::connect_and_vanish(b, "vehicle-late-dirty", TOPIC, R"({"driver_id":"D-1234","speed":0})", 1, false, 1);
        itest::connect_and_vanish(b, "vehicle-late-clean", TOPIC, R"({"speed":1})", 1, false, 1);
        auto msg = sub.next(5s);
        REQUIRE(msg);
        CHECK(msg->to_string() == R"({"speed":1})");
        CHECK_FALSE(sub.next(2s));
        CHECK(b.wait_for_log("gdpr: refused will message on '" + TOPIC + "'"));
    }
}

TEST_CASE("wills the broker sends as it stops are checked: none reaches its persistence file unfiltered",
          "[integration][classification][will]") {
    itest::scratch_dir state;
    itest::broker_options o = plugin_broker::make_options(state, {{"database", (state.path() / "gdpr.db").string()}});
    // A production broker keeps retained messages across a restart.
    o.extra_config = "persistence true\npersistence_location " + state.path().string() + "/\n";
    const std::string dirty_topic = "fleet/acme/vehicle/v51/telemetry", clean_topic = "fleet/acme/vehicle/v52/telemetry";
    {
        itest::broker b(o);
        itest::client dirty(b, "vehicle-stop-dirty", 5), clean(b, "vehicle-stop-clean", 5);
        // Both connected when the broker stops: it sends their wills after its loop, with no
        // DISCONNECT before them.
        dirty.connect(mqtt::message(dirty_topic, R"({"driver_id":"D-1234","speed":0})", 1, true));
        clean.connect(mqtt::message(clean_topic, R"({"speed":1})", 1, true));
        REQUIRE(b.stop());
        CHECK(b.log().find("gdpr: refused will message on '" + dirty_topic + "'") != std::string::npos);
    }
    itest::broker b(o);
    itest::client sub(b, "watcher", 5);
    sub.connect();
    sub.subscribe("fleet/#", 1);
    const auto kept = sub.drain(1500ms);
    REQUIRE(kept.size() == 1);
    CHECK(kept[0]->get_topic() == clean_topic);
    CHECK(kept[0]->to_string() == R"({"speed":1})");
}

TEST_CASE("a delayed will is still checked when a SIGHUP comes while the broker holds it",
          "[integration][classification][will]") {
    plugin_broker pb;
    itest::broker& b = pb.b;
    itest::client sub(b, "watcher", 5);
    sub.connect();
    sub.subscribe("fleet/#", 1);
    itest::connect_and_vanish(b, "vehicle-hup-dirty", TOPIC, R"({"driver_id":"D-1234","speed":0})", 1, false, 3);
    itest::connect_and_vanish(b, "vehicle-hup-clean", TOPIC, R"({"speed":1})", 1, false, 3);
    // SIGHUP: the broker checks every client it holds again, the two offline sessions included.
    b.signal(SIGHUP);
    auto msg = sub.next(8s);
    REQUIRE(msg);
    CHECK(msg->to_string() == R"({"speed":1})");
    CHECK_FALSE(sub.next(2s));
    CHECK(b.wait_for_log("gdpr: refused will message on '" + TOPIC + "'"));
}

TEST_CASE("without observed logins, MQTT v3.1.1 clients that reconnect under one id publish as usual",
          "[integration][classification][will]") {
    plugin_broker pb(std::vector<std::pair<std::string, std::string>>{{"track_logins", "false"}});
    itest::broker& b = pb.b;
    itest::client sub(b, "watcher", 5);
    sub.connect();
    sub.subscribe("fleet/#", 1);
    // Each run connects, publishes and disconnects; the broker may place the next connection in
    // the memory of the one before, which ended without a will. Before MQTT v5 a will cannot wait.
    for (int i = 0; i < 8; ++i) {
        const auto [status, out] = itest::run_command("mosquitto_pub -h 127.0.0.1 -p " + std::to_string(b.port()) +
                                                      " -V 311 -q 1 -i same-device -t " + TOPIC +
                                                      R"( -m '{"driver_name":"Ann","speed":)" + std::to_string(i) + "}'");
        INFO(out);
        CHECK(status == 0);
    }
    for (int i = 0; i < 8; ++i) {
        auto msg = sub.next();
        REQUIRE(msg);
        CHECK(msg->to_string() == R"({"speed":)" + std::to_string(i) + "}");
    }
    CHECK(b.log().find("refused will message") == std::string::npos);
    // A v3.1.1 will is still checked: it goes out as its connection ends.
    itest::connect_and_vanish(b, "v311-dirty-will", TOPIC, R"({"driver_id":"D-1234","speed":0})", 1, false, 0, 4);
    CHECK(b.wait_for_log("gdpr: refused will message on '" + TOPIC + "'"));
    CHECK_FALSE(sub.next(500ms));
}

TEST_CASE("the other example schemas classify through the broker", "[integration][classification]") {
    plugin_broker pb;
    itest::client sub(pb.b, "sub", 5);
    sub.connect();
    sub.subscribe("health/#", 1);
    sub.subscribe("home/#", 1);
    itest::client pub(pb.b, "wearable-1", 5);
    pub.connect();
    gdpr::pseudonymiser p(KEY);
    CHECK(pub.publish("health/wearable/u-77/vitals",
                      R"({"user_email":"ann@example.org","hr":71,"spo2":98,"ts":1795452459123,"battery":80,)"
                      R"("readings":[{"hr":70,"ts":1795452458999,"raw":[1,2]}],"device_serial":"SN-1"})",
                      1) == 0);
    auto msg = sub.next();
    REQUIRE(msg);
    // Everything personal here serves purposes resting on consent, and u-77 has given none.
    CHECK(msg->to_string() == R"({"battery":80,"readings":[{}]})");
    CHECK(itest::user_property(msg, "gdpr-schema") == std::optional<std::string>("wearable-health@1"));

    CHECK(pub.publish("home/h1/presence/kitchen",
                      R"({"occupant":"Ann","occupied":true,"room":"kitchen","ts":1795452459,"camera_snapshot":"base64...","lux":300})",
                      1) == 0);
    msg = sub.next();
    REQUIRE(msg);
    CHECK(msg->to_string() == R"({"occupant":")" + p.pseudonym("Ann") +
                                  R"(","occupied":true,"room":"kitchen","ts":1795449600,"lux":300})");
}
