#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gdpr/wiped_memory.hpp"

namespace {

// Takes memory from std::allocator and, when it comes back, notes whether any byte was left set.
struct release_log {
    static inline std::size_t blocks = 0;
    static inline std::size_t unwiped = 0;
    static void reset() { blocks = unwiped = 0; }
};
template <typename T>
struct inspecting_allocator {
    using value_type = T;
    T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
    void deallocate(T* p, std::size_t n) {
        const auto* bytes = reinterpret_cast<const unsigned char*>(p);
        ++release_log::blocks;
        if (std::any_of(bytes, bytes + n * sizeof(T), [](unsigned char b) { return b != 0; })) ++release_log::unwiped;
        std::allocator<T>().deallocate(p, n);
    }
};
template <typename T>
using test_wiping = gdpr::basic_wiping_allocator<T, inspecting_allocator>;
using test_string = std::basic_string<char, std::char_traits<char>, test_wiping<char>>;
using test_json = nlohmann::basic_json<std::map, std::vector, test_string, bool, std::int64_t, std::uint64_t, double, test_wiping>;

} // namespace

TEST_CASE("a wiped string leaves nothing readable in the blocks it grows out of or frees", "[export][wipe]") {
    release_log::reset();
    {
        test_string s;
        for (int i = 0; i < 200; ++i) s += "D-1234 lat 48.137154 lon 11.576124; ";  // grows several times
        CHECK(s.size() == 200 * 36);
    }
    CHECK(release_log::blocks >= 3);
    CHECK(release_log::unwiped == 0);
}

TEST_CASE("a JSON document on wiping memory wipes its strings, objects and arrays, and what dump grows", "[export][wipe]") {
    release_log::reset();
    {
        const std::string text =
            R"({"subject":"D-1234 with a name longer than the short-string buffer","records":[)"
            R"({"data":{"gps":{"lat":48.137154,"lon":11.576124},"driver_name":"Erika Mustermann of Munich"}},)"
            R"({"data":{"gps":{"lat":48.1,"lon":11.5},"driver_name":"Max Mustermann of Hamburg"}}]})";
        test_json doc = test_json::parse(text);
        doc["records"].push_back(doc["records"][0]);
        const test_string out = doc.dump(2);
        CHECK(out.find("Erika Mustermann") != test_string::npos);
        CHECK(test_json::parse(out) == doc);
    }
    CHECK(release_log::blocks >= 10);
    CHECK(release_log::unwiped == 0);
}

TEST_CASE("without the wiping allocator the same blocks come back readable (the inspection works)", "[export][wipe]") {
    release_log::reset();
    {
        std::basic_string<char, std::char_traits<char>, inspecting_allocator<char>> s;
        for (int i = 0; i < 200; ++i) s += "D-1234 lat 48.137154 lon 11.576124; ";
    }
    CHECK(release_log::blocks >= 3);
    CHECK(release_log::unwiped == release_log::blocks);
}
