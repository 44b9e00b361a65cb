#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "gdpr/log.hpp"

TEST_CASE("log lines are prefixed and problems are rate limited", "[log]") {
    std::vector<std::string> lines;
    gdpr::logger log([&](gdpr::log_level, std::string_view line) { lines.emplace_back(line); }, 3);
    log.info("hello");
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == "gdpr: hello");
    for (int i = 0; i < 10; ++i) log.warning("again");
    CHECK(lines.size() == 4);  // 1 info + 3 warnings within the budget
    CHECK(log.suppressed_total() == 7);
    log.info("info is never limited");
    CHECK(lines.size() == 5);
    log.set_threshold(gdpr::log_level::warning);
    log.info("hidden");
    CHECK(lines.size() == 5);
}
