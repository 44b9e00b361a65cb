#include <catch2/catch.hpp>

#include <string>

#include "gdpr/payload_filter.hpp"
#include "gdpr/pseudonymiser.hpp"
#include "test_support.hpp"

using gdpr::filter_status;
using test_support::make_schema;

namespace {

const std::string KEY(32, 'k');
constexpr std::uint64_t ALL_CONSENT = ~std::uint64_t{0};

const char* VEHICLE = R"({
  "id": "veh", "version": 2, "topics": ["fleet/+/vehicle/+/telemetry"],
  "unclassified": "drop",
  "fields": {
    "/driver_id": {"category": "identifier", "personal": true, "purpose": "ops", "action": "pseudonymise"},
    "/driver_name": {"category": "identifier", "personal": true, "purpose": "ops", "action": "drop"},
    "/phone": {"category": "contact", "personal": true, "purpose": "ops", "action": "mask", "mask": "***"},
    "/gps/lat": {"category": "location", "personal": true, "purpose": "analytics", "action": "generalise", "decimals": 2},
    "/gps/lon": {"category": "location", "personal": true, "purpose": "analytics", "action": "generalise", "decimals": 2},
    "/ts": {"category": "time", "personal": true, "purpose": "ops", "action": "generalise", "truncate": "minute"},
    "/speed": {"category": "telemetry", "personal": false},
    "/readings/*/hr": {"category": "health", "personal": true, "purpose": "analytics", "action": "keep"},
    "/readings/*/at": {"category": "time", "personal": true, "purpose": "ops", "action": "generalise", "truncate": "hour", "epoch": "ms"},
    "/tags/0": {"category": "label", "personal": false}
  }
})";

struct fixture {
    gdpr::pseudonymiser ps{KEY};
    gdpr::payload_filter filter{&ps};
    gdpr::schema schema = make_schema(VEHICLE);
    std::string out;

    gdpr::filter_result run(const std::string& in) { return filter.run(schema, ALL_CONSENT, in, out); }
    std::string pseudonym(const std::string& s) const { return ps.pseudonym(s); }
};

} // namespace

TEST_CASE_METHOD(fixture, "every action applied to a telemetry message", "[filter]") {
    const auto r = run(R"({"driver_id":"D-1234","driver_name":"Ann Example","phone":"+49 170 1234567",)"
                       R"("gps":{"lat":48.137154,"lon":-11.576124,"alt":519},"speed":52.50,"ts":"2026-11-23T16:41:55.123+01:00","vin":"X"})");
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"driver_id":")" + pseudonym("D-1234") +
                     R"(","phone":"***","gps":{"lat":48.14,"lon":-11.58},"speed":52.50,"ts":"2026-11-23T16:41:00+01:00"})");
    CHECK(r.dropped == 1);
    CHECK(r.transformed == 5);
    CHECK(r.unclassified_dropped == 2);  // gps.alt, vin
    CHECK(r.changed());
}

TEST_CASE_METHOD(fixture, "kept members keep order, number text and escapes, and whitespace is tolerated", "[filter]") {
    const auto r = run("  {\n \"speed\" : 1.50e+2 ,\"tags\":[\"a\\u00e9\", \"b\"], \"readings\" : [ ] } \n");
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"speed":1.50e+2,"tags":["a\u00e9"],"readings":[]})");
    CHECK(r.unclassified_dropped == 1);  // tags[1]
}

TEST_CASE_METHOD(fixture, "a payload that needs nothing removed is reported unchanged", "[filter]") {
    const auto r = run(R"({"speed": 3})");
    REQUIRE(r.status == filter_status::ok);
    CHECK_FALSE(r.changed());
}

TEST_CASE_METHOD(fixture, "array wildcards reach every element", "[filter]") {
    const auto r = run(R"({"readings":[{"hr":71,"at":1795452459123,"raw":"x"},{"at":1795449600000,"hr":72}]})");
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"readings":[{"hr":71,"at":1795449600000},{"at":1795449600000,"hr":72}]})");
}

TEST_CASE_METHOD(fixture, "escaped keys are matched by their decoded name", "[filter]") {
    const auto r = run(R"({"\u0064river_id":"D-1234","driver\u005fname":"Ann"})");
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"\u0064river_id":")" + pseudonym("D-1234") + R"("})");
    CHECK(r.dropped == 1);
}

