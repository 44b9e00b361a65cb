#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>

#include "gdpr/classifier.hpp"
#include "gdpr/errors.hpp"
#include "gdpr/schema_changes.hpp"
#include "test_support.hpp"

namespace {

gdpr::schema_set one_schema(const std::string& json) {
    gdpr::schema_set set;
    set.schemas.push_back(test_support::make_schema(json));
    for (const auto& t : set.schemas[0].topics) set.router.add(t, 0);
    return set;
}

// purposes.json for test_support::test_purposes().
const char* TEST_PURPOSES_FILE =
    R"({"purposes":{"ops":{"lawfulBasis":"contract"},"analytics":{"lawfulBasis":"consent"}}})";

const char* SCHEMA = R"({"id":"s","version":4,"topics":["dev/+/data"],"residency":"eu",
  "fields":{"/name":{"category":"c","personal":true,"purpose":"ops","action":"drop"},"/v":{"category":"m","personal":false}}})";

} // namespace

TEST_CASE("classify passes, rewrites or refuses", "[classifier]") {
    gdpr::classifier c(one_schema(SCHEMA), gdpr::unmatched_policy::pass, nullptr);
    auto v = c.classify("dev/1/data", R"({"v":1})");
    CHECK(v.action == gdpr::publish_action::pass);
    REQUIRE(v.matched != nullptr);
    CHECK(v.matched->tag() == "s@4");
    v = c.classify("dev/1/data", R"({"v":1,"name":"Ann"})");
    CHECK(v.action == gdpr::publish_action::replace);
    CHECK(c.filtered() == R"({"v":1})");
    v = c.classify("dev/1/data", "{oops");
    CHECK(v.action == gdpr::publish_action::deny);
    CHECK(v.reason == "not valid JSON");
    v = c.classify("dev/1/data", "");
    CHECK(v.action == gdpr::publish_action::pass);
    v = c.classify("other", "anything");
    CHECK(v.action == gdpr::publish_action::pass);
    CHECK(v.matched == nullptr);
    const auto& st = c.stats();
    CHECK(st.messages == 5);
    CHECK(st.classified == 4);
    CHECK(st.unmatched == 1);
    CHECK(st.refused_invalid == 1);
    CHECK(st.fields_dropped == 1);
}

TEST_CASE("unmatched topics can be refused", "[classifier]") {
    gdpr::classifier c(one_schema(SCHEMA), gdpr::unmatched_policy::deny, nullptr);
    CHECK(c.classify("other", "x").action == gdpr::publish_action::deny);
    CHECK(c.stats().refused_unmatched == 1);
    CHECK(c.classify_will("other", "x").action == gdpr::publish_action::deny);
}

TEST_CASE("wills that would need filtering are refused", "[classifier]") {
    gdpr::classifier c(one_schema(SCHEMA), gdpr::unmatched_policy::pass, nullptr);
    CHECK(c.classify_will("dev/1/data", R"({"v":"offline"})").action != gdpr::publish_action::deny);
    CHECK(c.classify_will("dev/1/data", R"({"v":"offline","name":"Ann"})").action == gdpr::publish_action::deny);
    CHECK(c.classify_will("dev/1/data", "offline").action == gdpr::publish_action::deny);
    CHECK(c.classify_will("dev/1/data", "").action != gdpr::publish_action::deny);
    CHECK(c.classify_will("elsewhere", "offline").action != gdpr::publish_action::deny);
    CHECK(c.stats().wills_refused == 2);
}

TEST_CASE("classify_will gives the reason, the fields it would change and the subjects, for the audit trail",
          "[classifier][recording]") {
    gdpr::classifier c(one_schema(R"({"id":"s","version":4,"topics":["dev/+/data"],"subject":{"field":"/id"},
      "fields":{"/id":{"category":"identifier","personal":true,"purpose":"ops","action":"keep"},
                "/name":{"category":"c","personal":true,"purpose":"ops","action":"drop"},
                "/v":{"category":"m","personal":false}}})"),
                       gdpr::unmatched_policy::pass, nullptr);
    c.keep_details(true);
    auto v = c.classify_will("dev/1/data", R"({"id":"u-1","v":"offline","name":"Ann"})");
    CHECK(v.action == gdpr::publish_action::deny);
    CHECK(v.reason == "a will cannot be rewritten, and classification would remove or change fields");
    REQUIRE(c.last_outcomes().size() == 1);
    CHECK(c.last_outcomes()[0].what == gdpr::field_outcome::kind::dropped);
    CHECK(c.last_subjects() == std::vector<std::string>{"u-1"});
    v = c.classify_will("dev/1/data", "{oops");
    CHECK(v.reason == "not valid JSON");
    v = c.classify_will("dev/1/data", R"({"id":"u-2","v":"offline"})");
    CHECK(v.action == gdpr::publish_action::pass);
    CHECK(c.last_outcomes().empty());
    CHECK(c.last_subjects() == std::vector<std::string>{"u-2"});
    CHECK(c.stats().wills_refused == 2);
    CHECK(c.stats().messages == 0);  // wills are not counted as publishes
}

