#include <catch2/catch.hpp>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "gdpr/processing_record.hpp"
#include "gdpr/residency.hpp"
#include "test_support.hpp"

using json = nlohmann::json;

namespace {

gdpr::purpose_registry purposes() {
    gdpr::purpose_registry r;
    r.add({"ops", gdpr::lawful_basis::contract, "running the fleet"});
    r.add({"analytics", gdpr::lawful_basis::consent, "route analysis for drivers who opted in"});
    r.add({"care", gdpr::lawful_basis::vital_interests, "emergencies"});
    r.add({"unused", gdpr::lawful_basis::legitimate_interests, ""});
    return r;
}

const char* TELEMETRY = R"({"id":"telemetry","version":2,"topics":["fleet/+/telemetry"],"residency":"eu",
  "subject":{"field":"/driver"},"retentionDays":30,
  "fields":{"/driver":{"category":"identifier","personal":true,"purpose":"ops","action":"pseudonymise"},
            "/name":{"category":"identifier","personal":true,"purpose":"ops","action":"drop"},
            "/lat":{"category":"location","personal":true,"purpose":"analytics","action":"generalise","decimals":1},
            "/ts":{"category":"time","personal":true,"purpose":"ops","action":"generalise","truncate":"minute"},
            "/phone":{"category":"contact","personal":true,"purpose":"care","action":"mask"},
            "/route":{"category":"location","personal":true,"purpose":"analytics","action":"keep"},
            "/speed":{"category":"telemetry","personal":false}}})";
const char* VITALS = R"({"id":"vitals","version":1,"topics":["health/+/vitals"],"residency":"eu",
  "subject":{"topicLevel":1},"unclassified":"keep",
  "fields":{"/hr":{"category":"Health","personal":true,"purpose":"analytics","action":"keep"},
            "/blood_group":{"category":"health_data","personal":true,"purpose":"care","action":"keep"}}})";
const char* STATUS = R"({"id":"status","version":1,"topics":["fleet/+/status"],"residency":"eu","retentionDays":7,
  "fields":{"/fuel":{"category":"telemetry","personal":false}}})";
const char* ANONYMOUS = R"({"id":"counter","version":1,"topics":["people/+/count"],"retentionDays":1,
  "fields":{"/visitor":{"category":"identifier","personal":true,"purpose":"ops","action":"keep"}}})";

gdpr::schema_set set_of(std::initializer_list<const char*> texts) {
    gdpr::schema_set set;
    for (const char* text : texts) set.schemas.push_back(gdpr::parse_schema(text, "inline.json", purposes()));
    for (std::size_t i = 0; i < set.schemas.size(); ++i)
        for (const auto& t : set.schemas[i].topics) set.router.add(t, static_cast<std::int32_t>(i));
    return set;
}

gdpr::schema_set schemas() { return set_of({TELEMETRY, VITALS, STATUS, ANONYMOUS}); }

const json& by_key(const json& list, const std::string& key, const std::string& value) {
    for (const auto& item : list)
        if (item.at(key) == value) return item;
    FAIL("no entry with " << key << " = " << value << " in " << list.dump());
    throw std::logic_error("unreachable");
}

bool has_note(const json& record, const std::string& part) {
    const auto& notes = record.at("reviewNotes");
    return std::any_of(notes.begin(), notes.end(), [&](const json& n) { return n.get<std::string>().find(part) != std::string::npos; });
}

} // namespace

TEST_CASE("the processing record lists every purpose with its basis and what serves it", "[processing]") {
    const auto set = schemas();
    const auto record = gdpr::processing_record(set, purposes(), nullptr, nullptr);
    const json& analytics = by_key(record["purposes"], "name", "analytics");
    CHECK(analytics["lawfulBasis"] == "consent");
    CHECK(analytics["needsConsent"] == true);
    CHECK(analytics["description"] == "route analysis for drivers who opted in");
    CHECK(analytics["schemas"] == json::array({"telemetry@2", "vitals@1"}));
    CHECK(analytics["dataCategories"] == json::array({"Health", "location"}));
    CHECK(analytics["specialCategories"] == json::array({"Health"}));
    const json& ops = by_key(record["purposes"], "name", "ops");
    CHECK(ops["lawfulBasis"] == "contract");
    CHECK(ops["needsConsent"] == false);
    CHECK(ops["schemas"] == json::array({"counter@1", "telemetry@2"}));
    CHECK(by_key(record["purposes"], "name", "unused")["schemas"].empty());
    CHECK(has_note(record, "purpose unused is declared but no schema field serves it"));
    CHECK_FALSE(has_note(record, "purpose ops is declared"));
}