TEST_CASE_METHOD(fixture, "duplicate keys are each filtered", "[filter]") {
    const auto r = run(R"({"driver_name":"A","driver_name":"B","speed":1})");
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"speed":1})");
    CHECK(r.dropped == 2);
}

TEST_CASE_METHOD(fixture, "pseudonyms are stable, keyed and decode escapes first", "[filter][pseudonymise]") {
    run(R"({"driver_id":"D-1234"})");
    const std::string first = out;
    run(R"({"driver_id":"D\u002d1234"})");
    CHECK(out == first);
    gdpr::pseudonymiser other(std::string(32, 'x'));
    CHECK(other.pseudonym("D-1234") != pseudonym("D-1234"));
    run(R"({"driver_id":1234})");
    CHECK(out == R"({"driver_id":")" + pseudonym("1234") + R"("})");
    run(R"({"driver_id":null})");
    CHECK(out == R"({"driver_id":null})");
}

TEST_CASE_METHOD(fixture, "values an action cannot handle are dropped, failing closed", "[filter]") {
    const auto r = run(R"({"driver_id":{"nested":"D-1"},"gps":{"lat":"north","lon":1e999},"ts":"yesterday"})");
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"gps":{}})");
    CHECK(r.unsupported == 4);
}

TEST_CASE_METHOD(fixture, "a member whose shape does not fit the rules below it is dropped", "[filter]") {
    const auto r = run(R"({"gps":"48.1,11.5","speed":2})");
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"speed":2})");
    CHECK(r.unsupported == 1);
}

TEST_CASE("shape mismatches are dropped even when unclassified members are kept", "[filter]") {
    auto s = make_schema(R"({"id":"k","version":1,"topics":["t"],"unclassified":"keep",
        "fields":{"/gps/lat":{"category":"location","personal":true,"purpose":"ops","action":"generalise","decimals":2},
                  "/gps/lon":{"category":"location","personal":true,"purpose":"ops","action":"generalise","decimals":2}}})");
    gdpr::payload_filter f(nullptr);
    std::string out;
    auto r = f.run(s, ALL_CONSENT, R"({"gps":[48.137154,11.576124],"n":1})", out);
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"n":1})");
    CHECK(r.unsupported == 1);
    r = f.run(s, ALL_CONSENT, R"({"gps":"48.137154,11.576124","n":1})", out);
    CHECK(out == R"({"n":1})");
    r = f.run(s, ALL_CONSENT, R"({"gps":{"lat":48.137154,"alt":3},"n":1})", out);
    CHECK(out == R"({"gps":{"lat":48.14,"alt":3},"n":1})");
    // The rules describe an object: an array top level would carry the same fields unmatched.
    r = f.run(s, ALL_CONSENT, R"([{"gps":{"lat":48.137154}}])", out);
    CHECK(r.status == filter_status::shape_mismatch);
}

TEST_CASE("rules under * also apply beside a literal sibling path", "[filter][schema]") {
    auto s = make_schema(R"({"id":"k","version":1,"topics":["t"],"unclassified":"keep",
        "fields":{"/r/*/x":{"category":"c","personal":true,"purpose":"ops","action":"drop"},
                  "/r/0/y":{"category":"c","personal":false},
                  "/m/*/secret":{"category":"c","personal":true,"purpose":"ops","action":"mask"},
                  "/m/known/label":{"category":"c","personal":false}}})");
    gdpr::payload_filter f(nullptr);
    std::string out;
    auto r = f.run(s, ALL_CONSENT, R"({"r":[{"x":"S0","y":1,"z":2},{"x":"S1"}],"m":{"known":{"secret":"a","label":"b"},"other":{"secret":"c"}}})", out);
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"r":[{"y":1,"z":2},{}],"m":{"known":{"secret":"***","label":"b"},"other":{"secret":"***"}}})");
    CHECK(r.dropped == 2);
    CHECK(r.transformed == 2);
}

