#include <catch2/catch.hpp>

#include "gdpr/clock_watch.hpp"

TEST_CASE("a clock watch reports a step of the wall clock once, and not drift or the first reading", "[clock]") {
    gdpr::clock_watch watch(std::chrono::seconds(1));
    const std::int64_t wall = 1'700'000'000'000, steady = 5'000;
    CHECK(watch.read_at(wall, steady).step_ms == 0);
    CHECK(watch.read_at(wall + 100, steady + 100).step_ms == 0);  // both clocks ran
    CHECK(watch.read_at(wall + 1100, steady + 1000).step_ms == 0);  // slewed by 100 ms: drift
    const auto set_back = watch.read_at(wall - 3'600'000, steady + 2000);
    CHECK(set_back.wall_ms == wall - 3'600'000);
    CHECK(set_back.step_ms == -(3'600'000 + 1100 + 1000));
    CHECK(watch.read_at(wall - 3'600'000 + 500, steady + 2500).step_ms == 0);  // reported once
    CHECK(watch.read_at(wall + 7'200'000, steady + 3000).step_ms > 0);
}

TEST_CASE("a clock watch reads the system's clocks", "[clock]") {
    gdpr::clock_watch watch;
    const auto first = watch.read();
    const auto second = watch.read();
    CHECK(second.wall_ms >= first.wall_ms - 1000);
    CHECK(first.wall_ms > 1'600'000'000'000);
    CHECK(second.step_ms == 0);
}
