#include <catch2/catch.hpp>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "gdpr/topic_filter.hpp"
#include "gdpr/topic_router.hpp"

using gdpr::topic_router;

TEST_CASE("a shared subscription's group and filter are told apart", "[routing]") {
    const auto shared = gdpr::parse_shared_subscription("$share/dash/fleet/+/status");
    REQUIRE(shared);
    CHECK(shared->group == "dash");
    CHECK(shared->filter == "fleet/+/status");
    const auto bare = gdpr::parse_shared_subscription("$share/dash");
    REQUIRE(bare);
    CHECK(bare->group == "dash");
    CHECK(bare->filter.empty());
    CHECK_FALSE(gdpr::parse_shared_subscription("fleet/$share/x"));
    CHECK_FALSE(gdpr::parse_shared_subscription("$sharex/g/f"));
}

TEST_CASE("topic filter syntax", "[routing]") {
    CHECK(gdpr::topic_filter_problem("a/b/c").empty());
    CHECK(gdpr::topic_filter_problem("+").empty());
    CHECK(gdpr::topic_filter_problem("#").empty());
    CHECK(gdpr::topic_filter_problem("a/+/#").empty());
    CHECK(gdpr::topic_filter_problem("/").empty());
    CHECK(gdpr::topic_filter_problem("a//b").empty());
    CHECK_FALSE(gdpr::topic_filter_problem("").empty());
    CHECK_FALSE(gdpr::topic_filter_problem("a/#/b").empty());
    CHECK_FALSE(gdpr::topic_filter_problem("a/b#").empty());
    CHECK_FALSE(gdpr::topic_filter_problem("a+/b").empty());
    CHECK_FALSE(gdpr::topic_filter_problem(std::string("a/\0b", 4)).empty());
    CHECK(gdpr::is_valid_topic_name("a/b"));
    CHECK_FALSE(gdpr::is_valid_topic_name("a/+"));
    CHECK_FALSE(gdpr::is_valid_topic_name("a/#"));
    CHECK_FALSE(gdpr::is_valid_topic_name(""));
}

