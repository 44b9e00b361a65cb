#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include "gdpr/schema_changes.hpp"
#include "test_support.hpp"

namespace {

// Schemas with a consent-gated GPS field, as one directory per set.
gdpr::purpose_registry purposes() {
    auto registry = test_support::test_purposes();
    registry.add({"marketing", gdpr::lawful_basis::consent, ""});
    return registry;
}

gdpr::schema_set load_set(const std::map<std::string, std::string>& files) {
    test_support::temp_dir dir;
    for (const auto& [name, text] : files) dir.write(name, text);
    return gdpr::load_schema_directory(dir.path().string(), purposes());
}

std::string schema(const std::string& id, const std::string& topics, const std::string& gps_rule,
                   const std::string& unclassified = "drop") {
    std::string fields = R"("/id":{"category":"id","personal":true,"purpose":"ops","action":"keep"})";
    if (!gps_rule.empty()) fields += R"(,"/gps":)" + gps_rule;
    return R"({"id":")" + id + R"(","version":1,"topics":[)" + topics + R"(],"unclassified":")" + unclassified +
           R"(","fields":{)" + fields + "}}";
}

const std::string GPS_CONSENT = R"({"category":"location","personal":true,"purpose":"analytics","action":"keep"})";
const std::string GPS_OPS = R"({"category":"location","personal":true,"purpose":"ops","action":"keep"})";
const std::string GPS_NOT_PERSONAL = R"({"category":"location","personal":false})";

std::vector<std::string> leaving(const gdpr::schema_set& before, const gdpr::schema_set& after,
                                 gdpr::unmatched_policy unmatched = gdpr::unmatched_policy::pass) {
    return gdpr::compare_schema_sets(before, after, unmatched).fields_leaving_consent;
}

using list = std::vector<std::string>;

} // namespace