TEST_CASE("the processing record says what of each field reaches subscribers", "[processing]") {
    const auto record = gdpr::processing_record(schemas(), purposes(), nullptr, nullptr);
    const json& telemetry = by_key(record["activities"], "schema", "telemetry@2");
    CHECK(telemetry["topics"] == json::array({"fleet/+/telemetry"}));
    CHECK(telemetry["dataSubject"] == "named by the payload field /driver");
    CHECK(telemetry["retentionDays"] == 30);
    CHECK(telemetry["unclassifiedMembers"] == "removed before delivery");
    const json& fields = telemetry["personalData"];
    CHECK(fields.size() == 6);
    CHECK(by_key(fields, "field", "/driver")["delivered"] == "pseudonymised (keyed HMAC-SHA256)");
    CHECK(by_key(fields, "field", "/driver")["personalDataDelivered"] == true);  // GDPR Recital 26
    CHECK(by_key(fields, "field", "/name")["delivered"] == "removed before delivery");
    CHECK(by_key(fields, "field", "/name")["personalDataDelivered"] == false);
    CHECK(by_key(fields, "field", "/phone")["delivered"] == "replaced by a fixed value");
    CHECK(by_key(fields, "field", "/phone")["personalDataDelivered"] == false);
    CHECK(by_key(fields, "field", "/phone")["lawfulBasis"] == "vital_interests");
    CHECK(by_key(fields, "field", "/lat")["delivered"] == "rounded to 1 decimal, with consent (else removed)");
    CHECK(by_key(fields, "field", "/lat")["needsConsent"] == true);
    CHECK(by_key(fields, "field", "/ts")["delivered"] == "truncated to the minute");
    CHECK(by_key(fields, "field", "/route")["delivered"] == "delivered as published, with consent (else removed)");
    CHECK(telemetry["otherFields"] == json::array({{{"field", "/speed"}, {"category", "telemetry"}, {"delivered", "delivered as published"}}}));
    CHECK(by_key(record["activities"], "schema", "vitals@1")["dataSubject"] == "named by topic level 1 (0-based)");
    CHECK(by_key(record["activities"], "schema", "status@1")["holdsPersonalData"] == false);
}

TEST_CASE("special categories are recognised by their category name", "[processing]") {
    for (const char* name : {"health", "Health", "health_data", "health-record", "patient health", "medical-history",
                             "biometric", "biometrics", "genetic", "genetics", "sex life", "sexual-orientation",
                             "Religious_Beliefs", "religion", "trade-union-membership", "ethnic-origin", "ethnicity",
                             "race", "political-opinion", "philosophical-beliefs"})
        CHECK(gdpr::is_special_category(name));
    for (const char* name : {"location", "identifier", "", "-", "sex", "gender", "wealth", "telemetry", "contact", "image",
                             "unhealthy-battery", "spacerace"})
        CHECK_FALSE(gdpr::is_special_category(name));
}

TEST_CASE("data on criminal convictions and offences is pointed out for review", "[processing]") {
    for (const char* name : {"criminal-record", "Conviction", "traffic-offence", "offenses"})
        CHECK(gdpr::is_criminal_offence_category(name));
    for (const char* name : {"health", "identifier", "location", "offset"}) CHECK_FALSE(gdpr::is_criminal_offence_category(name));
    const char* screening = R"({"id":"screening","version":1,"topics":["staff/+"],"retentionDays":5,"subject":{"field":"/id"},
      "fields":{"/id":{"category":"identifier","personal":true,"purpose":"ops","action":"pseudonymise"},
                "/record":{"category":"criminal-record","personal":true,"purpose":"ops","action":"drop"}}})";
    const auto record = gdpr::processing_record(set_of({screening}), purposes(), nullptr, nullptr);
    CHECK(has_note(record, "schema screening@1: /record (criminal-record) is data on criminal convictions or offences "
                           "(GDPR Art. 10)"));
    CHECK_FALSE(has_note(record, "schema screening@1: /id"));
}