// Classic matcher vectors (MQTT 5 §4.7 examples and the usual edge cases).
TEST_CASE("topic_matches follows MQTT wildcard semantics", "[routing]") {
    struct v { const char* filter; const char* topic; bool match; };
    const v vectors[] = {
        {"sport/tennis/player1/#", "sport/tennis/player1", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
        {"sport/#", "sport", true},
        {"#", "sport/tennis", true},
        {"sport/tennis/+", "sport/tennis/player1", true},
        {"sport/tennis/+", "sport/tennis/player1/ranking", false},
        {"sport/+", "sport", false},
        {"sport/+", "sport/", true},
        {"+/+", "/finance", true},
        {"/+", "/finance", true},
        {"+", "/finance", false},
        {"+/#", "/finance", true},
        {"a/b", "a/b/", false},
        {"a//b", "a//b", true},
        {"a/+/b", "a//b", true},
        {"#", "$SYS/uptime", false},
        {"+/monitor/Clients", "$SYS/monitor/Clients", false},
        {"$SYS/#", "$SYS/monitor/Clients", true},
        {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
        {"+/#", "$gdpr/x", false},
        {"A/b", "a/b", false},
    };
    for (const auto& t : vectors) {
        INFO(t.filter << " vs " << t.topic);
        CHECK(gdpr::topic_matches(t.filter, t.topic) == t.match);
    }
}

TEST_CASE("router agrees with topic_matches on single filters", "[routing]") {
    const char* filters[] = {"sport/tennis/player1/#", "sport/#", "#", "sport/tennis/+", "+/+", "/+", "+", "+/#",
                             "a//b", "a/+/b", "$SYS/#", "+/monitor/Clients"};
    const char* topics[] = {"sport", "sport/", "sport/tennis/player1", "sport/tennis/player1/ranking", "/finance",
                            "finance", "a//b", "a/x/b", "$SYS/monitor/Clients", "$SYS", "x/monitor/Clients"};
    for (const char* f : filters) {
        topic_router r;
        r.add(f, 7);
        for (const char* t : topics) {
            INFO(f << " vs " << t);
            CHECK((r.route(t) == 7) == gdpr::topic_matches(f, t));
        }
    }
}

TEST_CASE("most specific filter wins, whatever the insertion order", "[routing]") {
    const std::vector<std::pair<std::string, int>> routes = {
        {"#", 0}, {"fleet/#", 1}, {"fleet/+/vehicle/+/telemetry", 2}, {"fleet/acme/vehicle/+/telemetry", 3},
        {"fleet/acme/#", 4}, {"fleet/+/vehicle/#", 5}, {"fleet/acme/vehicle/v1/telemetry", 6}, {"fleet/+", 7},
        {"fleet", 8},
    };
    auto check_all = [](const topic_router& r) {
        CHECK(r.route("fleet/acme/vehicle/v1/telemetry") == 6);
        CHECK(r.route("fleet/acme/vehicle/v2/telemetry") == 3);
        CHECK(r.route("fleet/other/vehicle/v2/telemetry") == 2);
        CHECK(r.route("fleet/other/vehicle/v2/status") == 5);
        CHECK(r.route("fleet/acme/depot") == 4);   // literal "acme" beats "+"
        CHECK(r.route("fleet/other") == 7);
        CHECK(r.route("fleet") == 8);              // exact end beats "fleet/#"
        CHECK(r.route("fleet/a/b") == 1);
        CHECK(r.route("home/x") == 0);
        CHECK(r.route("$SYS/x") == topic_router::NO_ROUTE);
    };
    topic_router forward;
    for (const auto& [f, t] : routes) forward.add(f, t);
    check_all(forward);
    topic_router backward;
    for (auto it = routes.rbegin(); it != routes.rend(); ++it) backward.add(it->first, it->second);
    check_all(backward);
    CHECK(forward.size() == routes.size());
}

TEST_CASE("backtracking finds a less specific branch when the literal branch dead-ends", "[routing]") {
    topic_router r;
    r.add("a/b/c", 1);
    r.add("a/+/d", 2);
    CHECK(r.route("a/b/d") == 2);
    CHECK(r.route("a/b/c") == 1);
    CHECK(r.route("a/b/e") == topic_router::NO_ROUTE);
}

TEST_CASE("duplicate and invalid filters are rejected", "[routing]") {
    topic_router r;
    r.add("a/+", 1);
    CHECK_THROWS_AS(r.add("a/+", 2), std::invalid_argument);
    CHECK_THROWS_AS(r.add("a/#/b", 2), std::invalid_argument);
    CHECK_THROWS_AS(r.add("", 2), std::invalid_argument);
    r.add("#", 3);
    CHECK_THROWS_AS(r.add("#", 4), std::invalid_argument);
}

TEST_CASE("filter specificity and overlap", "[routing]") {
    CHECK(gdpr::compare_filter_specificity("a/b", "a/+") < 0);
    CHECK(gdpr::compare_filter_specificity("a/+", "a/#") < 0);
    CHECK(gdpr::compare_filter_specificity("a", "a/#") < 0);
    CHECK(gdpr::compare_filter_specificity("a/+/c", "a/b/#") > 0);
    CHECK(gdpr::compare_filter_specificity("x/y", "x/y") == 0);
    CHECK(gdpr::filters_overlap("a/+", "a/b"));
    CHECK(gdpr::filters_overlap("a/#", "a"));
    CHECK(gdpr::filters_overlap("#", "x/y/z"));
    CHECK_FALSE(gdpr::filters_overlap("a/b", "a/c"));
    CHECK_FALSE(gdpr::filters_overlap("a/+", "a/b/c"));
    CHECK_FALSE(gdpr::filters_overlap("#", "$SYS/x"));
    CHECK_FALSE(gdpr::filters_overlap("+/x", "$SYS/x"));
}

TEST_CASE("the overlap of two filters is a filter", "[routing]") {
    using gdpr::intersect_filters;
    CHECK(intersect_filters("a/+/#", "+/b") == "a/b");
    CHECK(intersect_filters("a/+", "+/b") == "a/b");
    CHECK(intersect_filters("+/+", "+/+") == "+/+");
    CHECK(intersect_filters("a/#", "a") == "a");  // '#' also matches its parent level
    CHECK(intersect_filters("a", "a/#") == "a");
    CHECK(intersect_filters("a/#", "a/+/#") == "a/+/#");
    CHECK(intersect_filters("#", "x/+") == "x/+");
    CHECK(intersect_filters("#", "#") == "#");
    CHECK(intersect_filters("/+", "+/x") == "/x");  // an empty level is a level
    CHECK(intersect_filters("fleet/+/vehicle/+/telemetry", "fleet/acme/#") == "fleet/acme/vehicle/+/telemetry");
    CHECK_FALSE(intersect_filters("a/b", "a/c"));
    CHECK_FALSE(intersect_filters("a/+", "a/b/c"));
    CHECK_FALSE(intersect_filters("#", "$SYS/x"));
    CHECK_FALSE(intersect_filters("+/x", "$SYS/x"));
}

namespace {

// Every filter of up to three levels over a small alphabet ('#' only last).
std::vector<std::string> small_filters(bool wildcards) {
    const std::vector<std::string> levels = wildcards ? std::vector<std::string>{"a", "b", "$s", "", "+", "#"}
                                                      : std::vector<std::string>{"a", "b", "$s", ""};
    std::vector<std::string> all, frontier{""};
    for (int depth = 0; depth < 3; ++depth) {
        std::vector<std::string> next;
        for (const auto& prefix : frontier)
            for (const auto& level : levels) {
                if (!prefix.empty() && prefix.back() == '#') continue;
                const std::string f = depth == 0 ? level : prefix + "/" + level;
                next.push_back(f);
                if (!f.empty()) all.push_back(f);  // "" is no filter, but "/a" is
            }
        frontier = std::move(next);
    }
    return all;
}

} // namespace

TEST_CASE("overlaps found through the index, and computed overlaps, agree with topic matching", "[routing]") {
    const auto filters = small_filters(true);
    const auto topics = small_filters(false);
    gdpr::overlap_index index;
    for (std::size_t i = 0; i < filters.size(); ++i) index.add(filters[i], i);
    std::size_t overlaps = 0;
    for (const auto& f : filters) {
        std::set<std::size_t> found;
        index.each_overlapping(f, [&](std::string_view g, std::size_t i) {
            CHECK(g == filters[i]);
            CHECK(found.insert(i).second);  // once each
        });
        for (std::size_t i = 0; i < filters.size(); ++i) {
            const auto& g = filters[i];
            INFO(f << " and " << g);
            REQUIRE(found.count(i) == (gdpr::filters_overlap(f, g) ? 1U : 0U));
            const auto shared = gdpr::intersect_filters(f, g);
            REQUIRE(shared.has_value() == gdpr::filters_overlap(f, g));
            if (!shared) {
                std::string in_both;  // a topic both match, though they do not overlap
                for (const auto& t : topics)
                    if (gdpr::topic_matches(f, t) && gdpr::topic_matches(g, t)) in_both = t;
                REQUIRE(in_both.empty());
                continue;
            }
            ++overlaps;
            std::string disagreeing;  // a topic the overlap matches and not both filters, or the reverse
            for (const auto& t : topics)
                if (gdpr::topic_matches(*shared, t) != (gdpr::topic_matches(f, t) && gdpr::topic_matches(g, t)))
                    disagreeing = t;
            INFO("overlap " << *shared);
            REQUIRE(disagreeing.empty());
        }
    }
    CHECK(overlaps > 1000);
}
