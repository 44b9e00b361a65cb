#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "gdpr/classifier.hpp"
#include "gdpr/errors.hpp"
#include "gdpr/residency.hpp"
#include "gdpr/residency_guard.hpp"
#include "test_support.hpp"

namespace {

const char* TELEMETRY = R"({"id":"telemetry","version":2,"topics":["fleet/+/telemetry"],"residency":"eu",
  "fields":{"/driver":{"category":"identifier","personal":true,"purpose":"ops","action":"keep"},
            "/lat":{"category":"location","personal":true,"purpose":"ops","action":"generalise","decimals":1},
            "/phone":{"category":"contact","personal":true,"purpose":"ops","action":"mask"},
            "/route":{"category":"location","personal":true,"purpose":"analytics","action":"keep"},
            "/speed":{"category":"telemetry","personal":false}}})";
const char* STATUS = R"({"id":"status","version":1,"topics":["fleet/+/status"],"residency":"eu",
  "fields":{"/fuel":{"category":"telemetry","personal":false}}})";
const char* US_DATA = R"({"id":"us-orders","version":1,"topics":["orders/#"],"residency":"us",
  "fields":{"/customer":{"category":"identifier","personal":true,"purpose":"ops","action":"keep"}}})";

gdpr::schema_set schemas() {
    gdpr::schema_set set;
    for (const char* text : {TELEMETRY, STATUS, US_DATA}) set.schemas.push_back(test_support::make_schema(text));
    for (std::size_t i = 0; i < set.schemas.size(); ++i)
        for (const auto& t : set.schemas[i].topics) set.router.add(t, static_cast<std::int32_t>(i));
    return set;
}

const char* RULES = R"({
  "regions": ["eu", "ch", "us"],
  "transfers": { "eu": ["ch"], "us": ["eu", "ch"] },
  "defaultRegion": "eu",
  "clients": [
    { "clientId": "us-*", "region": "us" },
    { "username": "zurich-?", "region": "ch" },
    { "address": "10.20.0.0/16", "region": "us" },
    { "address": "fd00:1::/32", "region": "ch" },
    { "certCn": "*.us.example.org", "username": "ops", "region": "us" }
  ],
  "bridges": [ { "name": "to-us", "region": "us", "topics": ["fleet/+/status", "fleet/#"] } ]
})";

gdpr::client_identity who(std::string_view id, std::string_view user = "", std::string_view address = "",
                          std::string_view cn = "") {
    return {id, user, address, cn};
}

std::string load_error(const std::string& text, const gdpr::schema_set& set) {
    try {
        gdpr::residency_rules::from_json_text(text, set);
    } catch (const gdpr::config_error& e) {
        CHECK(e.option() == "residency_file");
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("the transfer table: own region, listed regions, nothing else", "[residency]") {
    const auto set = schemas();
    const auto r = gdpr::residency_rules::from_json_text(RULES, set);
    const auto eu = r.region_index("eu"), ch = r.region_index("ch"), us = r.region_index("us");
    REQUIRE(r.region_count() == 3);
    CHECK(r.may_receive(eu, eu));
    CHECK(r.may_receive(eu, ch));
    CHECK_FALSE(r.may_receive(eu, us));
    CHECK_FALSE(r.may_receive(ch, eu));  // transfers are not symmetric
    CHECK(r.may_receive(us, eu));
    CHECK(r.may_receive(us, us));
    CHECK_FALSE(r.may_receive(eu, gdpr::residency_rules::NO_REGION));  // a receiver without a region gets nothing
    CHECK(r.may_receive(gdpr::residency_rules::NO_REGION, us));      // data without residency goes anywhere
    CHECK(r.residency_of(set.schemas[0]) == eu);
    CHECK(r.residency_of(set.schemas[2]) == us);
}

TEST_CASE("clients are placed by the first matching rule, else the default region", "[residency]") {
    const auto set = schemas();
    const auto r = gdpr::residency_rules::from_json_text(RULES, set);
    const auto eu = r.region_index("eu"), ch = r.region_index("ch"), us = r.region_index("us");
    CHECK(r.place(who("us-dashboard")) == us);
    CHECK(r.place(who("eu-dashboard")) == eu);
    CHECK(r.place(who("x", "zurich-1")) == ch);
    CHECK(r.place(who("x", "zurich-12")) == eu);  // '?' is one character
    CHECK(r.place(who("x", "", "10.20.3.4")) == us);
    CHECK(r.place(who("x", "", "::ffff:10.20.3.4")) == us);  // a dual-stack listener's form
    CHECK(r.place(who("x", "", "10.21.3.4")) == eu);
    CHECK(r.place(who("x", "", "fd00:1:2::5")) == ch);
    CHECK(r.place(who("x", "", "fd00:2::5")) == eu);
    CHECK(r.place(who("x", "", "not an address")) == eu);
    // Every criterion of a rule must match.
    CHECK(r.place(who("x", "ops", "", "box.us.example.org")) == us);
    CHECK(r.place(who("x", "dev", "", "box.us.example.org")) == eu);
    CHECK(r.place(who("x", "ops", "", "box.eu.example.org")) == eu);
}

TEST_CASE("a null default region places unmatched clients nowhere: they receive no resident data", "[residency]") {
    const auto set = schemas();
    const auto r = gdpr::residency_rules::from_json_text(
        R"({"regions":["eu","us"],"transfers":{"us":["eu"]},"defaultRegion":null,
            "clients":[{"clientId":"eu-*","region":"eu"},{"clientId":"us-*","region":"us"}]})",
        set);
    const auto eu = r.region_index("eu"), us = r.region_index("us");
    CHECK(r.place(who("eu-dashboard")) == eu);
    CHECK(r.place(who("truck-7")) == gdpr::residency_rules::NO_REGION);
    CHECK_FALSE(r.may_receive(eu, r.place(who("truck-7"))));
    CHECK_FALSE(r.may_receive(us, r.place(who("truck-7"))));
    CHECK(r.may_receive(gdpr::residency_rules::NO_REGION, r.place(who("truck-7"))));  // data no region holds
    // A reload that gives them a region widens where resident data may go.
    auto next = gdpr::residency_rules::from_json_text(
        R"({"regions":["eu","us"],"transfers":{"us":["eu"]},"defaultRegion":"eu",
            "clients":[{"clientId":"eu-*","region":"eu"},{"clientId":"us-*","region":"us"}]})",
        set);
    const auto changes = next.carry_over(r, set, set);
    CHECK(changes.default_region == "(none) -> eu");
    CHECK(std::any_of(changes.widened.begin(), changes.widened.end(),
                      [](const std::string& w) { return w.find("defaultRegion") != std::string::npos; }));
}