TEST_CASE("loading requires the key when a schema pseudonymises", "[classifier][config]") {
    std::vector<std::string> lines;
    gdpr::logger log([&](gdpr::log_level, std::string_view l) { lines.emplace_back(l); });
    gdpr::plugin_options o;
    o.schemas_dir = std::string(GDPR_SOURCE_DIR) + "/schemas";
    o.purposes_file = o.schemas_dir + "/purposes.json";
    CHECK_THROWS_WITH(gdpr::classifier::load(o, log), Catch::Contains("pseudonym_key_file"));
    test_support::temp_dir dir;
    o.pseudonym_key_file = dir.write("k", std::string(32, 'z'));
    ::chmod(o.pseudonym_key_file.c_str(), 0600);
    auto c = gdpr::classifier::load(o, log);
    REQUIRE(c);
    REQUIRE_FALSE(lines.empty());
    CHECK_THAT(lines[0], Catch::StartsWith("gdpr: loaded "));
}

TEST_CASE("loggable topics hide a subject taken from a topic level", "[classifier][logging]") {
    gdpr::classifier c(one_schema(R"({"id":"w","version":1,"topics":["health/+/vitals","health/+/vitals/#"],
        "subject":{"topicLevel":1},"fields":{}})"), gdpr::unmatched_policy::pass, nullptr);
    CHECK(c.loggable_topic("health/u-4711/vitals") == "health/<subject>/vitals");
    CHECK(c.loggable_topic("health/u-4711/vitals/extra") == "health/<subject>/vitals/extra");
    CHECK(c.loggable_topic("other/u-4711") == "other/u-4711");
    // A shared subscription's filter: the group stays, the filter after it is hidden as any other.
    CHECK(c.loggable_topic("$share/team/health/u-4711/vitals") == "$share/team/health/<subject>/vitals");
    CHECK(c.loggable_topic("$share/team") == "$share/team");
    gdpr::classifier plain(one_schema(SCHEMA), gdpr::unmatched_policy::pass, nullptr);
    CHECK(plain.loggable_topic("dev/7/data") == "dev/7/data");
}

namespace {

// Purposes "ops" (contract) and "analytics" (consent); subject "A" has consented to analytics.
struct consent_fixture {
    gdpr::purpose_registry reg = [] {
        gdpr::purpose_registry r;
        r.add({"ops", gdpr::lawful_basis::contract, ""});
        r.add({"analytics", gdpr::lawful_basis::consent, ""});
        return r;
    }();
    test_support::temp_dir dir;
    std::unique_ptr<gdpr::consent_store> store = gdpr::consent_store::open((dir.path() / "gdpr.db").string(), reg);

    consent_fixture() {
        store->set_consent("A", "analytics", true, "op", "", nullptr);
        settle();
    }
    void settle() {
        store->wait_idle();
        store->drain();
    }
    // Schema "s" on dev/+/data: /id (ops, `id_action`), /loc (analytics), /v (not personal).
    gdpr::schema_set schema_of(const std::string& subject, const std::string& id_action = "keep") const {
        gdpr::schema_set set;
        set.schemas.push_back(gdpr::parse_schema(R"({"id":"s","version":1,"topics":["dev/+/data"],)" + subject + R"(,
          "fields":{"/id":{"category":"i","personal":true,"purpose":"ops","action":")" + id_action + R"("},
                    "/loc":{"category":"l","personal":true,"purpose":"analytics","action":"keep"},
                    "/v":{"category":"m","personal":false}}})", "inline.json", reg));
        set.router.add("dev/+/data", 0);
        return set;
    }
};

} // namespace

TEST_CASE_METHOD(consent_fixture, "consent decides per subject, resolved as the schema declares", "[classifier][consent]") {

    SECTION("payload field") {
        gdpr::classifier c(schema_of(R"("subject":{"field":"/id"})"), gdpr::unmatched_policy::pass, nullptr);
        c.attach_consent(store.get());
        CHECK(c.classify("dev/1/data", R"({"id":"A","loc":1})").action == gdpr::publish_action::pass);
        auto v = c.classify("dev/1/data", R"({"id":"B","loc":1})");
        CHECK(c.filtered() == R"({"id":"B"})");
        CHECK(v.filter.no_consent == 1);
        v = c.classify("dev/1/data", R"({"loc":1})");  // no subject: no consent
        CHECK(c.filtered() == "{}");
        CHECK(c.stats().no_subject == 1);
        store->set_consent("A", "analytics", false, "op", "", nullptr);  // withdrawal: next message
        c.classify("dev/1/data", R"({"id":"A","loc":1})");
        CHECK(c.filtered() == R"({"id":"A"})");
    }
    SECTION("topic level") {
        gdpr::classifier c(schema_of(R"("subject":{"topicLevel":1})"), gdpr::unmatched_policy::pass, nullptr);
        c.attach_consent(store.get());
        CHECK(c.classify("dev/A/data", R"({"loc":1})").action == gdpr::publish_action::pass);
        CHECK(c.classify("dev/B/data", R"({"loc":1})").action == gdpr::publish_action::replace);
    }
    SECTION("device binding: every bound subject must consent") {
        gdpr::classifier c(schema_of(R"("subject":{"binding":"client"})"), gdpr::unmatched_policy::pass, nullptr);
        c.attach_consent(store.get());
        CHECK(c.classify("dev/1/data", R"({"loc":1})", "sensor").action == gdpr::publish_action::replace);  // unbound
        store->bind("sensor", "A", "op", nullptr);
        settle();
        CHECK(c.classify("dev/1/data", R"({"loc":1})", "sensor").action == gdpr::publish_action::pass);
        store->bind("sensor", "B", "op", nullptr);
        settle();
        CHECK(c.classify("dev/1/data", R"({"loc":1})", "sensor").action == gdpr::publish_action::replace);
        store->set_consent("B", "analytics", true, "op", "", nullptr);
        settle();
        CHECK(c.classify("dev/1/data", R"({"loc":1})", "sensor").action == gdpr::publish_action::pass);
    }
    SECTION("without a consent store nobody has consented") {
        gdpr::classifier c(schema_of(R"("subject":{"field":"/id"})"), gdpr::unmatched_policy::pass, nullptr);
        CHECK(c.classify("dev/1/data", R"({"id":"A","loc":1})").action == gdpr::publish_action::replace);
    }
    store->wait_idle();
}