TEST_CASE("the processing record points a reviewer at what the schemas leave open", "[processing]") {
    const auto record = gdpr::processing_record(schemas(), purposes(), nullptr, nullptr);
    // GDPR Art. 9: explicit consent, or another condition of Art. 9(2) besides the Art. 6 basis.
    CHECK(has_note(record, "schema vitals@1: Health under purpose analytics is special-category data (GDPR Art. 9(1)): "
                           "the consent recorded for it must be explicit (Art. 9(2)(a))"));
    CHECK(has_note(record, "schema vitals@1: health_data under purpose care (vital_interests) is special-category data "
                           "(GDPR Art. 9(1)): it needs a condition of Art. 9(2) besides its Art. 6(1) basis"));
    CHECK(has_note(record, "schema vitals@1: holds personal data but declares no retentionDays"));
    CHECK(has_note(record, "schema vitals@1: members no rule names are delivered unclassified"));
    CHECK(has_note(record, "schema counter@1: holds personal data but names no data subject"));
    CHECK(has_note(record, "schema counter@1: holds personal data and declares no residency"));
    CHECK_FALSE(has_note(record, "schema telemetry@2"));  // retention, subject, residency, unclassified all declared
    CHECK_FALSE(has_note(record, "schema status@1"));     // no personal data
    CHECK(record["residency"].is_null());
    CHECK(record["safeguards"].is_null());  // the files alone say nothing about the broker's options
}

TEST_CASE("the processing record names the regions data may reach and what each bridge carries", "[processing][residency]") {
    const auto set = schemas();
    const auto rules = gdpr::residency_rules::from_json_text(R"({"regions": ["eu", "ch", "us"],
        "transfers": {"eu": ["ch"], "us": ["eu"]}, "defaultRegion": "eu",
        "bridges": [{"name": "to-us", "region": "us", "topics": ["fleet/#"]}]})", set);
    const auto record = gdpr::processing_record(set, purposes(), &rules, nullptr);
    CHECK(record["residency"]["regions"] == json::array({"eu", "ch", "us"}));
    CHECK(record["residency"]["transfers"] == json::array({{{"from", "eu"}, {"to", "ch"}}, {{"from", "us"}, {"to", "eu"}}}));
    CHECK(record["residency"]["defaultRegion"] == "eu");
    const json& telemetry = by_key(record["activities"], "schema", "telemetry@2")["residency"];
    CHECK(telemetry["region"] == "eu");
    CHECK(telemetry["mayReach"] == json::array({"eu", "ch"}));
    CHECK(telemetry["bridges"] == json::array({{{"name", "to-us"}, {"region", "us"}, {"messages", "publishes with a personal field left after filtering refused, for every subscriber (reason code 135, GDPR Art. 44); the rest carried"}}}));
    const json& status = by_key(record["activities"], "schema", "status@1")["residency"];
    CHECK(status["bridges"] == json::array({{{"name", "to-us"}, {"region", "us"}, {"messages", "carried (no field classified personal is left after filtering)"}}}));
    CHECK(by_key(record["activities"], "schema", "vitals@1")["residency"]["bridges"].empty());
    CHECK(by_key(record["activities"], "schema", "counter@1")["residency"].is_null());
    CHECK(has_note(record, "bridge to-us (to us) topic \"fleet/#\" can carry eu-resident personal data of schema telemetry@2"));
}

TEST_CASE("the processing record describes the broker's safeguards when its options are known", "[processing]") {
    const auto set = schemas();
    gdpr::processing_safeguards off;
    off.unmatched = gdpr::unmatched_policy::deny;
    auto record = gdpr::processing_record(set, purposes(), nullptr, &off);
    CHECK(record["safeguards"]["auditTrail"].is_null());
    CHECK(record["safeguards"]["unmatchedTopics"] == "refused");
    CHECK(record["safeguards"]["residencyEnforced"] == false);
    CHECK(has_note(record, "session recording is off"));
    CHECK_FALSE(has_note(record, "unmatched_topics pass"));

    gdpr::processing_safeguards on;
    on.audit_trail = true;
    on.record_deliveries = "refusals";
    on.default_retention_days = 90;
    on.pseudonym_key = true;
    record = gdpr::processing_record(set, purposes(), nullptr, &on);
    CHECK(record["safeguards"]["auditTrail"] ==
          json{{"deliveriesRecorded", "refusals"}, {"hashChained", true}, {"personalDataSealedPerSubject", true},
               {"defaultRetentionDays", 90}});
    CHECK(record["safeguards"]["pseudonymisationKey"] == true);
    CHECK(record["safeguards"]["unmatchedTopics"] == "delivered unclassified");
    CHECK_FALSE(has_note(record, "session recording is off"));
    CHECK(has_note(record, "topics no schema covers are delivered unclassified"));
}