TEST_CASE("a bridge to a region that may not receive the data blocks its topics", "[residency]") {
    const auto set = schemas();
    const auto r = gdpr::residency_rules::from_json_text(RULES, set);
    const auto& telemetry = set.schemas[0];
    const auto& us_orders = set.schemas[2];
    const auto* b = r.blocking_bridge("fleet/acme/telemetry", telemetry);
    REQUIRE(b);
    CHECK(b->name == "to-us");
    CHECK(b->refusal_reason == "residency: bridge to-us would carry resident personal data to us");
    CHECK(r.blocking_bridge("elsewhere/acme", telemetry) == nullptr);    // no bridge pattern matches
    CHECK(r.blocking_bridge("orders/1", us_orders) == nullptr);          // not carried, and us data may go to us
    gdpr::schema unknown = test_support::make_schema(TELEMETRY);         // not among the loaded schemas
    CHECK(r.blocking_bridge("fleet/acme/telemetry", unknown) == nullptr);
    const auto lint = r.lint(set);
    REQUIRE(lint.size() == 1);  // telemetry (personal) via fleet/#; status has no personal fields
    CHECK(lint[0].find("bridge to-us (to us) topic \"fleet/#\" can carry eu-resident personal data of schema "
                       "telemetry@2") != std::string::npos);
}

TEST_CASE("bad residency files are refused naming the problem", "[residency]") {
    const auto set = schemas();
    CHECK_THAT(load_error("{", set), Catch::Contains("not valid JSON"));
    CHECK_THAT(load_error("[]", set), Catch::Contains("must be an object"));
    CHECK_THAT(load_error(R"({"regions":["eu"],"defaultRegion":"eu","clients":[{"clientId":"us-*","region":"eu","region":"us"}]})", set),
               Catch::Contains("the key \"region\" appears twice"));
    CHECK_THAT(load_error(R"({"regions":["eu"],"defaultRegion":"eu","x":1e999})", set), Catch::Contains("number out of range"));
    CHECK_THAT(load_error(R"({"regions":[],"defaultRegion":"eu"})", set), Catch::Contains("\"regions\" must be a non-empty"));
    CHECK_THAT(load_error(R"({"regions":["eu","us"]})", set), Catch::Contains("\"defaultRegion\" is required"));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"mars"})", set),
               Catch::Contains("defaultRegion: \"mars\" is not one of \"regions\""));
    CHECK_THAT(load_error(R"({"regions":["eu","EU"],"defaultRegion":"eu"})", set), Catch::Contains("must match"));
    CHECK_THAT(load_error(R"({"regions":["eu","eu"],"defaultRegion":"eu"})", set), Catch::Contains("listed twice"));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","extra":1})", set),
               Catch::Contains("unknown key \"extra\""));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","transfers":{"eu":["jp"]}})", set),
               Catch::Contains("transfers.eu[]: \"jp\" is not one of \"regions\""));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","clients":[{"listener":1884,"region":"us"}]})", set),
               Catch::Contains("does not tell plugins which listener"));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","clients":[{"region":"us"}]})", set),
               Catch::Contains("names no criterion"));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","clients":[{"address":"10.0.0.0/33","region":"us"}]})", set),
               Catch::Contains("prefix length must be 0-32"));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","clients":[{"address":"10.0.0","region":"us"}]})", set),
               Catch::Contains("is not an IPv4 or IPv6 address"));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","bridges":[{"name":"b","region":"us","topics":["a/#/b"]}]})", set),
               Catch::Contains("bridges[0].topics: \"a/#/b\""));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","bridges":[{"name":"b"}]})", set),
               Catch::Contains("\"region\" is required"));
    CHECK_THAT(load_error(R"({"regions":["eu"],"defaultRegion":"eu"})", set),
               Catch::Contains("schema us-orders@1 (inline.json) declares residency \"us\", which is not one of \"regions\""));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","brokerConfig":"/nonexistent/m.conf"})", set),
               Catch::Contains("/nonexistent/m.conf: does not exist"));
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","brokerConfig":"/tmp"})", set),
               Catch::Contains("/tmp: is not a regular file"));
    // A shared subscription's group prefix would match no topic a schema covers: it would guard nothing.
    CHECK_THAT(load_error(R"({"regions":["eu","us"],"defaultRegion":"eu","bridges":[{"name":"b","region":"us","topics":["$share/g/fleet/#"]}]})", set),
               Catch::Contains("without \"$share/<group>/\""));
}

TEST_CASE("a brokerConfig that configures no bridge is noted: it may be the wrong file", "[residency]") {
    const auto set = schemas();
    test_support::temp_dir dir;
    dir.write("mosquitto.conf", "listener 1883\n");
    const auto r = gdpr::residency_rules::from_json_text(R"({"regions":["eu","us"],"defaultRegion":"eu","brokerConfig":"mosquitto.conf"})",
                                                         set, "residency.json", dir.path().string());
    const auto lint = r.lint(set);
    CHECK(std::any_of(lint.begin(), lint.end(), [](const std::string& l) { return l.find("configures no bridge") != std::string::npos; }));
}

