// What subscribers and operators can rely on: wills cannot slip through a session takeover,
// publishers cannot forge gdpr-* properties, the plugin cooperates with acl_file, and log lines
// do not carry subject identifiers taken from topics.
#include <catch2/catch.hpp>

#include <sstream>

#include "broker_fixture.hpp"

using namespace std::chrono_literals;

namespace {
const std::string TOPIC = "fleet/acme/vehicle/v42/telemetry";
}

TEST_CASE("a will sent because of a session takeover is checked like any other will", "[integration][will]") {
    itest::broker b;
    itest::client watcher(b, "watcher", 5);
    watcher.connect();
    watcher.subscribe("fleet/#", 1);
    for (int version : {4, 5}) {
        INFO("MQTT version " << version);
        const std::string id = "vehicle-takeover-v" + std::to_string(version);
        itest::client first(b, id, version);
        first.connect(mqtt::message(TOPIC, R"({"driver_id":"D-1234","speed":0})", 1, false));
        itest::client second(b, id, version);  // same client id: the broker drops `first`
        second.connect();
        REQUIRE(b.wait_for_log("refused will message on '" + TOPIC + "'"));
        CHECK_FALSE(watcher.next(300ms));
        // The connection that took over publishes normally: filtered, not refused.
        CHECK(second.publish(TOPIC, R"({"driver_name":"Ann","speed":4})", 1) == 0);
        auto msg = watcher.next();
        REQUIRE(msg);
        CHECK(msg->to_string() == R"({"speed":4})");
    }
    // A clean will on takeover is delivered.
    itest::client first(b, "vehicle-clean", 4);
    first.connect(mqtt::message(TOPIC, R"({"speed":0})", 1, false));
    itest::client second(b, "vehicle-clean", 4);
    second.connect();
    auto msg = watcher.next();
    REQUIRE(msg);
    CHECK(msg->to_string() == R"({"speed":0})");
    CHECK(b.log().find("D-1234") == std::string::npos);
}

TEST_CASE("publishers cannot forge gdpr-* user properties", "[integration][properties]") {
    itest::broker b;
    itest::client sub(b, "sub", 5);
    sub.connect();
    sub.subscribe("#", 1);
    itest::client pub(b, "forger", 5);
    pub.connect();
    mqtt::properties props;
    props.add(mqtt::property(mqtt::property::USER_PROPERTY, "gdpr-schema", "nothing@0"));
    props.add(mqtt::property(mqtt::property::USER_PROPERTY, "x-trace", "t-1"));
    props.add(mqtt::property(mqtt::property::USER_PROPERTY, "gdpr-residency", "us"));
    props.add(mqtt::property(mqtt::property::USER_PROPERTY, "GDPR-Residency", "us"));
    props.add(mqtt::property(mqtt::property::CONTENT_TYPE, "application/json"));
    props.add(mqtt::property(mqtt::property::CORRELATION_DATA, "corr-9"));

    auto all_values = [](const mqtt::const_message_ptr& m, const std::string& name) {
        std::vector<std::string> values;
        const auto& p = m->get_properties();
        for (std::size_t i = 0; i < p.count(mqtt::property::USER_PROPERTY); ++i) {
            auto [k, v] = mqtt::get<mqtt::string_pair>(p, mqtt::property::USER_PROPERTY, i);
            if (k == name) values.push_back(v);
        }
        return values;
    };

    CHECK(pub.publish(TOPIC, R"({"speed":1})", 1, false, props) == 0);
    auto msg = sub.next();
    REQUIRE(msg);
    CHECK(all_values(msg, "gdpr-schema") == std::vector<std::string>{"vehicle-telemetry@3"});
    CHECK(all_values(msg, "gdpr-residency") == std::vector<std::string>{"eu"});
    CHECK(all_values(msg, "GDPR-Residency").empty());
    CHECK(all_values(msg, "x-trace") == std::vector<std::string>{"t-1"});
    CHECK(mqtt::get<std::string>(msg->get_properties(), mqtt::property::CONTENT_TYPE) == "application/json");
    CHECK(mqtt::get<std::string>(msg->get_properties(), mqtt::property::CORRELATION_DATA) == "corr-9");

    CHECK(pub.publish("misc/unclassified", "hello", 1, false, props) == 0);
    msg = sub.next();
    REQUIRE(msg);
    CHECK(all_values(msg, "gdpr-schema").empty());
    CHECK(all_values(msg, "gdpr-residency").empty());
    CHECK(all_values(msg, "GDPR-Residency").empty());
    CHECK(all_values(msg, "x-trace") == std::vector<std::string>{"t-1"});

    // The plugin's own erase acknowledgements reach subscribers (and bridges) too.
    sub.raw().unsubscribe("#")->wait();
    pub.subscribe("gdpr/erase/forger/ack", 1);
    CHECK(pub.publish("gdpr/erase/forger/ack", R"({"requestId":"none","status":"erased"})", 1, false, props) == 0);
    msg = pub.next();
    REQUIRE(msg);
    CHECK(all_values(msg, "gdpr-schema").empty());
    CHECK(all_values(msg, "gdpr-residency").empty());
    CHECK(all_values(msg, "x-trace") == std::vector<std::string>{"t-1"});
}

TEST_CASE("with acl_default defer the broker's acl_file decides what the plugin does not object to",
          "[integration][acl]") {
    itest::scratch_dir files;
    const auto acl = files.write("acl", "topic readwrite fleet/#\n");
    itest::broker_options o;
    o.plugin_opts = {{"acl_default", "defer"}};
    o.extra_config = "acl_file " + acl + "\n";
    itest::broker b(o);
    CHECK(b.log().find("acl_default defer") != std::string::npos);
    itest::client sub(b, "sub", 5);
    sub.connect();
    sub.subscribe("fleet/#", 1);
    sub.subscribe("other/#", 1);
    itest::client pub(b, "pub", 5);
    pub.connect();
    CHECK(pub.publish(TOPIC, R"({"driver_name":"Ann","speed":2})", 1) == 0);
    auto msg = sub.next();
    REQUIRE(msg);
    CHECK(msg->to_string() == R"({"speed":2})");
    CHECK(pub.publish("other/x", "not allowed by acl_file", 1) == 135);
    CHECK_FALSE(sub.next(300ms));
}

TEST_CASE("with acl_default defer and no other ACL source the broker denies access", "[integration][acl]") {
    itest::broker_options o;
    o.plugin_opts = {{"acl_default", "defer"}};
    itest::broker b(o);
    itest::client sub(b, "sub", 5);
    sub.connect();
    CHECK_THROWS(sub.subscribe("fleet/#", 1));  // SUBACK with "not authorized"
    itest::client pub(b, "pub", 5);
    pub.connect();
    CHECK(pub.publish(TOPIC, R"({"speed":2})", 1) == 135);
}

TEST_CASE("log lines replace a subject taken from the topic", "[integration][logging]") {
    itest::broker b;
    itest::client pub(b, "wearable", 5);
    pub.connect();
    CHECK(pub.publish("health/wearable/u-4711/vitals", "{broken", 1) == 135);
    REQUIRE(b.wait_for_log("refused publish on 'health/wearable/<subject>/vitals' (schema wearable-health@1)"));
    // The broker's own connection and packet lines are the operator's choice (log_type); the
    // plugin's lines must not carry the subject.
    std::istringstream lines(b.log());
    for (std::string line; std::getline(lines, line);) {
        if (line.find("gdpr:") != std::string::npos) CHECK(line.find("u-4711") == std::string::npos);
    }
}
