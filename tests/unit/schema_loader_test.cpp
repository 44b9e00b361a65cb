#include <catch2/catch.hpp>

#include "gdpr/errors.hpp"
#include "gdpr/field_path.hpp"
#include "gdpr/schema_loader.hpp"
#include "test_support.hpp"

using test_support::make_schema;

namespace {

std::string schema_problem(const std::string& json) {
    try {
        make_schema(json);
    } catch (const gdpr::schema_error& e) {
        return e.what();
    }
    return "<none>";
}

const char* MINIMAL = R"({"id":"m","version":1,"topics":["a/+"],"fields":{}})";

} // namespace

TEST_CASE("field paths are JSON pointers with * wildcards", "[schema]") {
    gdpr::field_path p;
    REQUIRE(gdpr::parse_field_path("/a/b~1c/~0d/*", p).empty());
    CHECK(p.tokens == std::vector<std::string>{"a", "b/c", "~d", "*"});
    REQUIRE(gdpr::parse_field_path("/", p).empty());
    CHECK(p.tokens == std::vector<std::string>{""});
    CHECK_FALSE(gdpr::parse_field_path("", p).empty());
    CHECK_FALSE(gdpr::parse_field_path("a/b", p).empty());
    CHECK_FALSE(gdpr::parse_field_path("/a~2", p).empty());
    CHECK_FALSE(gdpr::parse_field_path("/a~", p).empty());
}

TEST_CASE("a pointer token names an array element only as RFC 6901 writes an index", "[schema]") {
    for (const char* index : {"0", "7", "10", "123456789"}) CHECK(gdpr::is_array_index_token(index));
    for (const char* member : {"", "01", "00", "-1", "1a", " 1", "*", "-"}) CHECK_FALSE(gdpr::is_array_index_token(member));
}

TEST_CASE("a full schema loads into the model", "[schema]") {
    const auto s = make_schema(R"({
      "id": "veh", "version": 3, "description": "d", "topics": ["fleet/+/vehicle/+/telemetry", "fleet/+/legacy"],
      "subject": {"topicLevel": 1}, "residency": "eu", "retentionDays": 30, "unclassified": "keep",
      "fields": {
        "/driver_id": {"category": "identifier", "personal": true, "purpose": "ops", "action": "pseudonymise"},
        "/gps/lat": {"category": "location", "personal": true, "purpose": "analytics", "action": "generalise", "decimals": 3},
        "/ts": {"category": "time", "personal": false, "action": "generalise", "truncate": "day", "epoch": "ms"},
        "/x": {"category": "c", "personal": true, "purpose": "ops", "action": "mask", "mask": {"hidden": true}}
      }})");
    CHECK(s.tag() == "veh@3");
    CHECK(s.topics.size() == 2);
    CHECK(s.subject.kind == gdpr::subject_kind::topic_level);
    CHECK(s.subject.topic_level == 1);
    CHECK(s.residency == "eu");
    CHECK(s.retention_days == 30);
    CHECK(s.unclassified == gdpr::unclassified_policy::keep);
    REQUIRE(s.fields.size() == 4);
    const auto& ts = s.fields[2];
    CHECK(ts.pointer == "/ts");
    CHECK(ts.truncate == gdpr::time_unit::day);
    CHECK(ts.epoch_millis);
    CHECK(s.fields[1].decimals == 3);
    CHECK(s.fields[3].mask_json == R"({"hidden":true})");
    const auto gps = s.tree.child(0, "gps");
    REQUIRE(gps != gdpr::field_tree::NONE);
    CHECK(s.tree.nodes[static_cast<std::size_t>(s.tree.child(gps, "lat"))].rule == 1);
    CHECK(s.tree.child(0, "nope") == gdpr::field_tree::NONE);
}