TEST_CASE("a schema reload loads a directory beside the schemas in use and swaps them in one step",
          "[classifier][schema]") {
    test_support::temp_dir dir;
    dir.write("s.json", SCHEMA);
    const std::string purposes = dir.write("purposes.json", TEST_PURPOSES_FILE);
    gdpr::classifier c(gdpr::load_schema_directory(dir.path().string(), test_support::test_purposes()),
                       gdpr::unmatched_policy::pass, nullptr, test_support::test_purposes());
    CHECK(c.classify("dev/1/data", R"({"name":"Ann","v":1})").matched->tag() == "s@4");

    dir.write("s.json", std::string(SCHEMA).replace(std::string(SCHEMA).find("\"version\":4"), 11, "\"version\":5"));
    dir.write("t.json", R"({"id":"t","version":1,"topics":["other/#"],"fields":{}})");
    gdpr::classifier::definitions next = c.load_definitions(purposes, dir.path().string());
    CHECK(c.classify("dev/1/data", R"({"v":1})").matched->tag() == "s@4");  // loading changes nothing yet
    const auto changes = gdpr::compare_schema_sets(c.schemas(), next.schemas);
    CHECK(changes.added == std::vector<std::string>{"t@1"});
    CHECK(changes.new_versions == std::vector<std::string>{"s@4 -> s@5"});
    CHECK(changes.removed.empty());
    CHECK(changes.schemas == 2);
    CHECK(changes.topic_filters == 2);
    CHECK_FALSE(gdpr::compare_purposes(c.purposes(), next.purposes).any());
    c.replace_definitions(std::move(next));
    CHECK(c.classify("dev/1/data", R"({"v":1})").matched->tag() == "s@5");
    CHECK(c.classify("other/x", "{}").matched->tag() == "t@1");

    // The same version with other content is told apart; a removed file is reported.
    dir.write("t.json", R"({"id":"t","version":1,"topics":["other/#", "more/#"],"fields":{}})");
    std::filesystem::remove(dir.path() / "s.json");
    const auto edited = gdpr::compare_schema_sets(c.schemas(), c.load_definitions(purposes, dir.path().string()).schemas);
    CHECK(edited.edited_unversioned == std::vector<std::string>{"t@1"});
    CHECK(edited.removed == std::vector<std::string>{"s@5"});

    // Pseudonymisation needs the key the broker started with: without one the reload is refused.
    dir.write("p.json", R"({"id":"p","version":1,"topics":["p/#"],
        "fields":{"/id":{"category":"c","personal":true,"purpose":"ops","action":"pseudonymise"}}})");
    CHECK_THROWS_WITH(c.load_definitions(purposes, dir.path().string()),
                      Catch::Contains("pseudonym_key_file") && Catch::Contains("restart the broker"));
    // A broken file is refused naming it.
    std::filesystem::remove(dir.path() / "p.json");
    dir.write("q.json", "{");
    CHECK_THROWS_WITH(c.load_definitions(purposes, dir.path().string()), Catch::Contains("q.json"));
    CHECK(c.classify("dev/1/data", R"({"v":1})").matched->tag() == "s@5");
}

TEST_CASE("a reload reads purposes.json again: new purposes, lawful bases and consent bits come with the schemas",
          "[classifier][schema][consent]") {
    test_support::temp_dir dir;
    const std::string purposes = dir.write("purposes.json", TEST_PURPOSES_FILE);
    gdpr::classifier c(gdpr::schema_set{}, gdpr::unmatched_policy::pass, nullptr, test_support::test_purposes());
    // A schema naming a purpose purposes.json does not declare is refused, naming it.
    dir.write("m.json", R"({"id":"m","version":1,"topics":["m/#"],"subject":{"field":"/id"},
        "fields":{"/id":{"category":"c","personal":true,"purpose":"ops","action":"keep"},
                  "/ad":{"category":"c","personal":true,"purpose":"marketing","action":"keep"}}})");
    CHECK_THROWS_WITH(c.load_definitions(purposes, dir.path().string()),
                      Catch::Contains("m.json") && Catch::Contains("marketing"));
    // Declared with the schema, it loads; "ads" sorts before "analytics", so the bits move.
    dir.write("purposes.json", R"({"purposes":{"ops":{"lawfulBasis":"legitimate_interests"},
        "analytics":{"lawfulBasis":"consent"},"ads":{"lawfulBasis":"consent"},"marketing":{"lawfulBasis":"consent"}}})");
    auto next = c.load_definitions(purposes, dir.path().string());
    CHECK(c.purposes().find("marketing") == nullptr);  // loading changes nothing yet
    const auto changes = gdpr::compare_purposes(c.purposes(), next.purposes);
    CHECK(changes.added == std::vector<std::string>{"ads (consent)", "marketing (consent)"});
    CHECK(changes.basis_changed == std::vector<std::string>{"ops: contract -> legitimate_interests"});
    CHECK(changes.leaving_consent.empty());
    CHECK(changes.removed.empty());
    c.replace_definitions(std::move(next));
    CHECK(c.purposes().consent_bit("ads") == 0);
    CHECK(c.purposes().consent_bit("analytics") == 1);
    CHECK(c.purposes().consent_bit("marketing") == 2);
    for (const auto& rule : c.schemas().schemas.at(0).fields)
        CHECK(rule.consent_bit == (rule.pointer == "/ad" ? 2 : -1));

    // A purpose leaving consent, and one removed, are told apart.
    dir.write("purposes.json", R"({"purposes":{"ops":{"lawfulBasis":"legitimate_interests"},
        "analytics":{"lawfulBasis":"legitimate_interests"},"marketing":{"lawfulBasis":"consent"}}})");
    const auto leaving = gdpr::compare_purposes(c.purposes(), c.load_definitions(purposes, dir.path().string()).purposes);
    CHECK(leaving.removed == std::vector<std::string>{"ads"});
    CHECK(leaving.basis_changed == std::vector<std::string>{"analytics: consent -> legitimate_interests"});
    CHECK(leaving.leaving_consent == std::vector<std::string>{"analytics"});
    // A rule that needed consent and no longer does is named, whatever the reason.
    CHECK(gdpr::compare_schema_sets(c.schemas(), c.load_definitions(purposes, dir.path().string()).schemas)
              .fields_leaving_consent.empty());  // analytics left consent, but /ad serves marketing
    dir.write("m.json", R"({"id":"m","version":2,"topics":["m/#"],"subject":{"field":"/id"},
        "fields":{"/id":{"category":"c","personal":true,"purpose":"ops","action":"keep"},
                  "/ad":{"category":"c","personal":false}}})");
    CHECK(gdpr::compare_schema_sets(c.schemas(), c.load_definitions(purposes, dir.path().string()).schemas)
              .fields_leaving_consent == std::vector<std::string>{"m /ad (marketing -> not personal)"});
    dir.write("m.json", R"({"id":"m","version":2,"topics":["m/#"],"subject":{"field":"/id"},
        "fields":{"/id":{"category":"c","personal":true,"purpose":"ops","action":"keep"},
                  "/ad":{"category":"c","personal":true,"purpose":"ops","action":"keep"}}})");
    CHECK(gdpr::compare_schema_sets(c.schemas(), c.load_definitions(purposes, dir.path().string()).schemas)
              .fields_leaving_consent == std::vector<std::string>{"m /ad (marketing -> ops)"});
    // Gone from a schema that keeps unclassified fields: it passes as it is. Where they are dropped, it does not.
    dir.write("m.json", R"({"id":"m","version":2,"topics":["m/#"],"subject":{"field":"/id"},"unclassified":"keep",
        "fields":{"/id":{"category":"c","personal":true,"purpose":"ops","action":"keep"}}})");
    CHECK(gdpr::compare_schema_sets(c.schemas(), c.load_definitions(purposes, dir.path().string()).schemas)
              .fields_leaving_consent == std::vector<std::string>{"m /ad (marketing -> unclassified, kept)"});
    dir.write("m.json", R"({"id":"m","version":2,"topics":["m/#"],"subject":{"field":"/id"},
        "fields":{"/id":{"category":"c","personal":true,"purpose":"ops","action":"keep"}}})");
    CHECK(gdpr::compare_schema_sets(c.schemas(), c.load_definitions(purposes, dir.path().string()).schemas)
              .fields_leaving_consent.empty());
    // A broken purposes.json is refused naming it.
    dir.write("purposes.json", R"({"purposes":{"ops":{"lawfulBasis":"whim"}}})");
    CHECK_THROWS_WITH(c.load_definitions(purposes, dir.path().string()),
                      Catch::Contains("purposes.json") && Catch::Contains("whim"));
}

