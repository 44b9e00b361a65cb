#include <catch2/catch.hpp>

#include "gdpr/generalise.hpp"

using gdpr::time_unit;

namespace {
std::string rounded(const char* in, int decimals) {
    std::string out;
    if (!gdpr::round_decimal_text(in, decimals, out)) return "<fail>";
    return out;
}
std::string iso(const char* in, time_unit u) {
    std::string out;
    if (!gdpr::truncate_iso_timestamp(in, u, out)) return "<fail>";
    return out;
}
std::string epoch(const char* in, time_unit u, bool ms = false) {
    std::string out;
    if (!gdpr::truncate_epoch_number(in, u, ms, out)) return "<fail>";
    return out;
}
} // namespace

TEST_CASE("decimal rounding works on the text, half away from zero", "[generalise]") {
    CHECK(rounded("48.137154", 2) == "48.14");
    CHECK(rounded("48.135", 2) == "48.14");
    CHECK(rounded("48.134999", 2) == "48.13");
    CHECK(rounded("-11.576124", 2) == "-11.58");
    CHECK(rounded("-11.575", 2) == "-11.58");
    CHECK(rounded("9.995", 2) == "10.00");
    CHECK(rounded("99.96", 1) == "100.0");
    CHECK(rounded("0.5", 0) == "1");
    CHECK(rounded("-0.4", 0) == "0");
    CHECK(rounded("-0.001", 2) == "0.00");
    CHECK(rounded("12", 2) == "12");
    CHECK(rounded("12.3", 2) == "12.3");
    CHECK(rounded("1.005", 2) == "1.01");  // exact on text; binary doubles would give 1.00
    CHECK(rounded("4.8137154e1", 2) == "48.14");
    CHECK(rounded("1.005e0", 2) == "1.01");      // same answer as the plain form
    CHECK(rounded("-1.005E+0", 2) == "-1.01");
    CHECK(rounded("5e-3", 2) == "0.01");
    CHECK(rounded("4e-3", 2) == "0.00");
    CHECK(rounded("-4e-3", 2) == "0.00");
    CHECK(rounded("1.5e2", 0) == "150");
    CHECK(rounded("0.0012e3", 1) == "1.2");
    CHECK(rounded("123456789.123456789e0", 15) == "123456789.123456789");
    CHECK(rounded("1e-400", 2) == "0.00");
    CHECK(rounded("1e999", 2) == "<fail>");
    CHECK(rounded("123456789012345678901234567890.55", 1) == "123456789012345678901234567890.6");
}

TEST_CASE("ISO-8601 timestamps are truncated keeping separator and offset", "[generalise]") {
    const char* ts = "2026-11-23T16:41:55.123+01:00";
    CHECK(iso(ts, time_unit::second) == "2026-11-23T16:41:55+01:00");
    CHECK(iso(ts, time_unit::minute) == "2026-11-23T16:41:00+01:00");
    CHECK(iso(ts, time_unit::hour) == "2026-11-23T16:00:00+01:00");
    CHECK(iso(ts, time_unit::day) == "2026-11-23T00:00:00+01:00");
    CHECK(iso(ts, time_unit::month) == "2026-11-01T00:00:00+01:00");
    CHECK(iso(ts, time_unit::year) == "2026-01-01T00:00:00+01:00");
    CHECK(iso("2026-11-23 16:41Z", time_unit::hour) == "2026-11-23 16:00:00Z");
    CHECK(iso("2026-11-23T16:41:55", time_unit::minute) == "2026-11-23T16:41:00");
    CHECK(iso("2026-11-23T16:41:55-0500", time_unit::hour) == "2026-11-23T16:00:00-0500");
    CHECK(iso("2026-11-23", time_unit::month) == "2026-11-01");
    CHECK(iso("2026-11-23", time_unit::hour) == "2026-11-23");
    CHECK(iso("2026-13-23T00:00:00Z", time_unit::hour) == "<fail>");
    CHECK(iso("2026-11-23T25:00:00Z", time_unit::hour) == "<fail>");
    CHECK(iso("2026-11-23T16:41:55 junk", time_unit::hour) == "<fail>");
    CHECK(iso("yesterday", time_unit::hour) == "<fail>");
    CHECK(iso("2026-11-23T16:41:55.Z", time_unit::hour) == "<fail>");
}

TEST_CASE("epoch numbers are floored in UTC", "[generalise]") {
    // 1795452459 = 2026-11-23T16:47:39Z
    CHECK(epoch("1795452459", time_unit::minute) == "1795452420");
    CHECK(epoch("1795452459", time_unit::hour) == "1795449600");
    CHECK(epoch("1795452459", time_unit::day) == "1795392000");
    CHECK(epoch("1795452459", time_unit::month) == "1793491200");  // 2026-11-01
    CHECK(epoch("1795452459", time_unit::year) == "1767225600");   // 2026-01-01
    CHECK(epoch("1795452459123", time_unit::second, true) == "1795452459000");
    CHECK(epoch("1795452459123", time_unit::hour, true) == "1795449600000");
    CHECK(epoch("1795452459.75", time_unit::second) == "1795452459");
    CHECK(epoch("-1.5", time_unit::second) == "-2");
    CHECK(epoch("-1", time_unit::day) == "-86400");
    CHECK(epoch("1e9", time_unit::day) == "<fail>");
    CHECK(epoch("12345678901234567", time_unit::day) == "<fail>");
    // Milliseconds sent where the schema says seconds would keep 3.6 s, not an hour: refused.
    CHECK(epoch("1795452459123", time_unit::hour) == "<fail>");
    CHECK(epoch("-1795452459123", time_unit::hour) == "<fail>");
    CHECK(epoch("99999999999", time_unit::hour) == "99999997200");  // the last plausible second (year 5138)
    CHECK(epoch("1795452459123000", time_unit::hour, true) == "<fail>");  // microseconds as milliseconds
}