TEST_CASE("the processing record reads as text", "[processing]") {
    const auto set = schemas();
    const auto rules = gdpr::residency_rules::from_json_text(R"({"regions": ["eu", "us"], "transfers": {},
        "defaultRegion": "eu", "bridges": [{"name": "to-us", "region": "us", "topics": ["fleet/#"]}]})", set);
    gdpr::processing_safeguards on;
    on.audit_trail = true;
    on.record_deliveries = "all";
    on.default_retention_days = 365;
    const std::string text = gdpr::processing_record_text(gdpr::processing_record(set, purposes(), &rules, &on));
    CHECK_THAT(text, Catch::StartsWith("Record of processing activities (GDPR Art. 30(1))\n"));
    CHECK_THAT(text, Catch::Contains("  analytics (consent, consent record needed)\n"));
    CHECK_THAT(text, Catch::Contains("    /lat (location) for analytics [consent]: rounded to 1 decimal, with consent (else removed)\n"));
    // Nothing of a removed field reaches anyone, whatever its purpose rests on.
    CHECK_THAT(text, Catch::Contains("    /name (identifier) for ops [contract]: removed before delivery\n"));
    CHECK_THAT(text, Catch::Contains("    /hr (Health, special category) for analytics [consent]: delivered as published, with consent (else removed)\n"));
    CHECK_THAT(text, Catch::Contains("    bridge to-us (to us): publishes with a personal field left after filtering refused"));
    CHECK_THAT(text, Catch::Contains("    subject's id: payload field /driver: pseudonymised (keyed HMAC-SHA256)\n"));
    CHECK_THAT(text, Catch::Contains("Transfers between regions (Art. 30(1)(e))\n  none\n"));
    CHECK_THAT(text, Catch::Contains("deliveries recorded: all; records no schema's retention covers kept 365 days\n"));
    CHECK_THAT(text, Catch::Contains("For review\n  - "));
}

namespace {

const char* TRIP = R"({"id":"trip","version":1,"topics":["trips/+"],"retentionDays":5,"unclassified":"keep",
  "subject":{"field":"/driver/id"},
  "fields":{"/driver":{"category":"identifier","personal":true,"purpose":"ops","action":"drop"},
            "/blood":{"category":"blood-genetics","personal":false}}})";
const char* LOOSE_ID = R"({"id":"loose","version":1,"topics":["loose/+"],"retentionDays":5,"unclassified":"keep",
  "subject":{"field":"/who"},"fields":{"/t":{"category":"time","personal":true,"purpose":"ops","action":"keep"}}})";
const char* BOUND = R"({"id":"bound","version":1,"topics":["rooms/+"],"retentionDays":5,"subject":{"binding":"client"},
  "fields":{"/seen":{"category":"presence","personal":true,"purpose":"analytics","action":"keep"}}})";


// The record of one schema resident in eu, with a bridge carrying every topic to us.
json record_with_bridge_to_us(const char* schema_text) {
    const auto set = set_of({schema_text});
    const auto rules = gdpr::residency_rules::from_json_text(R"({"regions": ["eu", "us"], "transfers": {},
        "defaultRegion": "eu", "bridges": [{"name": "to-us", "region": "us", "topics": ["#"]}]})", set);
    return gdpr::processing_record(set, purposes(), &rules, nullptr);
}

} // namespace