TEST_CASE("schema format errors name the location", "[schema]") {
    CHECK(schema_problem(MINIMAL) == "<none>");
    CHECK_THAT(schema_problem("{"), Catch::Contains("not valid JSON at line 1"));
    // Found by fuzzing: a number beyond a double's range escaped as the JSON library's own exception.
    CHECK_THAT(schema_problem(R"({"id":"a","version":1e999,"topics":["a"],"fields":{}})"),
               Catch::Contains("holds a number out of range"));
    CHECK_THAT(schema_problem("[]"), Catch::Contains("must be a JSON object"));
    // A rule given twice (a merge, a copy-paste) must not quietly replace the first, escaped or not.
    CHECK_THAT(schema_problem(R"({"id":"a","version":1,"topics":["a"],"fields":{
        "/driver_name": {"category":"name","personal":true,"purpose":"ops","action":"drop"},
        "/driver\u005fname": {"category":"name","personal":false}}})"),
               Catch::Contains("the key \"/driver_name\" appears twice in one object"));
    CHECK_THAT(schema_problem(R"({"id":"a","version":1,"topics":["a"],"fields":{},"unclassified":"drop","unclassified":"keep"})"),
               Catch::Contains("the key \"unclassified\" appears twice"));
    // The same name in different objects is no duplicate.
    CHECK(schema_problem(R"({"id":"a","version":1,"topics":["a"],"fields":{
        "/a": {"category":"c","personal":false}, "/b": {"category":"c","personal":false}}})") == "<none>");
    CHECK_THAT(schema_problem(R"({"version":1,"topics":["a"],"fields":{}})"), Catch::Contains("missing required key \"id\""));
    CHECK_THAT(schema_problem(R"({"id":"Bad Id","version":1,"topics":["a"],"fields":{}})"), Catch::Contains("id:"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":0,"topics":["a"],"fields":{}})"), Catch::Contains("version: must be between"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":"1","topics":["a"],"fields":{}})"), Catch::Contains("version: must be an integer"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":[],"fields":{}})"), Catch::Contains("topics: must be a non-empty"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a/#/b"],"fields":{}})"), Catch::Contains("topics[0]"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a","a"],"fields":{}})"), Catch::Contains("listed twice"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"fields":{},"extra":1})"), Catch::Contains("unknown key \"extra\""));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"unclassified":"maybe","fields":{}})"), Catch::Contains("unclassified"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"residency":"EU","fields":{}})"), Catch::Contains("residency"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a/+"],"subject":{"topicLevel":2},"fields":{}})"),
               Catch::Contains("has no level 2"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"subject":{"field":"/a","binding":"client"},"fields":{}})"),
               Catch::Contains("exactly one"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"subject":{"binding":"server"},"fields":{}})"),
               Catch::Contains("subject.binding"));
}

TEST_CASE("field rule errors name the field", "[schema]") {
    auto field = [](const std::string& rule) {
        return schema_problem(R"({"id":"m","version":1,"topics":["a"],"fields":{"/f":)" + rule + "}}");
    };
    CHECK(field(R"({"category":"c","personal":false})") == "<none>");
    CHECK_THAT(field(R"({"personal":false})"), Catch::Contains("fields[\"/f\"]: missing required key \"category\""));
    CHECK_THAT(field(R"({"category":"c","personal":"yes"})"), Catch::Contains("personal: must be true or false"));
    CHECK_THAT(field(R"({"category":"c","personal":true})"), Catch::Contains("must name its \"purpose\""));
    CHECK_THAT(field(R"({"category":"c","personal":true,"purpose":"marketing"})"), Catch::Contains("not declared in purposes.json"));
    CHECK_THAT(field(R"({"category":"c","personal":true,"purpose":"ops"})"), Catch::Contains("must state its \"action\""));
    CHECK(field(R"({"category":"c","personal":true,"purpose":"ops","action":"keep"})") == "<none>");
    CHECK_THAT(field(R"({"category":"c","personal":false,"action":"encrypt"})"), Catch::Contains("\"encrypt\" is not one of"));
    CHECK_THAT(field(R"({"category":"c","personal":false,"action":"generalise"})"), Catch::Contains("exactly one of"));
    CHECK_THAT(field(R"({"category":"c","personal":false,"action":"generalise","decimals":2,"truncate":"day"})"), Catch::Contains("exactly one of"));
    CHECK_THAT(field(R"({"category":"c","personal":false,"action":"generalise","decimals":16})"), Catch::Contains("decimals: must be between 0 and 15"));
    CHECK_THAT(field(R"({"category":"c","personal":false,"action":"generalise","truncate":"week"})"), Catch::Contains("\"week\""));
    CHECK_THAT(field(R"({"category":"c","personal":false,"action":"generalise","decimals":1,"epoch":"s"})"), Catch::Contains("epoch: only allowed"));
    CHECK_THAT(field(R"({"category":"c","personal":false,"mask":"x"})"), Catch::Contains("mask: only allowed"));
    CHECK_THAT(field(R"({"category":"c","personal":false,"decimals":1})"), Catch::Contains("only allowed with action \"generalise\""));
    CHECK_THAT(field(R"({"category":"c","personal":false,"colour":1})"), Catch::Contains("unknown key \"colour\""));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"fields":{"f":{"category":"c","personal":false}}})"),
               Catch::Contains("must start with '/'"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"fields":{
        "/gps":{"category":"c","personal":false},"/gps/lat":{"category":"c","personal":false}}})"),
               Catch::Contains("nested under the rule for \"/gps\""));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"fields":{
        "/gps/lat":{"category":"c","personal":false},"/gps":{"category":"c","personal":false}}})"),
               Catch::Contains("a rule may not be nested under another rule"));
    CHECK_THAT(schema_problem(R"({"id":"m","version":1,"topics":["a"],"fields":{
        "/r/*":{"category":"c","personal":false,"action":"drop"},"/r/0/y":{"category":"c","personal":false}}})"),
               Catch::Contains("overlaps rules on a literal path beside its \"*\""));
}