TEST_CASE("bridge sections of mosquitto.conf: outbound topics with their local prefixes", "[residency]") {
    test_support::temp_dir dir;
    std::filesystem::create_directories(dir.path() / "conf.d");
    dir.write("conf.d/20-backup.conf", "connection backup\naddress 127.0.0.1:1\ntopic # out 1 \"\" backup/\n");
    dir.write("conf.d/ignored.txt", "connection not-read\ntopic x out\n");
    const auto bridges = gdpr::parse_bridge_config(
        "listener 1883\n# connection commented\n"
        "connection to-us\naddress 127.0.0.1:1884\n"
        "topic fleet/+/status out 0\n"
        "  topic orders/# both 1 local/ remote/\n"
        "topic commands/# in 1\n"
        "topic \"\" out 0 site/a/status\n"
        "topic telemetry/#\r\n"
        "include_dir conf.d\n",
        "m.conf", dir.path().string());
    REQUIRE(bridges.size() == 2);
    CHECK(bridges[0].name == "to-us");
    CHECK(bridges[0].location == "m.conf:3");
    CHECK(bridges[0].outbound_topics ==
          std::vector<std::string>{"fleet/+/status", "local/orders/#", "site/a/status", "telemetry/#"});
    CHECK(bridges[1].name == "backup");
    CHECK(bridges[1].outbound_topics == std::vector<std::string>{"#"});

    // A bridge's lines stay in its file: a topic after include_dir is still the parent's bridge's,
    // and an included file cannot add topics to a bridge it did not open.
    dir.write("conf.d/10-b.conf", "connection b\ntopic b/# OUT\n");
    const auto scoped = gdpr::parse_bridge_config("connection a\ninclude_dir conf.d\ntopic a/# out\n\"\" x\n", "s.conf",
                                                  dir.path().string());
    REQUIRE(scoped.size() == 3);
    CHECK(scoped[0].outbound_topics == std::vector<std::string>{"a/#"});
    CHECK(scoped[1].outbound_topics == std::vector<std::string>{"b/#"});  // direction in capitals
    std::filesystem::create_directories(dir.path() / "orphan.d");
    dir.write("orphan.d/x.conf", "topic stray/# out\n");
    CHECK_THROWS_WITH(gdpr::parse_bridge_config("connection a\ninclude_dir orphan.d\n", "o.conf", dir.path().string()),
                      Catch::Contains("x.conf:1: topic line outside a bridge connection"));

    // Comments after the direction end the line, as in Mosquitto: no local prefix is read from them.
    const auto commented = gdpr::parse_bridge_config("connection c\n"
                                                     "topic home/# out # presence for the partner\n"
                                                     "topic a/# out 1 # note\n"
                                                     "topic x/# both 0 \"\" remote/ # c\n"
                                                     "topic $share/g/fleet/# out\n",
                                                     "c.conf", dir.path().string());
    REQUIRE(commented.size() == 1);
    CHECK(commented[0].outbound_topics == std::vector<std::string>{"home/#", "a/#", "x/#", "fleet/#"});
    // Mosquitto follows include_dir in its main file only, and takes the rest of the line as the path.
    std::filesystem::create_directories(dir.path() / "with space.d" / "nested.d");
    dir.write("with space.d/a.conf", "connection spaced\ntopic s/# out\ninclude_dir nested.d\n");
    dir.write("with space.d/nested.d/n.conf", "connection nested\ntopic n/# out\n");
    const auto spaced = gdpr::parse_bridge_config("include_dir  with space.d \n", "sp.conf", dir.path().string());
    REQUIRE(spaced.size() == 1);
    CHECK(spaced[0].name == "spaced");

    auto error = [](const std::string& text) {
        try {
            gdpr::parse_bridge_config(text, "bad.conf", ".");
        } catch (const gdpr::config_error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    CHECK_THAT(error("topic a out\n"), Catch::Contains("bad.conf:1: topic line outside a bridge connection"));
    CHECK_THAT(error("connection b\ntopic a sideways\n"), Catch::Contains("bad.conf:2: topic direction \"sideways\""));
    CHECK_THAT(error("connection b\ntopic a/#/c out\n"), Catch::Contains("bad.conf:2: topic \"a/#/c\""));
    CHECK_THAT(error("connection b\ntopic $share/g out\n"), Catch::Contains("needs a group and a filter"));
}

TEST_CASE("bridges read from the broker's configuration take their regions from the residency file", "[residency]") {
    const auto set = schemas();
    test_support::temp_dir dir;
    dir.write("mosquitto.conf", "connection to-us\ntopic fleet/+/status out\nconnection mystery\ntopic fleet/# out\n");
    const auto r = gdpr::residency_rules::from_json_text(
        R"({"regions":["eu","us"],"defaultRegion":"eu","brokerConfig":"mosquitto.conf",
            "bridges":[{"name":"to-us","region":"us","topics":["extra/#"]}]})",
        set, "residency.json", dir.path().string());
    REQUIRE(r.bridges().size() == 2);
    const auto& to_us = r.bridges()[0];
    CHECK(to_us.region == r.region_index("us"));
    CHECK(to_us.topics == std::vector<std::string>{"fleet/+/status", "extra/#"});
    CHECK_THAT(to_us.declared_in, Catch::EndsWith("mosquitto.conf:1"));
    const auto& mystery = r.bridges()[1];
    CHECK(mystery.region == gdpr::residency_rules::NO_REGION);
    // An undeclared bridge may carry no resident data anywhere, even data of the region it might be in.
    CHECK(r.blocking_bridge("fleet/a/telemetry", set.schemas[0]) == &mystery);
    CHECK(r.blocking_bridge("fleet/a/status", set.schemas[1]) == &to_us);
    const auto lint = r.lint(set);
    CHECK(std::any_of(lint.begin(), lint.end(), [](const std::string& l) {
        return l.find("bridge mystery") != std::string::npos && l.find("has no region") != std::string::npos;
    }));

    // A bridge declared in the file but absent from the broker's configuration is probably misspelt.
    const auto typo = gdpr::residency_rules::from_json_text(
        R"({"regions":["eu","us"],"defaultRegion":"eu","brokerConfig":"mosquitto.conf",
            "bridges":[{"name":"to-usa","region":"us"}]})",
        set, "residency.json", dir.path().string());
    const auto typo_lint = typo.lint(set);
    CHECK(std::any_of(typo_lint.begin(), typo_lint.end(), [](const std::string& l) {
        return l.find("bridge to-usa is declared in residency.json but has no connection section") != std::string::npos;
    }));
    const auto misspelt = [](const std::vector<std::string>& lines) {
        return std::count_if(lines.begin(), lines.end(),
                             [](const std::string& l) { return l.find("no connection section") != std::string::npos; });
    };
    // The residency file reloaded over `running`, declaring one bridge to us.
    const auto reload = [&](const gdpr::residency_rules& running, const std::string& bridge, const std::string& config) {
        auto next = gdpr::residency_rules::from_json_text(
            R"({"regions":["eu","us"],"defaultRegion":"eu","brokerConfig":")" + config +
                R"(","bridges":[{"name":")" + bridge + R"(","region":"us"}]})",
            set, "residency.json", dir.path().string(), true);
        next.carry_over(running, set, set);
        return next;
    };
    // A reload reports the files as they are now: the name put right, the note goes ...
    const auto fixed = reload(typo, "to-us", "mosquitto.conf");
    CHECK(misspelt(fixed.lint(set)) == 0);
    // ... and a name misspelt by the reload is noted.
    REQUIRE(misspelt(r.lint(set)) == 0);
    const auto typo_again = reload(r, "to-usa", "mosquitto.conf");
    CHECK(misspelt(typo_again.lint(set)) == 1);
    // The broker's configuration unreadable at the reload: what was known of it stays.
    CHECK(misspelt(reload(typo_again, "to-usa", "gone.conf").lint(set)) == 1);
}

