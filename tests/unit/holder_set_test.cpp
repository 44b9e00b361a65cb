#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "gdpr/data_map.hpp"
#include "gdpr/holder_set.hpp"
#include "test_support.hpp"

namespace {
std::vector<std::uint32_t> contents(const gdpr::holder_set& s) {
    std::vector<std::uint32_t> out;
    s.for_each([&](std::uint32_t id) { out.push_back(id); });
    std::sort(out.begin(), out.end());
    return out;
}
} // namespace

TEST_CASE("a holder set keeps each id once, inline or past its inline part, and erases any of them", "[datamap]") {
    gdpr::holder_set s;
    CHECK(s.empty());
    for (std::uint32_t id = 10; id < 18; ++id) CHECK(s.insert(id));
    for (std::uint32_t id = 10; id < 18; ++id) CHECK_FALSE(s.insert(id));
    CHECK(s.size() == 8);
    CHECK(contents(s) == std::vector<std::uint32_t>{10, 11, 12, 13, 14, 15, 16, 17});
    s.erase(11);  // inline: an overflow id takes its place
    s.erase(16);  // overflow
    s.erase(99);  // absent: nothing happens
    CHECK(contents(s) == std::vector<std::uint32_t>{10, 12, 13, 14, 15, 17});
    CHECK_FALSE(s.contains(11));
    CHECK_FALSE(s.contains(16));
    CHECK(s.contains(17));
    for (std::uint32_t id : {10u, 12u, 13u, 14u, 15u, 17u}) s.erase(id);
    CHECK(s.empty());
    CHECK(s.insert(0));  // id 0 is a holder like any other
    CHECK(s.contains(0));
    CHECK_FALSE(s.contains(1));
}

TEST_CASE("the data map keeps many holders of one subject, and a forgotten subject's entry starts empty when reused",
          "[datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto ref = test_support::keyed_ref;
    std::vector<std::string> readers;
    for (int i = 0; i < 12; ++i) readers.push_back((i < 10 ? "reader-0" : "reader-") + std::to_string(i));
    {
        auto map = gdpr::data_map::open(db, "NORMAL", ref);
        int payload = 0;
        for (int round = 0; round < 2; ++round) {
            map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &payload);
            for (const auto& r : readers) map->delivered(r, "fleet/van-1/telemetry", &payload);
        }
        CHECK(map->holdings("driver-1").recipients == readers);
        CHECK(map->holders_recorded() == 13);  // each holder once, however often seen
        map->forget_subject("driver-1");
        map->published({"driver-2"}, "van-2", "fleet/van-2/telemetry", false, &payload);  // reuses the entry
        map->delivered("dashboard", "fleet/van-2/telemetry", &payload);
        const auto h = map->holdings("driver-2");
        CHECK(h.publishers == std::vector<std::string>{"van-2"});
        CHECK(h.recipients == std::vector<std::string>{"dashboard"});
        CHECK(map->holdings("driver-1").empty());
        map->wait_idle();
    }
    auto map = gdpr::data_map::open(db, "NORMAL", ref);
    CHECK(map->holdings("driver-1").empty());
    CHECK(map->holdings("driver-2").recipients == std::vector<std::string>{"dashboard"});
}