TEST_CASE("the processing record says what subscribers get of the value that names the subject", "[processing]") {
    const auto record = gdpr::processing_record(set_of({TRIP, LOOSE_ID, BOUND, ANONYMOUS}), purposes(), nullptr, nullptr);
    CHECK(by_key(record["activities"], "schema", "trip@1")["subjectIdentifier"] ==
          "payload field /driver/id (under the rule on /driver): removed before delivery");
    CHECK(by_key(record["activities"], "schema", "loose@1")["subjectIdentifier"] ==
          "payload field /who, no rule: delivered as published");
    CHECK(has_note(record, "schema loose@1: the subject field /who reaches subscribers unclassified, as published: it is not counted as personal data"));
    CHECK_FALSE(has_note(record, "schema trip@1: the subject field"));
    CHECK(by_key(record["activities"], "schema", "bound@1")["subjectIdentifier"] == "not in the message (the device's bindings)");
    CHECK(by_key(record["activities"], "schema", "counter@1")["subjectIdentifier"].is_null());
    const auto vitals = gdpr::processing_record(schemas(), purposes(), nullptr, nullptr);
    CHECK(by_key(vitals["activities"], "schema", "vitals@1")["subjectIdentifier"] ==
          "topic level 1: delivered as published (topics are not rewritten)");
    CHECK(has_note(vitals, "schema vitals@1: the data subject's id is a topic level, which every subscriber receives"));
    CHECK_FALSE(has_note(vitals, "schema telemetry@2: the data subject's id"));
    // A category that names a special category on a field marked not personal.
    CHECK(has_note(record, "schema trip@1: /blood has the category blood-genetics, a special category"));
}

TEST_CASE("consent fields of a schema that names no subject are recorded as never delivered", "[processing]") {
    const char* no_subject = R"({"id":"beacon","version":1,"topics":["beacons/+"],"retentionDays":5,"residency":"eu",
      "fields":{"/route":{"category":"location","personal":true,"purpose":"analytics","action":"keep"},
                "/name":{"category":"identifier","personal":true,"purpose":"ops","action":"drop"}}})";
    const auto record = record_with_bridge_to_us(no_subject);
    const json& beacon = by_key(record["activities"], "schema", "beacon@1");
    CHECK(by_key(beacon["personalData"], "field", "/route")["delivered"] == "always removed (no data subject, so no consent)");
    CHECK(by_key(beacon["personalData"], "field", "/route")["personalDataDelivered"] == false);
    CHECK(beacon["mayDeliverPersonalData"] == false);
    CHECK(beacon["holdsPersonalData"] == true);
    // Nothing personal is left after filtering, so the broker lets the bridge carry every message.
    CHECK(beacon["residency"]["bridges"] ==
          json::array({{{"name", "to-us"}, {"region", "us"}, {"messages", "carried (no field classified personal is left after filtering)"}}}));
    CHECK(has_note(record, "schema beacon@1: has fields whose purpose rests on consent but names no data subject"));
    CHECK(has_note(record, "schema beacon@1: holds personal data but names no data subject"));
    const std::string text = gdpr::processing_record_text(record);
    CHECK_THAT(text, Catch::Contains("    /route (location) for analytics [consent]: always removed (no data subject, so no consent)\n"));
}

TEST_CASE("a bridge carries a schema whose personal fields never reach subscribers", "[processing][residency]") {
    const char* dropped = R"({"id":"dropped","version":1,"topics":["plant/+"],"residency":"eu","retentionDays":5,
      "subject":{"field":"/worker"},
      "fields":{"/worker":{"category":"identifier","personal":true,"purpose":"ops","action":"drop"},
                "/phone":{"category":"contact","personal":true,"purpose":"ops","action":"mask"}}})";
    const auto record = record_with_bridge_to_us(dropped);
    CHECK(by_key(record["activities"], "schema", "dropped@1")["residency"]["bridges"] ==
          json::array({{{"name", "to-us"}, {"region", "us"}, {"messages", "carried (no field classified personal is left after filtering)"}}}));
}