TEST_CASE("the guard places each connection once and counts refusals per region pair", "[residency]") {
    const auto set = schemas();
    gdpr::residency_guard g(gdpr::residency_rules::from_json_text(RULES, set));
    const auto eu = g.rules().region_index("eu"), us = g.rules().region_index("us");
    int placed = 0;
    int connection = 0;
    auto region = [&](std::string_view id, std::string_view user = "") {
        return g.region_of(&connection, id, user, "127.0.0.1", [&] {
            ++placed;
            return who(id, user);
        });
    };
    CHECK(region("us-1") == us);
    CHECK(region("us-1") == us);
    CHECK(placed == 1);
    CHECK(region("eu-1") == eu);  // the broker reused the connection's memory for another client
    CHECK(placed == 2);
    CHECK(region("eu-1", "zurich-1") == g.rules().region_index("ch"));  // same id, another login
    CHECK(placed == 3);
    g.forget_connection(&connection);
    CHECK(region("eu-1", "zurich-1") == g.rules().region_index("ch"));
    CHECK(placed == 4);

    CHECK(g.refuse_delivery(eu, us) == "residency: eu-resident personal data may not go to region us");
    g.refuse_delivery(eu, us);
    g.refuse_bridged(eu, g.rules().bridges()[0]);
    const auto counts = g.refusals();
    REQUIRE(counts.size() == 2);
    CHECK((counts[0].from == "eu" && counts[0].to == "us" && counts[0].via == "delivery" && counts[0].count == 2));
    CHECK((counts[1].via == "bridge to-us" && counts[1].count == 1));
    CHECK(g.refusal_total() == 3);

    g.note_transfer(us, eu);
    g.note_transfer(us, eu);
    const auto transfers = g.transfers();
    REQUIRE(transfers.size() == 1);
    CHECK((transfers[0].from == "us" && transfers[0].to == "eu" && transfers[0].count == 2));

    char payload[8] = {};
    char retained[8] = {};
    g.note_publish(payload, 8, "fleet/a/telemetry", eu);
    std::int32_t r = -1;
    CHECK(g.is_known_payload(payload, 8, "fleet/a/telemetry", r));
    CHECK(r == eu);
    CHECK_FALSE(g.is_known_payload(payload, 8, "fleet/b/telemetry", r));  // same address, other topic
    CHECK_FALSE(g.is_known_payload(payload, 7, "fleet/a/telemetry", r));  // same address, other length
    g.note_reclassified(retained, 8, "fleet/a/telemetry", gdpr::residency_rules::NO_REGION);
    CHECK(g.is_known_payload(retained, 8, "fleet/a/telemetry", r));
    CHECK(r == gdpr::residency_rules::NO_REGION);
    g.forget_publish();
    CHECK_FALSE(g.is_known_payload(payload, 8, "fleet/a/telemetry", r));
    CHECK(g.is_known_payload(retained, 8, "fleet/a/telemetry", r));  // a retained message fans out
    retained[0] = 'x';  // another message now at the same address, same size and topic
    CHECK_FALSE(g.is_known_payload(retained, 8, "fleet/a/telemetry", r));
    retained[0] = 0;
    g.forget_payloads();
    CHECK_FALSE(g.is_known_payload(retained, 8, "fleet/a/telemetry", r));

    CHECK(g.note_shared_subscription("fleet/#", us).empty());
    CHECK(g.note_shared_subscription("$share/dash/fleet/#", eu).empty());
    CHECK(g.note_shared_subscription("$share/dash/fleet/+/status", us).empty());  // another group: name and filter
    CHECK_THAT(g.note_shared_subscription("$share/dash/fleet/#", us),
               Catch::Contains("shared subscription group 'dash' on 'fleet/#' has members in regions eu, us"));
    CHECK(g.note_shared_subscription("$share/dash/fleet/#", us).empty());  // warned once
    // The warning names the filter as given to show (a subject's topic level hidden).
    CHECK(g.note_shared_subscription("$share/w/home/D-1/presence", eu, "$share/w/home/<subject>/presence").empty());
    const auto warning = g.note_shared_subscription("$share/w/home/D-1/presence", us, "$share/w/home/<subject>/presence");
    CHECK_THAT(warning, Catch::Contains("group 'w' on 'home/<subject>/presence'"));
    CHECK(warning.find("D-1") == std::string::npos);
}

