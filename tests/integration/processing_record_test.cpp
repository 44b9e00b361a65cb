// The record of processing activities (GDPR Art. 30(1)): describeProcessing on a running broker
// answers what it enforces now, reloads included; gdprctl prints it, or builds it from the files
// alone before they are put in use.
#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "broker_fixture.hpp"

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

json control(itest::client& c, const json& command) {
    const std::string answer = itest::control_exchange(c, json{{"commands", json::array({command})}}.dump());
    if (answer.empty()) FAIL("no control response");
    return json::parse(answer)["responses"][0];
}

const json& activity(const json& record, const std::string& tag) {
    for (const auto& a : record.at("activities"))
        if (a.at("schema") == tag) return a;
    FAIL("no activity for " << tag << " in " << record.dump());
    throw std::logic_error("unreachable");
}

const json& field(const json& activity, const std::string& pointer) {
    for (const auto& f : activity.at("personalData"))
        if (f.at("field") == pointer) return f;
    FAIL("no field " << pointer << " in " << activity.dump());
    throw std::logic_error("unreachable");
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

} // namespace

TEST_CASE("describeProcessing answers the record of what the broker enforces, and follows a reload",
          "[integration][processing][control]") {
    itest::scratch_dir dir;
    const fs::path schemas = dir.path() / "schemas";
    fs::copy(fs::path(itest::source_dir()) / "schemas", schemas, fs::copy_options::recursive);
    // Personal data that never reaches subscribers: a bridge may carry these messages.
    std::ofstream(schemas / "lab-sensor.json") << R"({"id": "lab-sensor", "version": 1, "topics": ["lab/+/reading"],
      "residency": "eu", "retentionDays": 5, "subject": {"field": "/operator_name"},
      "fields": {"/operator_name": {"category": "identifier", "personal": true, "purpose": "fleet-operations",
                                    "action": "drop"}}})";
    itest::broker_options o;
    o.plugin_opts = {{"schemas", schemas.string()},
                     {"audit_key_file", dir.write("audit.key", itest::random_bytes(32), 0600)},
                     {"record_deliveries", "refusals"},
                     {"retention_days", "90"},
                     {"operator_client_ids", std::string(itest::OPERATOR_CLIENT_ID) + ",gdprctl-op"},
                     {"residency_file", dir.write("residency.json", R"({"regions": ["eu", "ch", "us"],
                         "transfers": {"eu": ["ch"]}, "defaultRegion": "eu",
                         "bridges": [{"name": "to-us", "region": "us",
                                      "topics": ["fleet/+/vehicle/+/status", "lab/#", "home/+/presence/#"]}]})")}};
    itest::broker b(o);
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5), stranger(b, "curious", 5), device(b, "sensor-1", 5);
    op.connect();
    stranger.connect();
    device.connect();

    const auto refused = control(stranger, {{"command", "describeProcessing"}});
    REQUIRE(refused.contains("error"));
    CHECK_THAT(refused["error"].get<std::string>(), Catch::StartsWith("not authorised"));
    CHECK(control(op, {{"command", "describeProcessing"}, {"detail", true}}).contains("error"));  // unknown argument

    auto r = control(op, {{"command", "describeProcessing"}, {"correlationData", "ropa-1"}});
    INFO(r.dump());
    REQUIRE_FALSE(r.contains("error"));
    CHECK(r["correlationData"] == "ropa-1");
    const json& record = r["data"];
    CHECK(record["activities"].size() == 6);
    const json& vehicle = activity(record, "vehicle-telemetry@3");
    CHECK(field(vehicle, "/phone")["delivered"] == "replaced by a fixed value");
    CHECK(field(vehicle, "/gps/lat")["needsConsent"] == true);
    CHECK(vehicle["residency"]["mayReach"] == json::array({"eu", "ch"}));
    CHECK(activity(record, "wearable-health@1")["specialCategories"] == json::array({"health"}));
    // What the record says a bridge carries is what the broker does with a publish (GDPR Art. 44).
    const json carried = json::array({{{"name", "to-us"}, {"region", "us"}, {"messages", "carried (no field classified personal is left after filtering)"}}});
    CHECK(activity(record, "vehicle-status@1")["residency"]["bridges"] == carried);
    CHECK(activity(record, "lab-sensor@1")["residency"]["bridges"] == carried);
    CHECK(device.publish("lab/l1/reading", R"({"operator_name":"Ann","t":1})") == 0);
    const json& presence_bridges = activity(record, "home-presence@2")["residency"]["bridges"];
    REQUIRE(presence_bridges.size() == 1);
    CHECK_THAT(presence_bridges[0]["messages"].get<std::string>(), Catch::StartsWith("publishes with a personal field left after filtering refused"));
    CHECK(device.publish("home/h1/presence/hall", R"({"occupied":true,"room":"hall"})") == 135);
    CHECK(record["residency"]["transfers"] == json::array({{{"from", "eu"}, {"to", "ch"}}}));
    CHECK(record["safeguards"]["residencyEnforced"] == true);
    CHECK(record["safeguards"]["pseudonymisationKey"] == true);
    CHECK(record["safeguards"]["auditTrail"]["deliveriesRecorded"] == "refusals");
    CHECK(record["safeguards"]["auditTrail"]["defaultRetentionDays"] == 90);

    // The record follows what is in use: version 4 drops the phone number instead of masking it.
    std::string text = slurp(schemas / "vehicle-telemetry.json");
    text = std::regex_replace(text, std::regex("\"version\": [0-9]+"), "\"version\": 4");
    text = std::regex_replace(text, std::regex("\"action\": \"mask\",\\s*\"mask\": \"\\*\\*\\*\""), "\"action\": \"drop\"");
    std::ofstream(schemas / "vehicle-telemetry.json") << text;
    REQUIRE_FALSE(control(op, {{"command", "reloadSchemas"}}).contains("error"));
    r = control(op, {{"command", "describeProcessing"}});
    REQUIRE_FALSE(r.contains("error"));
    CHECK(field(activity(r["data"], "vehicle-telemetry@4"), "/phone")["delivered"] == "removed before delivery");

    // gdprctl prints it for people.
    const auto [status, out] = itest::run_command(std::string(GDPRCTL_PATH) + " --port " + std::to_string(b.port()) +
                                                  " --client-id gdprctl-op processing-record");
    INFO(out);
    CHECK(status == 0);
    CHECK_THAT(out, Catch::StartsWith("Record of processing activities (GDPR Art. 30(1))"));
    CHECK_THAT(out, Catch::Contains("  vehicle-telemetry@4  topics: fleet/+/vehicle/+/telemetry\n"));
    CHECK_THAT(out, Catch::Contains("    /phone (contact) for safety-incident-response [vital_interests]: removed before delivery\n"));
    CHECK_THAT(out, Catch::Contains("    bridge to-us (to us): carried (no field classified personal is left after filtering)\n"));
}