TEST_CASE_METHOD(consent_fixture, "a stored message is checked against today's consent, its subject found as the schema allows",
                 "[classifier][consent]") {
    SECTION("subject field kept") {
        gdpr::classifier c(schema_of(R"("subject":{"field":"/id"})", "keep"), gdpr::unmatched_policy::pass, nullptr);
        c.attach_consent(store.get());
        CHECK_FALSE(c.pseudonymises_consent_subject());
        const std::string stored = R"({"id":"A","loc":1,"v":2})";
        CHECK(c.recheck_stored("dev/1/data", stored).outcome == gdpr::stored_consent::still_given);
        store->set_consent("A", "analytics", false, "op", "", nullptr);
        const auto check = c.recheck_stored("dev/1/data", stored);
        CHECK(check.outcome == gdpr::stored_consent::withdrawn);
        CHECK(check.fields_withdrawn == 1);
        CHECK(c.rechecked() == R"({"id":"A","v":2})");
        CHECK(c.stats().stored_withdrawn == 0);  // counted by the caller, per refused delivery
        c.count_stored_refusal(check.outcome);
        CHECK(c.stats().stored_withdrawn == 1);
        // Not JSON: nothing vouches for its consent-based fields.
        CHECK(c.recheck_stored("dev/1/data", "{\"id\":").outcome == gdpr::stored_consent::unreadable);
        // Another topic, or an empty (clearing) payload: nothing to check.
        CHECK(c.recheck_stored("other", stored).outcome == gdpr::stored_consent::not_checked);
        CHECK(c.recheck_stored("dev/1/data", "").outcome == gdpr::stored_consent::not_checked);
    }
    SECTION("subject field under a pseudonymise rule on its enclosing object: removed, so not in the stored copy") {
        auto ps = std::make_unique<gdpr::pseudonymiser>(std::string(32, 'k'));
        gdpr::classifier c(schema_of(R"("subject":{"field":"/id/num"})", "pseudonymise"), gdpr::unmatched_policy::pass,
                           std::move(ps));
        c.attach_consent(store.get());
        CHECK_FALSE(c.pseudonymises_consent_subject());
        const auto v = c.classify("dev/1/data", R"({"id":{"num":"A"},"loc":1,"v":2})", "dev-1");
        REQUIRE(v.action == gdpr::publish_action::replace);
        const std::string stored = c.filtered();
        CHECK(stored == R"({"loc":1,"v":2})");  // pseudonymise cannot take an object: removed
        // The stored copy names no subject: its consent-based fields are not taken for withdrawn.
        CHECK(c.recheck_stored("dev/1/data", stored).outcome == gdpr::stored_consent::not_checked);
    }
    SECTION("subject field pseudonymised: found through the consent store's pseudonym index") {
        auto ps = std::make_unique<gdpr::pseudonymiser>(std::string(32, 'k'));
        const std::string pseudonym_a = ps->pseudonym("A");
        gdpr::classifier c(schema_of(R"("subject":{"field":"/id"})", "pseudonymise"), gdpr::unmatched_policy::pass,
                           std::move(ps));
        c.attach_consent(store.get());
        CHECK(c.pseudonymises_consent_subject());
        REQUIRE(c.classify("dev/1/data", R"({"id":"A","loc":1})").action == gdpr::publish_action::replace);
        const std::string stored = c.filtered();
        REQUIRE(stored == R"({"id":")" + pseudonym_a + R"(","loc":1})");
        // Without the index the pseudonym names nobody: fail closed.
        CHECK(c.recheck_stored("dev/1/data", stored).outcome == gdpr::stored_consent::withdrawn);
        store->index_pseudonyms([&c](std::string_view s) { return c.pseudonym_of(s); });
        CHECK(store->indexes_pseudonyms());
        CHECK(c.recheck_stored("dev/1/data", stored).outcome == gdpr::stored_consent::still_given);
        store->set_consent("A", "analytics", false, "op", "", nullptr);
        CHECK(store->granted_mask_by_pseudonym(pseudonym_a) == 0);
        CHECK(c.recheck_stored("dev/1/data", stored).outcome == gdpr::stored_consent::withdrawn);
        CHECK(c.rechecked() == R"({"id":")" + pseudonym_a + R"("})");
        // A grant after indexing is found too, once durable.
        store->set_consent("A", "analytics", true, "op", "", nullptr);
        settle();
        CHECK(store->granted_mask_by_pseudonym(pseudonym_a) == 1);
        CHECK(c.recheck_stored("dev/1/data", stored).outcome == gdpr::stored_consent::still_given);
    }
    SECTION("topic level") {
        gdpr::classifier c(schema_of(R"("subject":{"topicLevel":1})", "keep"), gdpr::unmatched_policy::pass, nullptr);
        c.attach_consent(store.get());
        CHECK(c.recheck_stored("dev/A/data", R"({"loc":1})").outcome == gdpr::stored_consent::still_given);
        CHECK(c.recheck_stored("dev/B/data", R"({"loc":1})").outcome == gdpr::stored_consent::withdrawn);
        CHECK(c.rechecked() == "{}");
    }
    SECTION("subjects the stored message cannot tell are not checked") {
        gdpr::classifier dropped(schema_of(R"("subject":{"field":"/id"})", "drop"), gdpr::unmatched_policy::pass, nullptr);
        dropped.attach_consent(store.get());
        CHECK(dropped.recheck_stored("dev/1/data", R"({"loc":1})").outcome == gdpr::stored_consent::not_checked);
        gdpr::classifier bound(schema_of(R"("subject":{"binding":"client"})", "keep"), gdpr::unmatched_policy::pass, nullptr);
        bound.attach_consent(store.get());
        CHECK(bound.recheck_stored("dev/1/data", R"({"loc":1})").outcome == gdpr::stored_consent::not_checked);
    }
}