TEST_CASE("personal data in a delivered payload: kept, pseudonymised or generalised fields count", "[residency]") {
    gdpr::classifier c(schemas(), gdpr::unmatched_policy::pass, nullptr);
    auto v = c.classify("fleet/a/telemetry", R"({"driver":"D-1","speed":3})");
    CHECK(v.filter.personal_forwarded == 1);
    v = c.classify("fleet/a/telemetry", R"({"lat":48.13,"phone":"+49 1","speed":3})");
    CHECK(v.filter.personal_forwarded == 1);  // the generalised position; the masked phone no longer is data
    v = c.classify("fleet/a/telemetry", R"({"phone":"+49 1","route":"A9","speed":3})");
    CHECK(v.filter.personal_forwarded == 0);  // route needs consent nobody gave: dropped
    v = c.classify("fleet/a/telemetry", R"({"driver":null,"speed":3})");
    CHECK(v.filter.personal_forwarded == 0);

    CHECK(c.personal_data_in("fleet/a/telemetry", R"({"driver":"D-1"})") == &c.schemas().schemas[0]);
    CHECK(c.personal_data_in("fleet/a/telemetry", R"({"speed":3,"phone":"***"})") == nullptr);
    CHECK(c.personal_data_in("fleet/a/telemetry", "not json") == &c.schemas().schemas[0]);  // fail closed
    CHECK(c.personal_data_in("fleet/a/status", R"({"fuel":1})") == nullptr);
    CHECK(c.personal_data_in("elsewhere", R"({"driver":"D-1"})") == nullptr);
    CHECK(c.personal_data_in("fleet/a/telemetry", "") == nullptr);
}