TEST_CASE("gdprctl processing-record builds the record from the files alone, and names a file that does not load",
          "[integration][processing][gdprctl]") {
    const std::string source = itest::source_dir();
    const std::string gdprctl = GDPRCTL_PATH;
    auto [status, out] = itest::run_command(gdprctl + " processing-record --schemas " + source + "/schemas --residency " +
                                                source + "/examples/residency.json --json",
                                            false);
    REQUIRE(status == 0);
    const json record = json::parse(out);
    CHECK(record["activities"].size() == 5);
    CHECK(record["safeguards"].is_null());
    CHECK(record["residency"]["defaultRegion"] == "eu");
    CHECK(field(activity(record, "vehicle-telemetry@3"), "/driver_id")["delivered"] == "pseudonymised (keyed HMAC-SHA256)");
    const auto& notes = record["reviewNotes"];
    CHECK(std::any_of(notes.begin(), notes.end(), [](const json& n) {
        return n.get<std::string>() == "schema home-presence@2: holds personal data but declares no retentionDays "
                                       "(GDPR Art. 5(1)(e), 30(1)(f))";
    }));

    itest::scratch_dir dir;
    const fs::path schemas = dir.path() / "schemas";
    fs::copy(fs::path(source) / "schemas", schemas, fs::copy_options::recursive);
    std::ofstream(schemas / "broken.json") << R"({"id": "broken", "version": 1, "topics": []})";
    std::tie(status, out) = itest::run_command(gdprctl + " processing-record --schemas " + schemas.string());
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains("broken.json"));
    CHECK_THAT(out, !Catch::Contains("Record of processing activities"));

    // A residency file naming a region the schemas do not know refuses like the broker's start.
    itest::scratch_dir files;
    const std::string bad_residency = files.write("residency.json", R"({"regions": ["us"], "transfers": {}, "defaultRegion": "us"})");
    std::tie(status, out) = itest::run_command(gdprctl + " processing-record --schemas " + source + "/schemas --residency " + bad_residency);
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains("residency_file") && Catch::Contains("eu"));
    // Another purposes file: a schema naming a purpose it does not declare does not load.
    const std::string few_purposes = files.write("purposes.json", R"({"purposes": {"fleet-operations": {"lawfulBasis": "contract"}}})");
    std::tie(status, out) = itest::run_command(gdprctl + " processing-record --schemas " + source + "/schemas --purposes " + few_purposes);
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains("is not declared in purposes"));

    // Options before the command mean the broker's form, which reads no files.
    std::tie(status, out) = itest::run_command(gdprctl + " --port 1 processing-record --schemas " + source + "/schemas");
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains("processing-record from the files takes no option before the command"));

    std::tie(status, out) = itest::run_command(gdprctl + " processing-record --schemas");
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains("--schemas needs a value"));
}