TEST_CASE("the processing record from the files alone reads as text without residency or safeguards", "[processing]") {
    const std::string text = gdpr::processing_record_text(gdpr::processing_record(schemas(), purposes(), nullptr, nullptr));
    CHECK_THAT(text, Catch::Contains("  counter@1  topics: people/+/count\n"));
    CHECK_THAT(text, Catch::Contains("    residency: none declared\n"));
    CHECK_THAT(text, Catch::Contains("    retention: not declared\n"));
    CHECK_THAT(text, Catch::Contains("    not personal: /speed\n"));
    CHECK_THAT(text, !Catch::Contains("Transfers between regions"));
    CHECK_THAT(text, !Catch::Contains("Safeguards"));
    CHECK_THAT(text, !Catch::Contains("Controller"));
    const std::string empty = gdpr::processing_record_text(gdpr::processing_record({}, {}, nullptr, nullptr));
    CHECK_THAT(empty, Catch::Contains("Purposes\n\nActivities\n\nFor review\n  - no processing details file"));
    gdpr::processing_details named;
    named.controller = {"Acme Fleet GmbH", ""};
    named.file = "details.json";
    const std::string reviewed = gdpr::processing_record_text(gdpr::processing_record({}, {}, nullptr, nullptr, &named));
    CHECK_THAT(reviewed, Catch::Contains("Activities\n\nFor review\n  - the controller has no contact details in details.json"));
}

TEST_CASE("what the record says of consent, enclosing rules and topic-level subjects matches the filter", "[processing]") {
    const char* shop = R"({"id":"shop","version":1,"topics":["shop/+"],"residency":"eu","retentionDays":5,
      "subject":{"field":"/customer/id"},
      "fields":{"/customer":{"category":"identifier","personal":true,"purpose":"ops","action":"pseudonymise"},
                "/email":{"category":"contact","personal":true,"purpose":"analytics","action":"mask"},
                "/basket_size":{"category":"commerce","personal":false,"purpose":"analytics"}}})";
    const auto record = record_with_bridge_to_us(shop);
    const json& a = by_key(record["activities"], "schema", "shop@1");
    // The value holding the subject is an object: pseudonymise cannot take it, the filter removes it.
    CHECK(a["subjectIdentifier"] ==
          "payload field /customer/id (under the rule on /customer): removed before delivery (the rule's action cannot "
          "transform an object)");
    // Consent is checked before the action: without it a masked field goes, key and all.
    CHECK(by_key(a["personalData"], "field", "/email")["delivered"] == "replaced by a fixed value, with consent (else removed)");
    // A field marked not personal can still rest on consent, and serves its purpose.
    CHECK(a["otherFields"] == json::array({{{"field", "/basket_size"}, {"category", "commerce"},
                                             {"delivered", "delivered as published, with consent (else removed)"},
                                             {"purpose", "analytics"}, {"needsConsent", true}}}));
    const std::string text = gdpr::processing_record_text(record);
    CHECK_THAT(text, Catch::Contains("    /email (contact) for analytics [consent]: replaced by a fixed value, with consent (else removed)\n"));

    // A rule through "*" on the subject field itself does not enclose it.
    const char* tagged = R"({"id":"tagged","version":1,"topics":["tags/+"],"retentionDays":5,"subject":{"field":"/id"},
      "fields":{"/*":{"category":"identifier","personal":true,"purpose":"ops","action":"pseudonymise"}}})";
    CHECK(by_key(gdpr::processing_record(set_of({tagged}), purposes(), nullptr, nullptr)["activities"], "schema",
                 "tagged@1")["subjectIdentifier"] == "payload field /id: pseudonymised (keyed HMAC-SHA256)");

    const char* rooms = R"({"id":"rooms","version":1,"topics":["rooms/+/seen"],"residency":"eu","retentionDays":5,
      "subject":{"topicLevel":1},"fields":{"/t":{"category":"time","personal":false}}})";
    CHECK(by_key(record_with_bridge_to_us(rooms)["activities"], "schema", "rooms@1")["residency"]["bridges"][0]["messages"] ==
          "every publish refused, for every subscriber: the topic names the data subject (reason code 135, GDPR Art. 44)");
}