namespace {

gdpr::classifier::definitions definitions_of(const std::vector<std::string>& schemas) {
    gdpr::classifier::definitions d;
    d.purposes = test_support::test_purposes();
    for (const auto& json : schemas) {
        d.schemas.schemas.push_back(test_support::make_schema(json));
        for (const auto& t : d.schemas.schemas.back().topics)
            d.schemas.router.add(t, static_cast<std::int32_t>(d.schemas.schemas.size() - 1));
    }
    return d;
}

// Version `version` of schema "r" on dev/+/data with the given rules for /name, /lat and /uid.
std::string reloaded_schema(int version, const std::string& unclassified, const std::string& name,
                            const std::string& lat, const std::string& uid) {
    return R"({"id":"r","version":)" + std::to_string(version) + R"(,"topics":["dev/+/data"],"unclassified":")" +
           unclassified + R"(","fields":{"/v":{"category":"m","personal":false},)" +
           R"("/name":{"category":"c","personal":true,"purpose":"ops",)" + name + "}," +
           R"("/lat":{"category":"l","personal":true,"purpose":"ops",)" + lat + "}," +
           R"("/uid":{"category":"i","personal":true,"purpose":"ops",)" + uid + "}}}";
}

} // namespace

TEST_CASE("after a reload, stored messages are filtered again by the rules in use", "[classifier][schema]") {
    const std::string keep_all = reloaded_schema(1, "keep", R"("action":"keep")", R"("action":"keep")", R"("action":"keep")");
    const std::string tightened = reloaded_schema(2, "drop", R"("action":"drop")", R"("action":"generalise","decimals":2)",
                                                  R"("action":"pseudonymise")");
    const std::string stored_v1 = R"({"name":"Ann","lat":48.137154,"extra":1,"v":2,"uid":"u-1"})";
    gdpr::classifier c(definitions_of({keep_all}).schemas, gdpr::unmatched_policy::pass,
                       std::make_unique<gdpr::pseudonymiser>(std::string(32, 'k')), test_support::test_purposes());
    // No reload yet: a stored message is what these rules made, and none rests on consent.
    CHECK_FALSE(c.schemas_replaced());
    CHECK(c.recheck_stored("dev/1/data", stored_v1).outcome == gdpr::stored_consent::not_checked);
    // A reload that changes no rule changes nothing for stored messages either.
    c.replace_definitions(definitions_of({keep_all}));
    CHECK_FALSE(c.schemas_replaced());

    c.replace_definitions(definitions_of({tightened}));
    REQUIRE(c.schemas_replaced());
    auto check = c.recheck_stored("dev/1/data", stored_v1);
    CHECK(check.outcome == gdpr::stored_consent::reclassified);
    REQUIRE(check.matched);
    CHECK(check.matched->tag() == "r@2");
    // The id kept in clear before is not a pseudonym: it does not go out (nor does a pseudonym made now).
    CHECK(c.rechecked() == R"({"lat":48.14,"v":2})");
    // A copy made under the rules in use holds the pseudonym: it goes out as it is.
    REQUIRE(c.classify("dev/1/data", stored_v1).action == gdpr::publish_action::replace);
    const std::string stored_v2 = c.filtered();
    CHECK(stored_v2.find(c.pseudonym_of("u-1")) != std::string::npos);
    CHECK(c.recheck_stored("dev/1/data", stored_v2).outcome == gdpr::stored_consent::still_given);
    CHECK(c.recheck_stored("dev/1/data", R"({"lat":48.14,"v":2})").outcome == gdpr::stored_consent::still_given);
    // The broker keeps a message the filter did not change as it was published, spaces and all.
    CHECK(c.recheck_stored("dev/1/data", "{ \"lat\": 48.14,\n  \"v\" : 2 }").outcome == gdpr::stored_consent::still_given);
    CHECK(c.recheck_stored("dev/1/data", "{ \"lat\": 48.14, \"x\": 1 }").outcome == gdpr::stored_consent::reclassified);
    CHECK(c.rechecked() == R"({"lat":48.14})");
    CHECK(c.recheck_stored("dev/1/data", "not json").outcome == gdpr::stored_consent::unreadable);
    CHECK(c.recheck_stored("elsewhere", "not json").outcome == gdpr::stored_consent::not_checked);
    CHECK(c.recheck_stored("dev/1/data", "").outcome == gdpr::stored_consent::not_checked);
}