TEST_CASE("a processing details file names the controller in the record, is read again on reload, and is checked",
          "[integration][processing][details]") {
    itest::scratch_dir dir;
    const std::string details = dir.write("details.json", R"({"controller": {"name": "Acme Fleet GmbH", "contact": "privacy@acme.example"},
        "dataSubjects": {"*": "drivers"}, "recipients": {"*": ["dispatch"]}})");
    const fs::path schemas = dir.path() / "schemas";
    fs::copy(fs::path(itest::source_dir()) / "schemas", schemas, fs::copy_options::recursive);
    itest::broker_options o;
    o.plugin_opts = {{"processing_details_file", details}, {"schemas", schemas.string()}};
    itest::broker b(o);
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5);
    op.connect();
    auto controller_now = [&] { return control(op, {{"command", "describeProcessing"}})["data"]["controller"]["name"]; };
    auto r = control(op, {{"command", "describeProcessing"}});
    INFO(r.dump());
    REQUIRE_FALSE(r.contains("error"));
    CHECK(r["data"]["controller"]["name"] == "Acme Fleet GmbH");
    CHECK(activity(r["data"], "vehicle-telemetry@3")["categoriesOfDataSubjects"] == "drivers");
    CHECK(activity(r["data"], "vehicle-telemetry@3")["categoriesOfRecipients"] == json::array({"dispatch"}));

    // A reload reads it again.
    dir.write("details.json", R"({"controller": {"name": "Acme Fleet SE"}})");
    REQUIRE_FALSE(control(op, {{"command", "reloadSchemas"}}).contains("error"));
    CHECK(controller_now() == "Acme Fleet SE");
    CHECK(b.log().find("reloaded processing details from " + details + " (") != std::string::npos);
    // One that does not load changes nothing, the schemas included, and says which file.
    const fs::path telemetry = schemas / "vehicle-telemetry.json";
    const std::string telemetry_v3 = slurp(telemetry);
    std::ofstream(telemetry) << std::regex_replace(telemetry_v3, std::regex("\"version\": [0-9]+"), "\"version\": 4");
    dir.write("details.json", R"({"controller": {"name": "Acme Fleet AG"}, "recipient": []})");
    const auto refused = control(op, {{"command", "reloadSchemas"}});
    INFO(refused.dump());
    REQUIRE(refused.contains("error"));
    CHECK_THAT(refused["error"].get<std::string>(), Catch::Contains(details) && Catch::Contains("unknown key \"recipient\""));
    CHECK(controller_now() == "Acme Fleet SE");
    CHECK_NOTHROW(activity(control(op, {{"command", "describeProcessing"}})["data"], "vehicle-telemetry@3"));
    // Good details with definitions the broker refuses (a schema removed without allowRemovals):
    // the details stay as they were too.
    std::ofstream(telemetry) << telemetry_v3;
    dir.write("details.json", R"({"controller": {"name": "Acme Fleet KG"}})");
    const fs::path wearable = schemas / "wearable-health.json";
    const std::string wearable_text = slurp(wearable);
    fs::remove(wearable);
    REQUIRE(control(op, {{"command", "reloadSchemas"}}).contains("error"));
    CHECK(controller_now() == "Acme Fleet SE");
    // SIGHUP reads it too.
    std::ofstream(wearable) << wearable_text;
    b.signal(SIGHUP);
    CHECK(b.wait_for_log("reloaded processing details from " + details + " (SIGHUP)"));
    CHECK(controller_now() == "Acme Fleet KG");

    // The same file offline, beside the schemas.
    const std::string source = itest::source_dir();
    auto [status, out] = itest::run_command(std::string(GDPRCTL_PATH) + " processing-record --schemas " + source +
                                                "/schemas --details " + source + "/examples/processing-details.json",
                                            false);
    INFO(out);
    CHECK(status == 0);
    CHECK_THAT(out, Catch::Contains("Controller (Art. 30(1)(a))\n  controller: Acme Fleet Services GmbH"));
    CHECK_THAT(out, Catch::Contains("    categories of data subjects: drivers of the fleet's vehicles (employees and contractors)\n"));
    CHECK_THAT(out, !Catch::Contains("no processing details file"));
    dir.write("details.json", R"({"controller": {"name": "Acme Fleet KG"}, "recipients": {"Fleet": ["x"]}})");
    std::tie(status, out) = itest::run_command(std::string(GDPRCTL_PATH) + " processing-record --schemas " + source +
                                               "/schemas --details " + details);
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains(details) && Catch::Contains("is not a schema id"));
    // The details alone, without the schemas, are a usage error of the offline form.
    std::tie(status, out) = itest::run_command(std::string(GDPRCTL_PATH) + " processing-record --details " + details);
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains("processing-record needs --schemas DIR"));
}