TEST_CASE("unclassified keep passes unknown members through verbatim", "[filter]") {
    auto s = make_schema(R"({"id":"k","version":1,"topics":["t"],"unclassified":"keep",
        "fields":{"/secret":{"category":"c","personal":true,"purpose":"ops","action":"drop"}}})");
    gdpr::payload_filter f(nullptr);
    std::string out;
    const auto r = f.run(s, ALL_CONSENT, R"({"a":[1, {"b" : true}],"secret":"x","c":null})", out);
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"a":[1, {"b" : true}],"c":null})");
}

TEST_CASE("pseudonymise without a key drops the field", "[filter][pseudonymise]") {
    auto s = make_schema(R"({"id":"k","version":1,"topics":["t"],"unclassified":"keep",
        "fields":{"/id":{"category":"c","personal":true,"purpose":"ops","action":"pseudonymise"}}})");
    gdpr::payload_filter f(nullptr);
    std::string out;
    const auto r = f.run(s, ALL_CONSENT, R"({"id":"x","n":1})", out);
    CHECK(out == R"({"n":1})");
    CHECK(r.unsupported == 1);
}

TEST_CASE("an array root is filtered element by element", "[filter]") {
    auto s = make_schema(R"({"id":"k","version":1,"topics":["t"],
        "fields":{"/*/v":{"category":"c","personal":false}}})");
    gdpr::payload_filter f(nullptr);
    std::string out;
    REQUIRE(f.run(s, ALL_CONSENT, R"([{"v":1,"w":2},{"v":3}])", out).status == filter_status::ok);
    CHECK(out == R"([{"v":1},{"v":3}])");
}

TEST_CASE_METHOD(fixture, "invalid JSON is refused with the offset of the problem", "[filter][hostile]") {
    struct c { const char* in; filter_status st; };
    const c cases[] = {
        {"", filter_status::invalid_json},
        {"   ", filter_status::invalid_json},
        {"not json", filter_status::invalid_json},
        {"{\"speed\":1", filter_status::invalid_json},
        {"{\"speed\":1,}", filter_status::invalid_json},
        {"{\"speed\":01}", filter_status::invalid_json},
        {"{\"speed\":1.}", filter_status::invalid_json},
        {"{\"speed\":-}", filter_status::invalid_json},
        {"{\"speed\":NaN}", filter_status::invalid_json},
        {"{\"speed\":Infinity}", filter_status::invalid_json},
        {"{\"speed\":1}x", filter_status::invalid_json},
        {"{\"speed\":1}{}", filter_status::invalid_json},
        {"\xEF\xBB\xBF{\"speed\":1}", filter_status::invalid_json},
        {"{'speed':1}", filter_status::invalid_json},
        {"{\"a\":\"\\x\"}", filter_status::invalid_json},
        {"{\"a\":\"\\ud800\"}", filter_status::invalid_json},
        {"{\"a\":\"\\udc00\"}", filter_status::invalid_json},
        {"{\"a\":\"tab\there\"}", filter_status::invalid_json},
        {"{\"a\":\"\xC3\x28\"}", filter_status::invalid_json},
        {"{\"a\":\"\xED\xA0\x80\"}", filter_status::invalid_json},
        {"{\"a\":\"\xC0\xAF\"}", filter_status::invalid_json},
        {"{\"\xFF\":1}", filter_status::invalid_json},
        {"{\"a\":tru}", filter_status::invalid_json},
        {"[1,2", filter_status::invalid_json},
        {"{\"a\" 1}", filter_status::invalid_json},
        {"42", filter_status::not_container},
        {"\"text\"", filter_status::not_container},
        {"null", filter_status::not_container},
    };
    for (const auto& t : cases) {
        INFO("input: " << t.in);
        CHECK(run(t.in).status == t.st);
    }
    const auto r = run("{\"speed\":1,\"x\":?}");
    CHECK(r.error_offset == 15);
}

TEST_CASE_METHOD(fixture, "valid unusual JSON is accepted", "[filter][hostile]") {
    CHECK(run("{\"speed\":-0.0e-0}").status == filter_status::ok);
    CHECK(run("{\"speed\":1e400}").status == filter_status::ok);
    CHECK(out == "{\"speed\":1e400}");
    CHECK(run("{\"x\":\"\\ud83d\\ude00 \xF0\x9F\x98\x80 \xE2\x82\xAC\"}").status == filter_status::ok);
    CHECK(run("{}").status == filter_status::ok);
    CHECK(out == "{}");
    CHECK(run("[]").status == filter_status::shape_mismatch);
}

