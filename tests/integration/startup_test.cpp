// The broker refuses to start, with one log line naming the option or file, on bad configuration.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "broker_fixture.hpp"

namespace {

using opts = std::vector<std::pair<std::string, std::string>>;

struct refusal {
    int status;
    std::string log;
};

refusal refuse(const opts& plugin_opts) {
    itest::broker_options o;
    o.plugin_opts = plugin_opts;
    auto [status, log] = itest::broker::expect_refusal(o);
    return {status, log};
}

// A copy of the shipped schemas directory that a test may spoil.
std::string schema_copy(const itest::scratch_dir& dir) {
    const auto target = dir.path() / "schemas";
    std::filesystem::copy(itest::source_dir() + "/schemas", target, std::filesystem::copy_options::recursive);
    return target.string();
}

std::size_t count_lines_with(const std::string& log, const std::string& needle) {
    std::size_t n = 0, pos = 0;
    while ((pos = log.find(needle, pos)) != std::string::npos) {
        ++n;
        pos += needle.size();
    }
    return n;
}

} // namespace

TEST_CASE("the plugin loads and reports what it loaded", "[integration][startup]") {
    itest::broker b;
    const auto log = b.log();
    CHECK(log.find("gdpr: loaded 5 schemas") != std::string::npos);
    CHECK(log.find("acl_default allow") != std::string::npos);
}

TEST_CASE("a missing schemas directory stops the broker", "[integration][startup]") {
    const auto r = refuse({{"schemas", "/nonexistent/gdpr-schemas"}});
    CHECK(r.status != 0);
    CHECK(count_lines_with(r.log, "gdpr: Error:") == 1);
    CHECK(r.log.find("/nonexistent/gdpr-schemas") != std::string::npos);
}

TEST_CASE("a schemas directory the broker's user cannot read stops the broker", "[integration][startup]") {
    itest::scratch_dir dir;
    const auto schemas = schema_copy(dir);
    itest::broker_options o;
    o.plugin_opts = {{"schemas", schemas}};
    if (::geteuid() == 0) {
        // root reads everything: run the broker as an unprivileged user, as Mosquitto does by default.
        o.user = "nobody";
        ::chmod(schemas.c_str(), 0700);
    } else {
        ::chmod(schemas.c_str(), 0);
    }
    auto [status, log] = itest::broker::expect_refusal(o);
    ::chmod(schemas.c_str(), 0755);
    CHECK(status != 0);
    CHECK(log.find("gdpr: Error: schema " + schemas + ": cannot be read by the broker's user") != std::string::npos);
}

TEST_CASE("a schemas path that is a file stops the broker", "[integration][startup]") {
    itest::scratch_dir dir;
    const auto file = dir.write("not-a-dir", "x");
    const auto r = refuse({{"schemas", file}, {"purposes", itest::source_dir() + "/schemas/purposes.json"}});
    CHECK(r.status != 0);
    CHECK(r.log.find("gdpr: Error: schema " + file + ": is not a directory") != std::string::npos);
}

TEST_CASE("a schema that does not parse stops the broker naming the file", "[integration][startup]") {
    itest::scratch_dir dir;
    const auto schemas = schema_copy(dir);
    dir.write("schemas/broken.json", "{\n  \"id\": \"broken\",\n  \"version\": 1,\n  oops\n}");
    const auto r = refuse({{"schemas", schemas}});
    CHECK(r.status != 0);
    CHECK(r.log.find("gdpr: Error: schema " + schemas + "/broken.json: not valid JSON at line 4") != std::string::npos);
}

TEST_CASE("a schema that does not match the format stops the broker naming file and key", "[integration][startup]") {
    itest::scratch_dir dir;
    const auto schemas = schema_copy(dir);
    dir.write("schemas/bad-action.json", R"({"id":"bad","version":1,"topics":["x/+"],
        "fields":{"/a":{"category":"c","personal":false,"action":"encrypt"}}})");
    auto r = refuse({{"schemas", schemas}});
    CHECK(r.log.find(schemas + "/bad-action.json: fields[\"/a\"].action: \"encrypt\" is not one of") != std::string::npos);

    dir.write("schemas/bad-action.json", R"({"id":"bad","version":1,"topics":["x/+"],
        "fields":{"/a":{"category":"c","personal":true,"purpose":"selling-data"}}})");
    r = refuse({{"schemas", schemas}});
    CHECK(r.log.find("\"selling-data\" is not declared in purposes.json") != std::string::npos);

    dir.write("schemas/bad-action.json", R"({"id":"bad","version":1,"topics":["fleet/+/vehicle/+/telemetry"],"fields":{}})");
    r = refuse({{"schemas", schemas}});
    CHECK(r.log.find("topic filter \"fleet/+/vehicle/+/telemetry\" is already claimed by schema") != std::string::npos);
}