TEST_CASE("purposes.json declares a lawful basis per purpose", "[schema]") {
    test_support::temp_dir dir;
    const auto good = dir.write("purposes.json", R"({"purposes":{"a":{"lawfulBasis":"consent"},"b":{"lawfulBasis":"contract","description":"x"}}})");
    const auto reg = gdpr::load_purposes(good);
    CHECK(reg.size() == 2);
    CHECK(reg.needs_consent("a"));
    CHECK_FALSE(reg.needs_consent("b"));
    const auto bad = dir.write("bad.json", R"({"purposes":{"a":{"lawfulBasis":"because"}}})");
    CHECK_THROWS_WITH(gdpr::load_purposes(bad), Catch::Contains("not a GDPR Art. 6(1) basis"));
    const auto twice = dir.write("twice.json", R"({"purposes":{"a":{"lawfulBasis":"consent"},"a":{"lawfulBasis":"contract"}}})");
    CHECK_THROWS_WITH(gdpr::load_purposes(twice), Catch::Contains("twice.json") && Catch::Contains("the key \"a\" appears twice"));
    CHECK_THROWS_WITH(gdpr::load_purposes((dir.path() / "none.json").string()), Catch::Contains("does not exist"));
}

TEST_CASE("a schema directory loads in name order and rejects conflicts", "[schema]") {
    const auto purposes = test_support::test_purposes();
    test_support::temp_dir dir;
    dir.write("b.json", R"({"id":"b","version":1,"topics":["x/#"],"fields":{}})");
    dir.write("a.json", R"({"id":"a","version":1,"topics":["x/+"],"fields":{}})");
    dir.write("purposes.json", "{}");
    dir.write("format.schema.json", "{}");
    dir.write("notes.txt", "ignored");
    auto set = gdpr::load_schema_directory(dir.path().string(), purposes);
    REQUIRE(set.schemas.size() == 2);
    CHECK(set.schemas[0].id == "a");
    CHECK(set.route("x/y")->id == "a");
    CHECK(set.route("x/y/z")->id == "b");
    CHECK(set.route("y") == nullptr);
    REQUIRE(set.warnings.size() == 1);
    CHECK_THAT(set.warnings[0], Catch::Contains("\"x/+\" is more specific and wins"));

    // One schema's own filters may overlap: the same rules apply either way, nothing to warn about.
    dir.write("d.json", R"({"id":"d","version":1,"topics":["d/+/data","d/#","d/7/+"],"fields":{}})");
    set = gdpr::load_schema_directory(dir.path().string(), purposes);
    CHECK(set.route("d/7/data")->id == "d");
    CHECK(set.warnings.size() == 1);
    std::filesystem::remove(dir.path() / "d.json");

    dir.write("c.json", R"({"id":"a","version":2,"topics":["z"],"fields":{}})");
    CHECK_THROWS_WITH(gdpr::load_schema_directory(dir.path().string(), purposes), Catch::Contains("used by another schema"));
    dir.write("c.json", R"({"id":"c","version":2,"topics":["x/+"],"fields":{}})");
    CHECK_THROWS_WITH(gdpr::load_schema_directory(dir.path().string(), purposes), Catch::Contains("already claimed by schema \"a\""));
    dir.write("c.json", R"({"id":"c","version":2,"topics":["x/+"],)");
    CHECK_THROWS_WITH(gdpr::load_schema_directory(dir.path().string(), purposes), Catch::Contains("c.json: not valid JSON"));
    CHECK_THROWS_WITH(gdpr::load_schema_directory((dir.path() / "nope").string(), purposes), Catch::Contains("does not exist"));
}

TEST_CASE("the shipped example schemas load", "[schema]") {
    const std::string dir = std::string(GDPR_SOURCE_DIR) + "/schemas";
    const auto purposes = gdpr::load_purposes(dir + "/purposes.json");
    const auto set = gdpr::load_schema_directory(dir, purposes);
    CHECK(set.schemas.size() >= 3);
    CHECK(set.route("fleet/acme/vehicle/v1/telemetry")->id == "vehicle-telemetry");
    CHECK(set.route("health/wearable/u1/vitals")->id == "wearable-health");
    CHECK(set.route("home/h1/presence/kitchen")->id == "home-presence");
    CHECK(set.needs_pseudonym_key());
}