TEST_CASE("a topic that names its subject is personal data whatever the payload holds", "[residency]") {
    gdpr::schema_set set;
    set.schemas.push_back(test_support::make_schema(R"({"id":"vitals","version":1,"topics":["health/+/vitals"],
        "residency":"eu","subject":{"topicLevel":1},
        "fields":{"/battery":{"category":"device","personal":false}}})"));
    set.schemas.push_back(test_support::make_schema(R"({"id":"logs","version":1,"topics":["logs/#"],
        "fields":{"/user":{"category":"identifier","personal":true,"purpose":"ops","action":"keep"}}})"));
    set.router.add("health/+/vitals", 0);
    set.router.add("logs/#", 1);
    const auto r = gdpr::residency_rules::from_json_text(
        R"({"regions":["eu","us"],"defaultRegion":"eu","bridges":[{"name":"b","region":"us","topics":["health/#"]}]})", set);
    gdpr::classifier c(std::move(set), gdpr::unmatched_policy::pass, nullptr);
    CHECK(c.personal_data_in("health/u-42/vitals", R"({"battery":80})") != nullptr);
    CHECK(c.personal_data_in("health/u-42/vitals", "") != nullptr);
    const auto lint = r.lint(c.schemas());
    CHECK(std::any_of(lint.begin(), lint.end(), [](const std::string& l) {
        return l.find("can carry eu-resident personal data of schema vitals@1") != std::string::npos;
    }));
    // Personal data without a declared residency goes everywhere: the lint says so.
    CHECK(std::any_of(lint.begin(), lint.end(), [](const std::string& l) {
        return l.find("schema logs@1 (inline.json) holds personal data but declares no residency") != std::string::npos;
    }));
}

TEST_CASE("the shipped example residency file loads with the shipped schemas and lints clean", "[residency]") {
    const std::string dir = std::string(GDPR_SOURCE_DIR) + "/schemas";
    const auto set = gdpr::load_schema_directory(dir, gdpr::load_purposes(dir + "/purposes.json"));
    const auto r = gdpr::residency_rules::load(std::string(GDPR_SOURCE_DIR) + "/examples/residency.json", set);
    CHECK(r.region_count() == 3);
    REQUIRE(r.bridges().size() == 1);
    CHECK(r.bridges()[0].region == r.region_index("us"));
    // The partner bridge carries only vehicle status, which holds no personal data; the lint names
    // only the example schema that declares no residency.
    const auto lint = r.lint(set);
    REQUIRE(lint.size() == 1);
    CHECK_THAT(lint[0], Catch::Contains("schema device-diagnostics@1"));
    const auto& status = *set.route("fleet/acme/vehicle/v1/status");
    const auto& telemetry = *set.route("fleet/acme/vehicle/v1/telemetry");
    CHECK(r.blocking_bridge("fleet/acme/vehicle/v1/status", status) != nullptr);  // refused only if it held personal data
    CHECK(r.blocking_bridge("fleet/acme/vehicle/v1/telemetry", telemetry) == nullptr);
    CHECK(r.place({"x", "", "", "hq.ch.example.org"}) == r.region_index("ch"));
}

TEST_CASE("rules take reloaded schemas, and a schema naming an unknown region changes nothing", "[residency][schema]") {
    const auto first = schemas();
    auto r = gdpr::residency_rules::from_json_text(RULES, first);
    // A reloaded set: other objects, telemetry now resident in ch (which us bridges may not take either).
    gdpr::schema_set next;
    next.schemas.push_back(test_support::make_schema(
        std::regex_replace(std::string(TELEMETRY), std::regex("\"residency\":\"eu\""), "\"residency\":\"ch\"")));
    next.router.add("fleet/+/telemetry", 0);
    r.bind_schemas(next);
    CHECK(r.residency_of(next.schemas[0]) == r.region_index("ch"));
    REQUIRE(r.blocking_bridge("fleet/acme/telemetry", next.schemas[0]));
    CHECK(r.residency_of(first.schemas[0]) == gdpr::residency_rules::NO_REGION);  // the old objects are unknown now

    gdpr::schema_set bad;
    bad.schemas.push_back(test_support::make_schema(
        std::regex_replace(std::string(TELEMETRY), std::regex("\"residency\":\"eu\""), "\"residency\":\"mars\"")));
    CHECK_THROWS_WITH(r.bind_schemas(bad), Catch::Contains("telemetry@2") && Catch::Contains("\"mars\""));
    CHECK(r.residency_of(next.schemas[0]) == r.region_index("ch"));  // still bound to the set in use
}

TEST_CASE("a reloaded residency file keeps the running bridges and says what changed", "[residency]") {
    const auto set = schemas();
    const auto running = gdpr::residency_rules::from_json_text(RULES, set);
    // A new region first in the list (every index moves), a transfer to it, a new placement, the
    // bridge declared to another region with one topic less, and a bridge added.
    const std::string edited = R"({
      "regions": ["uk", "eu", "ch", "us"],
      "transfers": { "eu": ["ch", "uk"], "us": ["eu", "ch"] },
      "defaultRegion": "eu",
      "clients": [ { "clientId": "us-*", "region": "us" }, { "clientId": "london-*", "region": "uk" } ],
      "bridges": [ { "name": "to-us", "region": "ch", "topics": ["fleet/#"] },
                   { "name": "to-uk", "region": "uk", "topics": ["orders/#"] } ]
    })";
    auto next = gdpr::residency_rules::from_json_text(edited, set);
    const auto changes = next.carry_over(running, set, set);
    CHECK(changes.regions_added == std::vector<std::string>{"uk"});
    CHECK(changes.regions_removed.empty());
    CHECK(changes.transfers_added == std::vector<std::string>{"eu -> uk"});
    CHECK(changes.transfers_removed.empty());
    CHECK(changes.default_region.empty());
    CHECK(changes.placements_changed);
    CHECK(changes.bridge_regions == std::vector<std::string>{"to-us: us -> ch"});
    // ch may receive eu and us data, which us could not: wider, like the new transfer. Clients of
    // the rules removed fall to the default region (eu), or to the new london-* rule if their client
    // id matches it: both receive eu data, which us could not.
    CHECK(changes.widened == std::vector<std::string>{"bridge to-us: us -> ch", "clients address 10.20.0.0/16: us -> eu",
                                                      "clients clientId london-*: us -> uk",
                                                      "clients username ops certCn *.us.example.org: us -> eu",
                                                      "transfer eu -> uk"});
    // The topic removed waits for a restart (the broker still carries it); the bridge added is
    // checked from now on.
    CHECK(changes.bridges_not_applied == std::vector<std::string>{"to-us"});
    CHECK(changes.bridges_added == std::vector<std::string>{"to-uk"});
    REQUIRE(next.bridges().size() == 2);
    CHECK(next.bridges()[1].name == "to-uk");
    CHECK(next.blocking_bridge("orders/7", set.schemas[2]) == &next.bridges()[1]);  // us data may not go to uk
    CHECK(next.bridges()[0].name == "to-us");
    CHECK(next.bridges()[0].region == next.region_index("ch"));
    CHECK(next.bridges()[0].topics == running.bridges()[0].topics);
    CHECK_THAT(next.bridges()[0].refusal_reason, Catch::Contains("to ch"));
    CHECK(next.blocking_bridge("fleet/acme/telemetry", set.schemas[0]) == nullptr);  // eu data may go to ch
    CHECK(next.may_receive(next.region_index("eu"), next.region_index("uk")));
    CHECK(next.place(who("london-1")) == next.region_index("uk"));
    // Reloaded once more, the bridges waiting for a restart are not listed again; once the files
    // hold them again, that is a change too, so a later removal is listed again.
    auto again = gdpr::residency_rules::from_json_text(edited, set);
    const auto second = again.carry_over(next, set, set);
    CHECK(second.bridges_not_applied.empty());
    CHECK_FALSE(second.any());
    auto restored = gdpr::residency_rules::from_json_text(
        std::regex_replace(edited, std::regex("\"topics\": \\[\"fleet/#\"\\]"), "\"topics\": [\"fleet/+/status\", \"fleet/#\"]"), set);
    const auto third = restored.carry_over(again, set, set);
    CHECK(third.bridges_not_applied_changed);
    CHECK(third.bridges_not_applied.empty());
    CHECK(third.any());
    auto removed_again = gdpr::residency_rules::from_json_text(edited, set);
    CHECK(removed_again.carry_over(restored, set, set).bridges_not_applied == std::vector<std::string>{"to-us"});

    // The same file again: nothing changes.
    auto same = gdpr::residency_rules::from_json_text(RULES, set);
    CHECK_FALSE(same.carry_over(running, set, set).any());
    // Unplaced clients moved to a region that may receive more, and a schema's data free to go
    // anywhere: both widen; moving unplaced clients to a narrower region does not.
    auto wide = gdpr::residency_rules::from_json_text(
        std::regex_replace(std::string(RULES), std::regex("\"defaultRegion\": \"eu\""), "\"defaultRegion\": \"ch\""), set);
    CHECK(wide.carry_over(running, set, set).widened == std::vector<std::string>{"defaultRegion eu -> ch"});
    auto us_default = gdpr::residency_rules::from_json_text(
        std::regex_replace(std::string(RULES), std::regex("\"defaultRegion\": \"eu\""), "\"defaultRegion\": \"us\""), set);
    const auto narrower = us_default.carry_over(running, set, set);
    CHECK(narrower.default_region == "eu -> us");
    CHECK(narrower.widened.empty());
    gdpr::schema_set free_set = schemas();
    free_set.schemas[0] = test_support::make_schema(
        std::regex_replace(std::string(TELEMETRY), std::regex(",\"residency\":\"eu\""), ""));
    auto unrestricted = gdpr::residency_rules::from_json_text(RULES, free_set);
    CHECK(unrestricted.carry_over(running, set, free_set).widened == std::vector<std::string>{"schema telemetry: eu -> (none)"});

    // Topics of an eu schema taken over by a new schema without residency: wider.
    gdpr::schema_set taken = schemas();
    taken.schemas.push_back(test_support::make_schema(R"({"id":"acme","version":1,"topics":["fleet/acme/telemetry"],
        "fields":{"/driver":{"category":"identifier","personal":true,"purpose":"ops","action":"keep"}}})"));
    taken.router.add("fleet/acme/telemetry", 3);
    auto with_acme = gdpr::residency_rules::from_json_text(RULES, taken);
    CHECK(with_acme.carry_over(running, set, taken).widened ==
          std::vector<std::string>{"topics fleet/acme/telemetry: telemetry (eu) -> acme (none)"});
    // A filter dropped while unmatched topics pass: wider; where they are refused, not.
    gdpr::schema_set dropped = schemas();
    dropped.schemas[0].topics = {"other/+/telemetry"};
    dropped.router = gdpr::topic_router();
    for (std::size_t i = 0; i < dropped.schemas.size(); ++i)
        for (const auto& t : dropped.schemas[i].topics) dropped.router.add(t, static_cast<std::int32_t>(i));
    auto narrowed = gdpr::residency_rules::from_json_text(RULES, dropped);
    CHECK(narrowed.carry_over(running, set, dropped).widened ==
          std::vector<std::string>{"topics fleet/+/telemetry: telemetry (eu) -> no schema"});
    auto narrowed_deny = gdpr::residency_rules::from_json_text(RULES, dropped);
    CHECK(narrowed_deny.carry_over(running, set, dropped, gdpr::unmatched_policy::deny).widened.empty());

    // A topic added to a running bridge: checked from now on, though nothing else changed.
    auto more_topics = gdpr::residency_rules::from_json_text(
        std::regex_replace(std::string(RULES), std::regex("\"fleet/#\"\\]"), "\"fleet/#\", \"orders/#\"]"), set);
    const auto topic_added = more_topics.carry_over(running, set, set);
    CHECK(topic_added.bridge_topics_added == std::vector<std::string>{"to-us: orders/#"});
    CHECK(topic_added.any());
    CHECK(more_topics.bridges()[0].topics.size() == 3);
    // A client rule placing clients where they may receive more: wider, like defaultRegion.
    auto everyone_ch = gdpr::residency_rules::from_json_text(
        std::regex_replace(std::string(RULES), std::regex("\"clients\": \\["), "\"clients\": [ { \"clientId\": \"*\", \"region\": \"ch\" },"),
        set);
    CHECK(everyone_ch.carry_over(running, set, set).widened ==
          std::vector<std::string>{"clients clientId *: eu -> ch", "clients clientId *: us -> ch"});
    const auto with_clients = [&](const std::string& clients) {
        return gdpr::residency_rules::from_json_text(
            std::regex_replace(std::string(RULES), std::regex("\"clients\": \\[[^\\]]*\\]"), "\"clients\": [" + clients + "]"), set);
    };
    const auto us_rule = R"({ "clientId": "us-*", "region": "us" })";
    const auto us_only = with_clients(us_rule);
    // The rule removed: its clients fall to the default region, which receives eu data.
    CHECK(with_clients("").carry_over(us_only, set, set).widened == std::vector<std::string>{"clients clientId us-*: us -> eu"});
    // A rule put before it that takes some of its clients elsewhere.
    CHECK(with_clients(std::string(R"({ "clientId": "us-dash*", "region": "eu" },)") + us_rule).carry_over(us_only, set, set).widened ==
          std::vector<std::string>{"clients clientId us-dash*: us -> eu"});
    // Rules that cannot take its clients, before or after it, widen nothing; nor does the same list.
    CHECK(with_clients(std::string(R"({ "clientId": "eu-sensor-*", "region": "eu" },)") + us_rule).carry_over(us_only, set, set).widened.empty());
    CHECK(with_clients(std::string(us_rule) + R"(, { "clientId": "eu-*", "region": "eu" })").carry_over(us_only, set, set).widened.empty());
    CHECK(with_clients(us_rule).carry_over(us_only, set, set).widened.empty());
    // Nor do patterns whose literal endings differ.
    const auto plant_a = R"({ "certCn": "*.plant-a.example", "region": "us" })";
    CHECK(with_clients(std::string(R"({ "certCn": "*.plant-b.example", "region": "eu" },)") + plant_a)
              .carry_over(with_clients(plant_a), set, set)
              .widened.empty());
    // Rules kept but in another order: us-* clients in 10.20/16 were placed in ch, now in us.
    const auto ch_block = R"({ "address": "10.20.0.0/16", "region": "ch" })";
    auto block_first = with_clients(std::string(ch_block) + "," + us_rule);
    CHECK(with_clients(std::string(us_rule) + "," + ch_block).carry_over(block_first, set, set).widened.empty());  // ch -> us: narrower
    CHECK(block_first.carry_over(with_clients(std::string(us_rule) + "," + ch_block), set, set).widened ==
          std::vector<std::string>{"clients address 10.20.0.0/16: us -> ch"});
    // Disjoint address blocks do not take each other's clients.
    CHECK(with_clients(std::string(R"({ "address": "10.30.0.0/16", "region": "eu" },)") + R"({ "address": "10.20.0.0/16", "region": "us" })")
              .carry_over(with_clients(R"({ "address": "10.20.0.0/16", "region": "us" })"), set, set)
              .widened.empty());

    // A running bridge's region gone: refused, naming the bridge.
    gdpr::schema_set eu_only;
    eu_only.schemas.push_back(test_support::make_schema(TELEMETRY));
    eu_only.router.add("fleet/+/telemetry", 0);
    auto no_us = gdpr::residency_rules::from_json_text(
        R"({"regions": ["eu", "ch"], "transfers": {"eu": ["ch"]}, "defaultRegion": "ch"})", eu_only);
    CHECK_THROWS_WITH(no_us.carry_over(running, set, eu_only),
                      Catch::Contains("bridge to-us") && Catch::Contains("\"us\"") && Catch::Contains("restarts"));
}