TEST_CASE("a stored pseudonym stays as it is when the rules around it change", "[classifier][schema]") {
    const std::string v2 = reloaded_schema(2, "drop", R"("action":"drop")", R"("action":"generalise","decimals":2)",
                                           R"("action":"pseudonymise")");
    const std::string v3 = reloaded_schema(3, "drop", R"("action":"mask")", R"("action":"generalise","decimals":1)",
                                           R"("action":"pseudonymise")");
    gdpr::classifier c(definitions_of({v2}).schemas, gdpr::unmatched_policy::pass,
                       std::make_unique<gdpr::pseudonymiser>(std::string(32, 'k')), test_support::test_purposes());
    REQUIRE(c.classify("dev/1/data", R"({"name":"Ann","lat":48.137154,"v":2,"uid":"u-1"})").action ==
            gdpr::publish_action::replace);
    const std::string stored = c.filtered();
    c.replace_definitions(definitions_of({v3}));
    const auto check = c.recheck_stored("dev/1/data", stored);
    CHECK(check.outcome == gdpr::stored_consent::reclassified);
    CHECK(c.rechecked() == R"({"lat":48.1,"v":2,"uid":")" + c.pseudonym_of("u-1") + R"("})");
}

TEST_CASE("after a reload leaves a topic to no schema, its stored messages follow the unmatched policy",
          "[classifier][schema]") {
    const std::string v1 = reloaded_schema(1, "keep", R"("action":"keep")", R"("action":"keep")", R"("action":"keep")");
    const std::string other = R"({"id":"o","version":1,"topics":["other/#"],"fields":{}})";
    for (const auto policy : {gdpr::unmatched_policy::deny, gdpr::unmatched_policy::pass}) {
        gdpr::classifier c(definitions_of({v1, other}).schemas, policy, nullptr, test_support::test_purposes());
        c.replace_definitions(definitions_of({other}));
        const auto check = c.recheck_stored("dev/1/data", R"({"name":"Ann"})");
        CHECK(check.matched == nullptr);
        CHECK(check.outcome == (policy == gdpr::unmatched_policy::deny ? gdpr::stored_consent::unmatched
                                                                       : gdpr::stored_consent::not_checked));
        CHECK(c.loggable_topic("dev/u-7/data") == "dev/u-7/data");  // no schema named a subject there
        // A topic whose schema the reload left as it was is not checked again, nor one no schema ever had.
        CHECK(c.recheck_stored("other/x", R"({"a":1})").outcome == gdpr::stored_consent::not_checked);
        CHECK(c.recheck_stored("nowhere/x", R"({"a":1})").outcome == gdpr::stored_consent::not_checked);
    }
}