TEST_CASE("a purpose served only by fields marked not personal is not reported unused", "[processing]") {
    const char* counts = R"({"id":"counts","version":1,"topics":["counts/+"],"subject":{"field":"/who"},
      "fields":{"/who":{"category":"identifier","personal":false,"purpose":"care","action":"keep"}}})";
    const auto record = gdpr::processing_record(set_of({counts}), purposes(), nullptr, nullptr);
    CHECK(by_key(record["purposes"], "name", "care")["schemas"] == json::array({"counts@1"}));
    CHECK_FALSE(has_note(record, "purpose care is declared"));
    CHECK(has_note(record, "purpose unused is declared"));
    CHECK(has_note(record, "schema counts@1: the subject field /who reaches subscribers under a rule that marks it not "
                           "personal: it is not counted as personal data"));
    // Under a rule on its enclosing object that pseudonymises, the subject field goes with the object.
    const char* wrapped = R"({"id":"wrapped","version":1,"topics":["wrapped/+"],"retentionDays":5,"subject":{"field":"/who/id"},
      "fields":{"/who":{"category":"identifier","personal":false,"action":"pseudonymise"}}})";
    CHECK_FALSE(has_note(gdpr::processing_record(set_of({wrapped}), purposes(), nullptr, nullptr), "reaches subscribers"));
}

TEST_CASE("a bridge without a region and a broker without a pseudonymisation key read as text", "[processing][residency]") {
    const auto set = schemas();
    // A bridge found in mosquitto.conf that the residency file gives no region.
    test_support::temp_dir dir;
    dir.write("mosquitto.conf", "connection somewhere\naddress 192.0.2.1:1883\ntopic fleet/# out 1\n");
    const auto rules = gdpr::residency_rules::from_json_text(R"({"regions": ["eu"], "transfers": {},
        "defaultRegion": "eu", "brokerConfig": "mosquitto.conf"})", set, "residency file", dir.path().string());
    gdpr::processing_safeguards plain;
    const auto record = gdpr::processing_record(set, purposes(), &rules, &plain);
    CHECK(by_key(record["activities"], "schema", "telemetry@2")["residency"]["bridges"][0]["region"].is_null());
    const std::string text = gdpr::processing_record_text(record);
    CHECK_THAT(text, Catch::Contains("    bridge somewhere (to no region): publishes with a personal field left"));
    CHECK_THAT(text, Catch::Contains("  pseudonymisation key: not set; residency enforced: yes;"));
    CHECK_THAT(text, Catch::Contains("  audit trail: off\n"));
    CHECK(has_note(record, "bridge somewhere ("));
    CHECK(has_note(record, ") has no region in the residency file"));
}

TEST_CASE("a processing details file names the controller, people and measures, and is checked strictly",
          "[processing][details]") {
    test_support::temp_dir dir;
    const std::string good = dir.write("details.json", R"({
        "controller": {"name": "Acme Fleet GmbH", "contact": "privacy@acme.example"},
        "jointControllers": [{"name": "Acme Leasing AG"}],
        "representative": {"name": "Acme EU Rep", "contact": "rep@acme.example"},
        "dataProtectionOfficer": {"name": "DPO", "contact": "dpo@acme.example"},
        "dataSubjects": {"*": "customers", "telemetry": "drivers"},
        "recipients": {"*": ["operations staff"], "telemetry": ["dispatch", "operations staff"]},
        "organisationalMeasures": ["keys rotated yearly"]})");
    const gdpr::processing_details d = gdpr::load_processing_details(good);
    CHECK(d.controller.name == "Acme Fleet GmbH");
    CHECK(d.data_subjects_of("telemetry") == "drivers");
    CHECK(d.data_subjects_of("vitals") == "customers");
    CHECK(d.recipients_of("telemetry") == std::vector<std::string>{"operations staff", "dispatch"});
    CHECK(d.recipients_of("status") == std::vector<std::string>{"operations staff"});

    const auto bad = [&](const std::string& text, const std::string& why) {
        INFO(text);
        const std::string path = dir.write("bad.json", text);
        CHECK_THROWS_WITH(gdpr::load_processing_details(path), Catch::Contains(path) && Catch::Contains(why));
    };
    bad(R"({"controller": {"name": "A"}, "recipient": {}})",
        "(top level): unknown key \"recipient\" (known: $schema, description, controller, jointControllers");
    bad(R"({"dataSubjects": {}})", "missing required key \"controller\"");
    bad(R"({"controller": {"contact": "x"}})", "controller: missing required key \"name\"");
    bad(R"({"controller": {"name": "  "}})", "controller.name: must not be empty");
    bad(R"({"controller": {"name": "A"}, "recipients": {"*": "staff"}})", "recipients[\"*\"]: must be an array");
    bad(R"({"controller": {"name": "A"}, "dataSubjects": {"x": 1}})", "dataSubjects[\"x\"]: must be a string");
    bad(R"({"controller": {"name": "A"}, "jointControllers": {"name": "B"}})", "jointControllers: must be an array");
    bad(R"({"controller": {"name": "A"},)", "not valid JSON at line 1");
    bad("[]", "must be a JSON object");
    bad(R"({"controller": {"name": "A"}, "recipients": {"vehicle-telemetry@3": ["x"]}})",
        "recipients[\"vehicle-telemetry@3\"]: \"vehicle-telemetry@3\" is not a schema id");
    bad(R"({"controller": {"name": "A"}, "dataSubjects": {"Fleet": "drivers"}})", "\"Fleet\" is not a schema id");
    bad(R"({"controller": {"name": "A"}, "description": 5})", "description: must be a string");
    CHECK_THROWS_WITH(gdpr::load_processing_details((dir.path() / "missing.json").string()),
                      Catch::Contains("cannot be opened"));
}