TEST_CASE("unknown options and bad values stop the broker naming the option", "[integration][startup]") {
    auto r = refuse({{"colour", "blue"}});
    CHECK(r.log.find("gdpr: Error: invalid 'colour' value: unknown option plugin_opt_colour") != std::string::npos);
    r = refuse({{"unmatched_topics", "sometimes"}});
    CHECK(r.log.find("gdpr: Error: invalid 'unmatched_topics' value: 'sometimes' is not one of pass, deny") != std::string::npos);
    r = refuse({{"acl_default", "deny"}});
    CHECK(r.log.find("gdpr: Error: invalid 'acl_default' value") != std::string::npos);
    CHECK(count_lines_with(r.log, "gdpr: Error:") == 1);
    // Erase topics that would take over every one-level topic, or fall under the control API's rules.
    r = refuse({{"erase_topic", "%c"}});
    CHECK(r.log.find("gdpr: Error: invalid 'erase_topic' value: '%c': the erase topic needs a level besides") !=
          std::string::npos);
    r = refuse({{"erase_topic", "$CONTROL/gdpr/erase/%c"}});
    CHECK(r.log.find("gdpr: Error: invalid 'erase_topic' value") != std::string::npos);
}

TEST_CASE("settings that weaken who may read alerts or act as an operator are warned about at start", "[integration][startup]") {
    itest::broker_options o;
    o.plugin_opts = {{"alert_topic", "ops/alerts"}, {"operator_usernames", "dpo"}, {"track_logins", "false"}};
    itest::broker b(o);
    CHECK(b.log().find("alert_topic 'ops/alerts' lies outside $CONTROL/gdpr/") != std::string::npos);
    CHECK(b.log().find("operator_usernames with track_logins false") != std::string::npos);
    itest::broker plain;
    CHECK(plain.log().find("lies outside $CONTROL/gdpr/") == std::string::npos);
}

TEST_CASE("pseudonymisation key problems stop the broker", "[integration][startup]") {
    itest::scratch_dir dir;
    const auto open_key = dir.write("open.key", std::string(32, 'k'), 0644);
    auto r = refuse({{"pseudonym_key_file", open_key}});
    CHECK(r.log.find("gdpr: Error: invalid 'pseudonym_key_file' value: '" + open_key +
                     "' is accessible by group or others (mode 0644)") != std::string::npos);
    r = refuse({{"pseudonym_key_file", (dir.path() / "missing.key").string()}});
    CHECK(r.log.find("invalid 'pseudonym_key_file' value") != std::string::npos);
    CHECK(r.log.find("does not exist") != std::string::npos);
    // The example schemas pseudonymise: without a key the plugin must not start.
    itest::broker_options o;
    o.plugin_opts = {{"pseudonym_key_file", ""}};
    auto [status, log] = itest::broker::expect_refusal(o);
    CHECK(status != 0);
    CHECK(log.find("invalid 'pseudonym_key_file' value: required because a schema uses action \"pseudonymise\"") !=
          std::string::npos);
}

TEST_CASE("a processing details file that does not load stops the broker, naming the option and the file",
          "[integration][startup][processing]") {
    itest::scratch_dir dir;
    const std::string details = dir.write("details.json", R"({"controller": {"contact": "privacy@acme.example"}})");
    auto r = refuse({{"processing_details_file", details}});
    CHECK(r.status != 0);
    CHECK(count_lines_with(r.log, "gdpr: Error:") == 1);
    CHECK(r.log.find("processing_details_file") != std::string::npos);
    CHECK(r.log.find(details + ": controller: missing required key \"name\"") != std::string::npos);
    r = refuse({{"processing_details_file", (dir.path() / "missing.json").string()}});
    CHECK(r.status != 0);
    CHECK(r.log.find("missing.json: cannot be opened for reading") != std::string::npos);
}