TEST_CASE("after a reload, consent that a stored message of device-bound subjects was not checked for counts as not given",
          "[classifier][schema][consent]") {
    const auto bound = [](int version, const std::string& hr_purpose) {
        return R"({"id":"b","version":)" + std::to_string(version) +
               R"(,"topics":["band/+"],"subject":{"binding":"client"},"unclassified":"keep","fields":{)"
               R"("/hr":{"category":"h","personal":true,"purpose":")" + hr_purpose + R"(","action":"keep"},)"
               R"("/steps":{"category":"h","personal":true,"purpose":"analytics","action":"keep"},)"
               R"("/all/*":{"category":"h","personal":true,"purpose":"analytics","action":"keep"},)"
               R"("/all/first":{"category":"h","personal":true,"purpose":")" + hr_purpose + R"(","action":"keep"}}})";
    };
    gdpr::classifier c(definitions_of({bound(1, "ops")}).schemas, gdpr::unmatched_policy::pass, nullptr,
                       test_support::test_purposes());
    c.replace_definitions(definitions_of({bound(2, "analytics")}));
    // /steps rested on consent before too: checked at publish. /hr did not: unknown, so dropped.
    // Under "/all/*" one member rested on another purpose before: the rule cannot vouch for any.
    const auto check = c.recheck_stored("band/1", R"({"hr":70,"steps":5,"all":{"first":1,"second":2},"x":1})");
    CHECK(check.outcome == gdpr::stored_consent::reclassified);
    CHECK(check.fields_withdrawn == 3);
    CHECK(c.rechecked() == R"({"steps":5,"all":{},"x":1})");
}

TEST_CASE("a topic that named its subject keeps the level hidden in logs after a reload hands it elsewhere",
          "[classifier][schema]") {
    const std::string named = R"({"id":"w","version":1,"topics":["band/+/vitals"],"subject":{"topicLevel":1},"fields":{}})";
    const std::string plain = R"({"id":"o","version":1,"topics":["band/#"],"fields":{}})";
    gdpr::classifier c(definitions_of({named, plain}).schemas, gdpr::unmatched_policy::pass, nullptr,
                       test_support::test_purposes());
    CHECK(c.loggable_topic("band/u-41/vitals") == "band/<subject>/vitals");
    c.replace_definitions(definitions_of({plain}));
    CHECK(c.loggable_topic("band/u-41/vitals") == "band/<subject>/vitals");
    CHECK(c.loggable_topic("band/u-41/other") == "band/u-41/other");
}

TEST_CASE("after a reload, consent checked at publish stands where stored messages cannot name their subject",
          "[classifier][schema][consent]") {
    // The subject field is dropped before delivery: a stored message does not say whose it is.
    const auto dropped_subject = [](int version, const std::string& extra) {
        return R"({"id":"d","version":)" + std::to_string(version) +
               R"(,"topics":["d/+"],"subject":{"field":"/id"},"fields":{)"
               R"("/id":{"category":"i","personal":true,"purpose":"ops","action":"drop"},)"
               R"("/loc":{"category":"l","personal":true,"purpose":"analytics","action":"keep"})" + extra + "}}";
    };
    gdpr::classifier c(definitions_of({dropped_subject(1, "")}).schemas, gdpr::unmatched_policy::pass, nullptr,
                       test_support::test_purposes());
    c.replace_definitions(definitions_of({dropped_subject(2, R"(,"/v":{"category":"m","personal":false})")}));
    CHECK(c.recheck_stored("d/1", R"({"loc":1,"v":2})").outcome == gdpr::stored_consent::still_given);
    CHECK(c.recheck_stored("d/1", R"({"loc":1,"w":2})").outcome == gdpr::stored_consent::reclassified);
    CHECK(c.rechecked() == R"({"loc":1})");
}

TEST_CASE("a reload that only moves a purpose to consent counts as other rules for stored messages",
          "[classifier][schema][consent]") {
    const std::string bound = R"({"id":"b","version":1,"topics":["band/+"],"subject":{"binding":"client"},"fields":{
        "/hr":{"category":"h","personal":true,"purpose":"ops","action":"keep"}}})";
    gdpr::purpose_registry consent_ops;
    consent_ops.add({"ops", gdpr::lawful_basis::consent, ""});
    consent_ops.add({"analytics", gdpr::lawful_basis::consent, ""});
    gdpr::classifier c(definitions_of({bound}).schemas, gdpr::unmatched_policy::pass, nullptr, test_support::test_purposes());
    gdpr::classifier::definitions next;
    next.purposes = consent_ops;
    next.schemas.schemas.push_back(gdpr::parse_schema(bound, "b.json", consent_ops));
    next.schemas.router.add("band/+", 0);
    c.replace_definitions(std::move(next));
    REQUIRE(c.schemas_replaced());
    // Published when /hr needed no consent: nobody checked it.
    CHECK(c.recheck_stored("band/1", R"({"hr":70})").outcome == gdpr::stored_consent::reclassified);
    CHECK(c.rechecked() == "{}");
}

TEST_CASE("after a reload, a null member under a rule that drops it does not keep its key",
          "[classifier][schema]") {
    const std::string open = R"({"id":"n","version":1,"topics":["n/+"],"unclassified":"keep","fields":{}})";
    const std::string closed = R"({"id":"n","version":2,"topics":["n/+"],"unclassified":"keep","fields":{
        "/contacts/*":{"category":"c","personal":true,"purpose":"ops","action":"drop"}}})";
    gdpr::classifier c(definitions_of({open}).schemas, gdpr::unmatched_policy::pass, nullptr, test_support::test_purposes());
    c.replace_definitions(definitions_of({closed}));
    CHECK(c.recheck_stored("n/1", R"({"contacts":{"Ann Smith":null},"v":1})").outcome == gdpr::stored_consent::reclassified);
    CHECK(c.rechecked() == R"({"contacts":{},"v":1})");
    CHECK(c.recheck_stored("n/1", R"({"list":[null,1],"v":1})").outcome == gdpr::stored_consent::still_given);
}

TEST_CASE("past the schema sets kept, every stored message on a classified topic is filtered again",
          "[classifier][schema]") {
    const auto version = [](int v) {
        return R"({"id":"f","version":)" + std::to_string(v) + R"(,"topics":["f/+"],"unclassified":"drop","fields":{
            "/v":{"category":"m","personal":false}}})";
    };
    gdpr::classifier c(definitions_of({version(1)}).schemas, gdpr::unmatched_policy::deny, nullptr,
                       test_support::test_purposes());
    for (int v = 2; v <= 18; ++v) c.replace_definitions(definitions_of({version(v)}));
    // Version 1 is forgotten: it may have had other rules for any topic.
    CHECK(c.recheck_stored("f/1", R"({"v":1,"x":2})").outcome == gdpr::stored_consent::reclassified);
    CHECK(c.recheck_stored("f/1", R"({"v":1})").outcome == gdpr::stored_consent::still_given);
    CHECK(c.recheck_stored("g/1", R"({"v":1})").outcome == gdpr::stored_consent::unmatched);
    CHECK(c.recheck_stored("$SYS/broker/uptime", "12 seconds").outcome == gdpr::stored_consent::not_checked);
}

TEST_CASE("a null stays null under a rule that pseudonymises, also when a stored message is filtered again",
          "[classifier][schema]") {
    const auto version = [](int v) {
        return R"({"id":"p","version":)" + std::to_string(v) + R"(,"topics":["p/+"],"fields":{
            "/id":{"category":"i","personal":true,"purpose":"ops","action":"pseudonymise"},
            "/v":{"category":"m","personal":false}}})";
    };
    gdpr::classifier c(definitions_of({version(1)}).schemas, gdpr::unmatched_policy::pass,
                       std::make_unique<gdpr::pseudonymiser>(std::string(32, 'k')), test_support::test_purposes());
    REQUIRE(c.classify("p/1", R"({"id":null,"v":1})").action != gdpr::publish_action::deny);
    c.replace_definitions(definitions_of({version(2)}));
    CHECK(c.recheck_stored("p/1", R"({"id":null,"v":1})").outcome == gdpr::stored_consent::still_given);
}

TEST_CASE_METHOD(consent_fixture, "a subject field under a rule on an enclosing value is governed by that rule",
                 "[classifier][consent]") {
    const std::string enclosed = R"({"id":"e","version":1,"topics":["e/+"],"subject":{"field":"/user/id"},
        "unclassified":"keep","fields":{
        "/user":{"category":"i","personal":true,"purpose":"ops","action":"drop"},
        "/loc":{"category":"l","personal":true,"purpose":"analytics","action":"keep"}}})";
    gdpr::classifier c(definitions_of({enclosed}).schemas, gdpr::unmatched_policy::pass, nullptr, test_support::test_purposes());
    c.attach_consent(store.get());
    // The subject never reaches a stored message: it is not checked again (as for device bindings).
    CHECK(c.recheck_stored("e/1", R"({"loc":1})").outcome == gdpr::stored_consent::not_checked);
}