TEST_CASE("on a reload, a brokerConfig that cannot be read leaves the bridges as they run", "[residency]") {
    const auto set = schemas();
    test_support::temp_dir dir;
    const std::string conf = dir.write("mosquitto.conf", "connection to-us\naddress 10.0.0.1\ntopic fleet/# out 1\n");
    const std::string rules = R"({"regions": ["eu", "us"], "defaultRegion": "eu",
        "bridges": [{"name": "to-us", "region": "us"}], "brokerConfig": ")" + conf + R"("})";
    const auto running = gdpr::residency_rules::from_json_text(rules, set);
    REQUIRE(running.bridges().size() == 1);
    std::filesystem::remove(conf);
    CHECK_THROWS(gdpr::residency_rules::from_json_text(rules, set));  // at start it is refused
    auto next = gdpr::residency_rules::from_json_text(rules, set, "residency file", ".", true);
    const auto changes = next.carry_over(running, set, set);
    CHECK_THAT(changes.broker_config_problem, Catch::Contains("mosquitto.conf"));
    CHECK(changes.bridges_not_applied.empty());
    REQUIRE(next.bridges().size() == 1);
    CHECK(next.bridges()[0].topics == std::vector<std::string>{"fleet/#"});
    CHECK(next.blocking_bridge("fleet/acme/telemetry", set.schemas[0]) == &next.bridges()[0]);
}