TEST_CASE("a topic taken over by another schema is compared field by field", "[schema][consent]") {
    const auto before = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)}});

    SECTION("a new, more specific filter where the field is not personal") {
        const auto after = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                     {"n.json", schema("n", R"("m/special/#")", GPS_NOT_PERSONAL)}});
        CHECK(leaving(before, after) == list{"m /gps (analytics -> n: not personal) on m/special/#"});
    }
    SECTION("a new filter whose schema keeps what it does not classify") {
        const auto after = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                     {"n.json", schema("n", R"("m/+/live")", "", "keep")}});
        CHECK(leaving(before, after) == list{"m /gps (analytics -> n: unclassified, kept) on m/+/live"});
    }
    SECTION("nothing leaves where the new schema gates the field by consent too, or drops it") {
        CHECK(leaving(before, load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                        {"n.json", schema("n", R"("m/special/#")", GPS_CONSENT)}}))
                  .empty());
        CHECK(leaving(before, load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                        {"n.json", schema("n", R"("m/special/#")", "")}}))
                  .empty());
    }
    SECTION("a broader new filter loses to the old one and takes nothing") {
        CHECK(leaving(before, load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                        {"n.json", schema("n", R"("#")", "", "keep")}}))
                  .empty());
    }
    SECTION("a filter moved to another schema") {
        const auto two = load_set({{"m.json", schema("m", R"("m/#","x/+/data")", GPS_CONSENT)}});
        const auto after = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                     {"n.json", schema("n", R"("x/+/data")", GPS_OPS)}});
        CHECK(leaving(two, after) == list{"m /gps (analytics -> n: ops) on x/+/data"});
    }
    SECTION("a filter dropped or narrowed: its topics pass unclassified, unless unmatched topics are refused") {
        const auto two = load_set({{"m.json", schema("m", R"("m/#","x/#")", GPS_CONSENT)}});
        const auto after = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)}});
        CHECK(leaving(two, after) == list{"m /gps (analytics -> no schema, passed) on x/#"});
        CHECK(leaving(two, after, gdpr::unmatched_policy::deny).empty());
        const auto narrowed = load_set({{"m.json", schema("m", R"("m/+/data")", GPS_CONSENT)}});
        CHECK(leaving(before, narrowed) == list{"m /gps (analytics -> no schema, passed) on m/#"});
    }
    SECTION("a removed schema: its topics matching nothing is the removal; another schema taking them is not") {
        const auto removed = gdpr::compare_schema_sets(before, load_set({}));
        CHECK(removed.removed == list{"m@1"});
        CHECK(removed.fields_leaving_consent.empty());
        const auto renamed = load_set({{"m2.json", schema("m2", R"("m/#")", GPS_NOT_PERSONAL)}});
        CHECK(leaving(before, renamed) == list{"m /gps (analytics -> m2: not personal) on m/#"});
    }
    SECTION("each field is named once per schema it goes to") {
        const auto after = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                     {"n.json", schema("n", R"("m/a/#","m/b/#")", GPS_OPS)}});
        CHECK(leaving(before, after) == list{"m /gps (analytics -> n: ops) on m/a/#"});
    }
    SECTION("a filter that names the level an example topic would use for any other level") {
        // m/x goes to n now; an example m/~ would still go to m.
        const auto plus = load_set({{"m.json", schema("m", R"("m/+")", GPS_CONSENT)}});
        const auto after = load_set({{"m.json", schema("m", R"("m/~")", GPS_CONSENT)},
                                     {"n.json", schema("n", R"("m/+")", "", "keep")}});
        CHECK(leaving(plus, after) == list{"m /gps (analytics -> n: unclassified, kept) on m/+"});
    }
    SECTION("topics deeper than a '#' example's first level") {
        // m/a/b matches no schema now.
        const auto shallow = load_set({{"m.json", schema("m", R"("m","m/+")", GPS_CONSENT)}});
        CHECK(leaving(before, shallow) == list{"m /gps (analytics -> no schema, passed) on m/#"});
        // Only m/a/b/c and deeper go to n: m/+/+ is more specific on m/a/b, m/+/# on m/a/b/c.
        const auto deep = load_set({{"m.json", schema("m", R"("m/#","m/+","m/+/+")", GPS_CONSENT)},
                                    {"n.json", schema("n", R"("m/+/#")", GPS_OPS)}});
        CHECK(leaving(before, deep) == list{"m /gps (analytics -> n: ops) on m/+/#"});
    }
    SECTION("consent to another purpose does not stand in for the one given (GDPR Art. 7)") {
        const std::string GPS_MARKETING = R"({"category":"location","personal":true,"purpose":"marketing","action":"keep"})";
        CHECK(leaving(before, load_set({{"m.json", schema("m", R"("m/#")", GPS_MARKETING)}})) ==
              list{"m /gps (analytics -> marketing (consent))"});
        CHECK(leaving(before, load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                        {"n.json", schema("n", R"("m/n/#")", GPS_MARKETING)}})) ==
              list{"m /gps (analytics -> n: marketing (consent)) on m/n/#"});
    }
}

TEST_CASE("a field is looked up in the new schema as the payload filter finds its rule", "[schema][consent]") {
    const auto before = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)}});
    const auto with_fields = [](const std::string& fields, const std::string& unclassified = "drop") {
        return load_set({{"m.json", R"({"id":"m","version":2,"topics":["m/#"],"unclassified":")" + unclassified +
                                        R"(","fields":{)" + fields + "}}"}});
    };
    const std::string ID = R"("/id":{"category":"id","personal":true,"purpose":"ops","action":"keep"})";
    // A "*" rule covers /gps.
    CHECK(leaving(before, with_fields(ID + R"(,"/*":{"category":"c","personal":true,"purpose":"ops","action":"keep"})"))
          == list{"m /gps (analytics -> ops)"});
    // Rules inside /gps: one of them passes without consent.
    CHECK(leaving(before, with_fields(ID + R"(,"/gps/lat":{"category":"c","personal":true,"purpose":"analytics","action":"keep"},
                                                 "/gps/lon":{"category":"c","personal":false})"))
          == list{"m /gps (analytics -> not personal)"});
    // All of them consent-gated, and what they do not name dropped: nothing leaves; kept: it does.
    const std::string INSIDE = ID + R"(,"/gps/lat":{"category":"c","personal":true,"purpose":"analytics","action":"keep"})";
    CHECK(leaving(before, with_fields(INSIDE)).empty());
    CHECK(leaving(before, with_fields(INSIDE, "keep")) == list{"m /gps (analytics -> unclassified, kept)"});
    // "*" rules are copied into their literal siblings: /gps/lat is not personal here.
    CHECK(leaving(before, with_fields(ID + R"(,"/gps/lon":{"category":"c","personal":true,"purpose":"analytics","action":"keep"},
                                                 "/*/lat":{"category":"c","personal":false})")) ==
          list{"m /gps (analytics -> not personal)"});
    CHECK(leaving(before, with_fields(ID + R"(,"/*/lat":{"category":"c","personal":true,"purpose":"analytics","action":"keep"},
                                                 "/*/lon":{"category":"c","personal":false})")) ==
          list{"m /gps (analytics -> not personal)"});
    // A "*" in the old pointer stands for every member, those the new rules name included.
    const auto every = load_set({{"m.json", R"({"id":"m","version":1,"topics":["m/#"],"fields":{)" + ID +
                                                R"(,"/*/lat":)" + GPS_CONSENT + "}}"}});
    CHECK(leaving(every, with_fields(ID + R"(,"/*/lat":)" + GPS_CONSENT + R"(,"/home/lat":)" + GPS_NOT_PERSONAL)) ==
          list{"m /*/lat (analytics -> not personal)"});
    const auto items = load_set({{"m.json", R"({"id":"m","version":1,"topics":["m/#"],"fields":{)" + ID +
                                                R"(,"/items/*":)" + GPS_CONSENT + "}}"}});
    CHECK(leaving(items, with_fields(ID + R"(,"/items/0":)" + GPS_NOT_PERSONAL)) ==
          list{"m /items/* (analytics -> not personal)"});
    CHECK(leaving(items, with_fields(ID + R"(,"/items/0":)" + GPS_CONSENT)).empty());  // the rest is dropped
    CHECK(leaving(items, with_fields(ID + R"(,"/items/0":)" + GPS_CONSENT, "keep")) ==
          list{"m /items/* (analytics -> unclassified, kept)"});
    // A rule on the enclosing value governs a field that was classified alone.
    const auto inner = load_set({{"m.json", R"({"id":"m","version":1,"topics":["m/#"],"fields":{)" + ID +
                                                R"(,"/gps/lat":)" + GPS_CONSENT + "}}"}});
    CHECK(leaving(inner, with_fields(ID + R"(,"/gps":)" + GPS_OPS)) == list{"m /gps/lat (analytics -> ops)"});
}

TEST_CASE("a reload that changes nothing leaves no field without consent", "[schema][consent]") {
    SECTION("schemas where an exact rule overrides a consent \"*\" rule") {
        const auto overriding = [](const std::string& id) {
            return load_set({{id + ".json", R"({"id":")" + id + R"(","version":1,"topics":["m/#"],"fields":{
                "/r/*/x":{"category":"c","personal":true,"purpose":"analytics","action":"keep"},
                "/r/0/x":{"category":"c","personal":true,"purpose":"ops","action":"keep"},
                "/*/lat":{"category":"c","personal":true,"purpose":"analytics","action":"keep"},
                "/home":{"category":"c","personal":true,"purpose":"ops","action":"keep"}}})"}});
        };
        const auto set = overriding("m");
        CHECK(leaving(set, set).empty());
        // Renamed with the same rules: the topics go to a schema that gates the same fields alike.
        CHECK(leaving(set, overriding("n")).empty());
    }
    SECTION("the shipped example schemas") {
        const std::string dir = std::string(GDPR_SOURCE_DIR) + "/schemas";
        const auto purposes = gdpr::load_purposes(dir + "/purposes.json");
        const auto set = gdpr::load_schema_directory(dir, purposes);
        REQUIRE(set.schemas.size() >= 5);
        CHECK(gdpr::compare_schema_sets(set, set).fields_leaving_consent.empty());
    }
}

TEST_CASE("where topics go is decided by every filter in use, '$' topics and dropped values included",
          "[schema][consent]") {
    // p, more specific, holds m/special/... and keeps what it does not classify.
    const auto two = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                               {"p.json", schema("p", R"("m/special/#")", GPS_CONSENT, "keep")}});
    CHECK(leaving(two, two).empty());
    // p's own edit is reported once, as p's.
    const auto edited = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)},
                                  {"p.json", schema("p", R"("m/special/#")", GPS_NOT_PERSONAL, "keep")}});
    CHECK(leaving(two, edited) == list{"p /gps (analytics -> not personal)"});

    // A filter starting with a wildcard never takes a '$' topic; a more specific '$' filter does.
    const auto shadow = load_set({{"m.json", schema("m", R"("$aws/things/+/shadow")", GPS_CONSENT)}});
    CHECK(leaving(shadow, load_set({{"m.json", schema("m", R"("$aws/things/+/shadow")", GPS_CONSENT)},
                                    {"n.json", schema("n", R"("#","+/things/#")", "", "keep")}}))
              .empty());
    CHECK(leaving(shadow, load_set({{"m.json", schema("m", R"("$aws/things/+/shadow")", GPS_CONSENT)},
                                    {"n.json", schema("n", R"("$aws/things/t1/#")", "", "keep")}})) ==
          list{"m /gps (analytics -> n: unclassified, kept) on $aws/things/t1/shadow"});

    // A value the new rule drops or masks passes nothing.
    const auto before = load_set({{"m.json", schema("m", R"("m/#")", GPS_CONSENT)}});
    for (const std::string action : {"drop", "mask"}) {
        INFO(action);
        const auto after = load_set({{"m.json", schema("m", R"("m/#")",
                                                       R"({"category":"l","personal":true,"purpose":"ops","action":")" +
                                                           action + "\"}")}});
        CHECK(leaving(before, after).empty());
    }
}