TEST_CASE_METHOD(fixture, "hostile nesting is refused without exhausting the stack", "[filter][hostile]") {
    const std::string deep = "{\"x\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
    CHECK(run(deep).status == filter_status::too_deep);
    std::string ok = "{\"x\":" + std::string(100, '[') + std::string(100, ']') + "}";
    CHECK(run(ok).status == filter_status::ok);
    const std::string deep_path = std::string(200, '[') + std::string(200, ']');
    CHECK(run(deep_path).status == filter_status::too_deep);
}

TEST_CASE_METHOD(fixture, "outcomes name the rule behind each change", "[filter]") {
    std::vector<gdpr::field_outcome> outcomes;
    filter.run(schema, ALL_CONSENT, R"({"driver_name":"A","phone":"1","zzz":1})", out, &outcomes);
    REQUIRE(outcomes.size() == 3);
    CHECK(schema.fields[static_cast<std::size_t>(outcomes[0].rule)].pointer == "/driver_name");
    CHECK(outcomes[0].what == gdpr::field_outcome::kind::dropped);
    CHECK(schema.fields[static_cast<std::size_t>(outcomes[1].rule)].pointer == "/phone");
    CHECK(outcomes[1].what == gdpr::field_outcome::kind::masked);
    CHECK(outcomes[2].rule == -1);
    CHECK(outcomes[2].what == gdpr::field_outcome::kind::unclassified_dropped);
}

TEST_CASE_METHOD(fixture, "fields whose purpose needs consent pass only with that consent", "[filter][consent]") {
    // In the test purposes "analytics" is the only consent purpose: bit 0.
    auto rule = [&](const std::string& pointer) {
        for (const auto& f : schema.fields) if (f.pointer == pointer) return f;
        FAIL("no rule " << pointer);
        return gdpr::field_rule{};
    };
    REQUIRE(rule("/gps/lat").consent_bit == 0);
    REQUIRE(rule("/driver_id").consent_bit == -1);  // "ops" rests on contract
    const std::string in = R"({"gps":{"lat":48.137154,"lon":11.5},"speed":3,"readings":[{"hr":70}]})";
    std::vector<gdpr::field_outcome> outcomes;
    auto r = filter.run(schema, 0, in, out, &outcomes);
    REQUIRE(r.status == filter_status::ok);
    CHECK(out == R"({"gps":{},"speed":3,"readings":[{}]})");
    CHECK(r.no_consent == 3);
    CHECK(r.changed());
    REQUIRE(outcomes.size() == 3);
    CHECK(outcomes[0].what == gdpr::field_outcome::kind::no_consent);
    r = filter.run(schema, 1, in, out);
    CHECK(out == R"({"gps":{"lat":48.14,"lon":11.5},"speed":3,"readings":[{"hr":70}]})");
    CHECK(r.no_consent == 0);
}