TEST_CASE("the guard keeps its counts by region name across a reload and places every connection again",
          "[residency]") {
    const auto set = schemas();
    gdpr::residency_guard g(gdpr::residency_rules::from_json_text(RULES, set));
    const auto eu = g.rules().region_index("eu"), ch = g.rules().region_index("ch"), us = g.rules().region_index("us");
    int connection = 0, placed = 0;
    auto region = [&](std::string_view id) {
        return g.region_of(&connection, id, "", "127.0.0.1", [&] {
            ++placed;
            return who(id);
        });
    };
    CHECK(region("partner-1") == eu);
    g.refuse_delivery(eu, us);
    g.refuse_delivery(ch, us);
    g.refuse_bridged(eu, g.rules().bridges()[0]);
    g.note_transfer(eu, ch);
    g.note_transfer(us, ch);

    // ch goes, partner-* moves to us, and every index moves.
    auto next = gdpr::residency_rules::from_json_text(R"({"regions": ["us", "eu"], "transfers": {"us": ["eu"]},
        "defaultRegion": "eu", "clients": [{"clientId": "partner-*", "region": "us"}]})", set);
    next.carry_over(g.rules(), set, set);
    auto prepared = g.prepare_rules(std::move(next), true);
    CHECK(region("partner-1") == eu);  // prepared, not yet in use
    g.use_rules(std::move(prepared));
    CHECK(region("partner-1") == g.rules().region_index("us"));
    CHECK(placed == 2);

    std::vector<std::string> refusals;
    for (const auto& r : g.refusals()) refusals.push_back(r.from + ">" + r.to + " " + r.via + " " + std::to_string(r.count));
    std::sort(refusals.begin(), refusals.end());
    CHECK(refusals == std::vector<std::string>{"ch>us delivery 1", "eu>us bridge to-us 1", "eu>us delivery 1"});
    CHECK(g.refusal_total() == 3);
    std::vector<std::string> transfers;
    for (const auto& t : g.transfers()) transfers.push_back(t.from + ">" + t.to + " " + std::to_string(t.count));
    std::sort(transfers.begin(), transfers.end());
    CHECK(transfers == std::vector<std::string>{"eu>ch 1", "us>ch 1"});
    // Counting goes on under the new indexes, into the same entries.
    g.refuse_delivery(g.rules().region_index("eu"), g.rules().region_index("us"));
    std::uint64_t eu_us = 0;
    for (const auto& r : g.refusals())
        if (r.from == "eu" && r.to == "us" && r.via == "delivery") eu_us += r.count;
    CHECK(eu_us == 2);

    // ch back: its counts go on from where they were, in one entry.
    auto back = gdpr::residency_rules::from_json_text(RULES, set);
    back.carry_over(g.rules(), set, set);
    g.use_rules(g.prepare_rules(std::move(back), false));
    g.refuse_delivery(g.rules().region_index("ch"), g.rules().region_index("us"));
    std::vector<std::uint64_t> ch_us;
    for (const auto& r : g.refusals())
        if (r.from == "ch" && r.to == "us") ch_us.push_back(r.count);
    CHECK(ch_us == std::vector<std::uint64_t>{2});
}