TEST_CASE("with processing details the record names the controller and, per activity, data subjects and recipients",
          "[processing][details]") {
    gdpr::processing_details d;
    d.controller = {"Acme Fleet GmbH", "privacy@acme.example"};
    d.data_protection_officer = gdpr::party{"DPO", "dpo@acme.example"};
    d.data_subjects = {{"telemetry", "drivers"}, {"retired", "nobody now"}};
    d.recipients = {{"telemetry", {"dispatch"}}};
    d.organisational_measures = {"keys rotated yearly"};
    d.file = "details.json";
    const auto set = schemas();
    const auto record = gdpr::processing_record(set, purposes(), nullptr, nullptr, &d);
    INFO(record.dump(2));
    CHECK(record["controller"] == json{{"name", "Acme Fleet GmbH"}, {"contact", "privacy@acme.example"}});
    CHECK(record["dataProtectionOfficer"]["name"] == "DPO");
    CHECK(record["representative"].is_null());
    CHECK(record["jointControllers"].empty());
    CHECK(record["organisationalMeasures"] == json::array({"keys rotated yearly"}));
    CHECK(record["processingDetailsFile"] == "details.json");
    const auto& telemetry = by_key(record["activities"], "schema", "telemetry@2");
    CHECK(telemetry["categoriesOfDataSubjects"] == "drivers");
    CHECK(telemetry["categoriesOfRecipients"] == json::array({"dispatch"}));
    const auto& vitals = by_key(record["activities"], "schema", "vitals@1");
    CHECK(vitals["categoriesOfDataSubjects"].is_null());
    CHECK(has_note(record, "schema vitals@1: holds personal data, and details.json says nothing of whom it is about"));
    CHECK(has_note(record, "schema vitals@1: may deliver personal data, and details.json names no categories of recipients"));
    CHECK_FALSE(has_note(record, "schema telemetry@2: holds personal data, and"));
    CHECK_FALSE(has_note(record, "schema telemetry@2: may deliver"));
    CHECK_FALSE(has_note(record, "schema status@1: holds"));  // no personal data: nothing to say
    CHECK(has_note(record, "details.json describes schema retired, which is not loaded"));
    CHECK_FALSE(has_note(record, "no processing details file"));
    CHECK_FALSE(has_note(record, "has no contact details"));

    const std::string text = gdpr::processing_record_text(record);
    CHECK_THAT(text, Catch::Contains("Controller (Art. 30(1)(a))\n  controller: Acme Fleet GmbH (privacy@acme.example)\n"
                                     "  data protection officer: DPO (dpo@acme.example)\n"));
    CHECK_THAT(text, Catch::Contains("    categories of data subjects: drivers\n"));
    CHECK_THAT(text, Catch::Contains("    recipients: dispatch\n"));
    CHECK_THAT(text, Catch::Contains("Organisational measures (Art. 30(1)(g), 32)\n  - keys rotated yearly\n"));

    const auto without = gdpr::processing_record(set, purposes(), nullptr, nullptr);
    CHECK(without["controller"].is_null());
    CHECK(by_key(without["activities"], "schema", "telemetry@2")["categoriesOfRecipients"].empty());
    CHECK(has_note(without, "no processing details file (processing_details_file)"));
}