TEST_CASE("find_scalar reads one value without filtering", "[filter][consent]") {
    std::string v;
    CHECK(gdpr::payload_filter::find_scalar(R"({"a":{"b":[1,{"c":"x\u0041"}]}})", {"a", "b", "1", "c"}, v));
    CHECK(v == "xA");
    CHECK(gdpr::payload_filter::find_scalar(R"({"id":1234,"x":2})", {"id"}, v));
    CHECK(v == "1234");
    CHECK(gdpr::payload_filter::find_scalar(R"({"x":{"y":1},"\u0069d":"D-1"})", {"id"}, v));
    CHECK(v == "D-1");
    CHECK_FALSE(gdpr::payload_filter::find_scalar(R"({"id":null})", {"id"}, v));
    CHECK_FALSE(gdpr::payload_filter::find_scalar(R"({"id":{"a":1}})", {"id"}, v));
    CHECK_FALSE(gdpr::payload_filter::find_scalar(R"({"other":1})", {"id"}, v));
    CHECK_FALSE(gdpr::payload_filter::find_scalar(R"({"x":[1,2}")", {"id"}, v));
    CHECK_FALSE(gdpr::payload_filter::find_scalar(R"([1,2])", {"5"}, v));
    CHECK_FALSE(gdpr::payload_filter::find_scalar("not json", {"id"}, v));
    // A subject named twice is ambiguous: no subject.
    CHECK_FALSE(gdpr::payload_filter::find_scalar(R"({"id":"A","x":1,"id":"B"})", {"id"}, v));
    CHECK_FALSE(gdpr::payload_filter::find_scalar(R"({"id":"A","\u0069d":"B"})", {"id"}, v));
    CHECK(gdpr::payload_filter::find_scalar(R"({"a":{"id":"A"},"id":"B"})", {"id"}, v));
    CHECK(v == "B");
    // RFC 6901: an array index has no leading zero; "01" names an object member only.
    CHECK_FALSE(gdpr::payload_filter::find_scalar(R"({"r":["a","b"]})", {"r", "01"}, v));
    CHECK(gdpr::payload_filter::find_scalar(R"({"r":{"01":"c"}})", {"r", "01"}, v));
    CHECK(v == "c");
    CHECK(gdpr::payload_filter::find_scalar(R"({"r":["a","b"]})", {"r", "0"}, v));
    CHECK(v == "a");
}

TEST_CASE_METHOD(fixture, "a stored payload loses only what withdrawn consent covered, byte for byte otherwise",
                 "[filter][consent]") {
    const std::string original =
        R"({"driver_id":"D-7","phone":"+49 170","gps":{"lat":48.137154,"lon":11.5},"ts":"2026-12-06T10:11:12Z",)"
        R"("speed":3,"extra":1,"readings":[{"hr":70,"at":1700000000123}]})";
    REQUIRE(filter.run(schema, ALL_CONSENT, original, out).status == filter_status::ok);
    const std::string stored = out;  // as the broker keeps it: pseudonym, mask, rounded, no "extra"

    std::string again;
    auto r = filter.remove_withdrawn(schema, ALL_CONSENT, stored, again);
    REQUIRE(r.status == filter_status::ok);
    CHECK(again == stored);  // nothing applied twice: the pseudonym is not pseudonymised again
    CHECK(r.no_consent == 0);
    CHECK_FALSE(r.changed());

    r = filter.remove_withdrawn(schema, 0, stored, again);  // "analytics" (bit 0) withdrawn
    REQUIRE(r.status == filter_status::ok);
    CHECK(r.no_consent == 3);  // gps.lat, gps.lon, readings[0].hr
    std::string expected = stored;
    for (const std::string cut : {R"("lat":48.14,)", R"("lon":11.5)", R"("hr":70,)"}) {
        const auto at = expected.find(cut);
        REQUIRE(at != std::string::npos);
        expected.erase(at, cut.size());
    }
    CHECK(again == expected);

    // Members no rule names are kept as stored, whatever the unclassified policy: they were
    // already judged when published (a schema reload may have changed the rules since).
    r = filter.remove_withdrawn(schema, 0, R"({"new":{"a":[1,2]},"speed":4})", again);
    CHECK(r.status == filter_status::ok);
    CHECK(again == R"({"new":{"a":[1,2]},"speed":4})");
    CHECK(filter.remove_withdrawn(schema, 0, R"({"gps":{"lat":1,)", again).status == filter_status::invalid_json);
}

TEST_CASE_METHOD(fixture, "a payload stored under other rules is filtered again: removing, masking and generalising twice change nothing",
                 "[filter][schema]") {
    const std::string original =
        R"({"driver_id":"D-7","driver_name":"Ann","phone":"+49 170","gps":{"lat":48.137154,"lon":11.5},)"
        R"("ts":"2026-12-06T10:11:12Z","speed":3,"extra":1,"readings":[{"hr":70,"at":1700000000123}],"tags":["a","b"]})";
    REQUIRE(filter.run(schema, ALL_CONSENT, original, out).status == filter_status::ok);
    const std::string stored = out;
    std::string again;
    auto r = filter.refilter_stored(schema, ALL_CONSENT, stored, nullptr, again);
    REQUIRE(r.status == filter_status::ok);
    CHECK(again == stored);  // the filter's own output is a fixed point: the pseudonym is kept as it is

    // A copy the rules in use never filtered: every rule applies, consent included, and an
    // identifier stored before it was pseudonymised does not go out (nor does a new pseudonym).
    r = filter.refilter_stored(schema, 0, original, nullptr, again);
    REQUIRE(r.status == filter_status::ok);
    CHECK(again == R"({"phone":"***","gps":{},"ts":"2026-12-06T10:11:00Z","speed":3,"readings":[{"at":1699999200000}],"tags":["a"]})");
    CHECK(r.no_consent == 3);
    CHECK(r.dropped == 2);               // driver_id, driver_name
    CHECK(r.unclassified_dropped == 2);  // extra, tags[1]
    // What has the form of a pseudonym is taken for one.
    r = filter.refilter_stored(schema, 0, R"({"driver_id":"0123456789abcdef0123456789abcdef","x":1})", nullptr, again);
    CHECK(again == R"({"driver_id":"0123456789abcdef0123456789abcdef"})");
    r = filter.refilter_stored(schema, 0, R"({"driver_id":"0123456789ABCDEF0123456789ABCDEF"})", nullptr, again);
    CHECK(again == "{}");

    // Consent that cannot be known counts as not given, whatever `consented` says.
    std::vector<bool> unknown(schema.fields.size(), false);
    for (std::size_t i = 0; i < schema.fields.size(); ++i) unknown[i] = schema.fields[i].pointer == "/gps/lat";
    r = filter.refilter_stored(schema, ALL_CONSENT, stored, &unknown, again);
    REQUIRE(r.status == filter_status::ok);
    CHECK(r.no_consent == 1);
    CHECK(again.find("\"lat\"") == std::string::npos);
    CHECK(again.find("\"lon\":11.5") != std::string::npos);
    CHECK(filter.refilter_stored(schema, 0, R"({"gps":{"lat":1,)", nullptr, again).status == filter_status::invalid_json);
}

TEST_CASE("an array whose rules name positions keeps them: a removed element before a kept one leaves null",
          "[filter][consent]") {
    const auto s = make_schema(R"({"id":"a","version":1,"topics":["t"],"unclassified":"drop","fields":{
        "/items/0":{"category":"l","personal":true,"purpose":"analytics","action":"keep"},
        "/items/1":{"category":"c","personal":true,"purpose":"ops","action":"keep"},
        "/items/2":{"category":"l","personal":true,"purpose":"analytics","action":"keep"},
        "/list/*":{"category":"c","personal":true,"purpose":"analytics","action":"keep"}}})");
    gdpr::payload_filter filter(nullptr);
    std::string stored, again;
    // Without consent for analytics: items[0] and items[2] go; items[1] stays at position 1; the
    // trailing removals leave nothing (items[3] is unclassified). Arrays without positional
    // rules close up as before.
    REQUIRE(filter.run(s, 0, R"({"items":["where","who","when","x"],"list":[1,2]})", stored).status == filter_status::ok);
    CHECK(stored == R"({"items":[null,"who"],"list":[]})");
    REQUIRE(filter.run(s, 1, R"({"items":["where","who","when","x"],"list":[1,2]})", stored).status == filter_status::ok);
    CHECK(stored == R"({"items":["where","who","when"],"list":[1,2]})");
    // Stored with consent, checked after it was withdrawn: the positions still say which rule.
    auto r = filter.remove_withdrawn(s, 0, stored, again);
    REQUIRE(r.status == filter_status::ok);
    CHECK(again == R"({"items":[null,"who"],"list":[]})");
    CHECK(r.no_consent == 4);
    // Stored without consent and checked without it: nothing more is removed.
    REQUIRE(filter.run(s, 0, R"({"items":["where","who"]})", stored).status == filter_status::ok);
    r = filter.remove_withdrawn(s, 0, stored, again);
    CHECK(again == stored);
    CHECK(r.no_consent == 0);
    CHECK(filter.run(s, 0, R"({"items":["a",{"b":1},"c"]})", stored).status == filter_status::ok);
    CHECK(stored == R"({"items":[null,{"b":1}]})");
}