TEST_CASE("gdprctl schema lint loads the files as the broker does and lists what they leave to review",
          "[integration][processing][gdprctl][schema]") {
    const std::string source = itest::source_dir();
    const std::string gdprctl = GDPRCTL_PATH;
    auto [status, out] = itest::run_command(gdprctl + " schema lint " + source + "/schemas");
    CHECK(status == 0);
    CHECK_THAT(out, Catch::Contains("5 schemas (6 topic filters) and 7 purposes load as the broker loads them"));
    CHECK_THAT(out, Catch::Contains("  - schema home-presence@2: holds personal data but declares no retentionDays"));
    // A lint of the files, not of the Art. 30 record: no note on a missing processing details file.
    CHECK_THAT(out, !Catch::Contains("processing details file"));
    std::tie(status, out) = itest::run_command(gdprctl + " schema lint " + source + "/schemas --strict");
    CHECK(status == 1);

    // Overlapping topic filters: the broker takes the more specific; lint says which.
    itest::scratch_dir dir;
    const fs::path schemas = dir.path() / "schemas";
    fs::copy(fs::path(source) / "schemas", schemas, fs::copy_options::recursive);
    std::ofstream(schemas / "acme-telemetry.json") << R"({"id": "acme-telemetry", "version": 1,
        "topics": ["fleet/acme/vehicle/+/telemetry"], "subject": {"field": "/driver_id"}, "residency": "eu",
        "retentionDays": 30, "unclassified": "drop",
        "fields": {"/driver_id": {"category": "identifier", "personal": true, "purpose": "fleet-operations",
                                  "action": "pseudonymise"}}})";
    std::tie(status, out) = itest::run_command(gdprctl + " schema lint " + schemas.string());
    CHECK(status == 0);
    CHECK_THAT(out, Catch::Contains("6 schemas (7 topic filters)"));
    CHECK_THAT(out, Catch::Contains("\"fleet/acme/vehicle/+/telemetry\" is more specific and wins"));

    // Files with nothing to review pass --strict.
    itest::scratch_dir clean;
    clean.write("purposes.json", R"({"purposes": {"metering": {"lawfulBasis": "contract"}}})");
    clean.write("meter.json", R"({"id": "meter", "version": 1, "topics": ["home/+/meter"],
        "subject": {"field": "/household"}, "residency": "eu", "retentionDays": 30, "unclassified": "drop",
        "fields": {"/household": {"category": "identifier", "personal": true, "purpose": "metering",
                                  "action": "pseudonymise"},
                   "/kwh": {"category": "telemetry", "personal": false}}})");
    std::tie(status, out) = itest::run_command(gdprctl + " schema lint " + clean.path().string() + " --strict");
    CHECK(status == 0);
    CHECK_THAT(out, Catch::Contains("nothing to review"));

    // A file the broker would refuse: named, exit 2, as the broker refuses to start.
    std::ofstream(schemas / "broken.json") << R"({"id": "broken", "version": 1, "topics": []})";
    std::tie(status, out) = itest::run_command(gdprctl + " schema lint " + schemas.string());
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains("broken.json"));
    std::tie(status, out) = itest::run_command(gdprctl + " schema lint");
    CHECK(status == 2);
    CHECK_THAT(out, Catch::Contains("schema needs 'lint DIR'"));
}
