#include <catch2/catch.hpp>

#include <sys/stat.h>

#include "gdpr/errors.hpp"
#include "gdpr/plugin_options.hpp"
#include "gdpr/secret_file.hpp"
#include "test_support.hpp"

using opts = std::vector<std::pair<std::string, std::string>>;

namespace {
std::string failing_option(const opts& o) {
    try {
        gdpr::parse_plugin_options(o);
    } catch (const gdpr::config_error& e) {
        return e.option();
    }
    return "<none>";
}
} // namespace

TEST_CASE("options parse with defaults", "[config]") {
    const auto o = gdpr::parse_plugin_options({{"schemas", "/etc/gdpr/schemas"}});
    CHECK(o.schemas_dir == "/etc/gdpr/schemas");
    CHECK(o.purposes_file == "/etc/gdpr/schemas/purposes.json");
    CHECK(o.unmatched == gdpr::unmatched_policy::pass);
    CHECK(o.acl == gdpr::acl_fallback::defer);
    CHECK(o.new_subjects_per_minute == 1000);
    CHECK(o.new_subjects_burst == 10000);
    const auto p = gdpr::parse_plugin_options({{"schemas", "s"}, {"purposes", "p.json"}, {"unmatched_topics", "deny"},
                                               {"acl_default", "allow"}, {"pseudonym_key_file", "k"}});
    CHECK(p.purposes_file == "p.json");
    CHECK(p.unmatched == gdpr::unmatched_policy::deny);
    CHECK(p.acl == gdpr::acl_fallback::allow);
    CHECK(p.pseudonym_key_file == "k");
    CHECK(p.gateway_client_ids.empty());
    CHECK(p.gateway_new_subjects_per_minute == 100000);
    CHECK(p.gateway_new_subjects_burst == 1000000);
    CHECK(failing_option({{"schemas", "s"}, {"gateway_new_subjects_burst", "0"}}) == "gateway_new_subjects_burst");
    CHECK(failing_option({{"schemas", "s"}, {"gateway_new_subjects_per_minute", "-1"}}) == "gateway_new_subjects_per_minute");
    const auto g = gdpr::parse_plugin_options({{"schemas", "s"}, {"gateway_usernames", "gw-a, gw-b"},
                                               {"gateway_client_ids", "bridge-in"}, {"gateway_cert_cns", "gw.example.org"}});
    CHECK(g.gateway_usernames == std::vector<std::string>{"gw-a", "gw-b"});
    CHECK(g.gateway_client_ids == std::vector<std::string>{"bridge-in"});
    CHECK(g.gateway_cert_cns == std::vector<std::string>{"gw.example.org"});
}

TEST_CASE("bad options name the option at fault", "[config]") {
    CHECK(failing_option({}) == "schemas");
    CHECK(failing_option({{"schemas", "s"}, {"colour", "blue"}}) == "colour");
    CHECK(failing_option({{"schemas", "s"}, {"unmatched_topics", "drop"}}) == "unmatched_topics");
    CHECK(failing_option({{"schemas", "s"}, {"acl_default", "deny"}}) == "acl_default");
    CHECK(failing_option({{"schemas", ""}}) == "schemas");
    CHECK(failing_option({{"schemas", "a"}, {"schemas", "b"}}) == "schemas");
    CHECK(failing_option({{"schemas", "s"}, {"new_subjects_per_minute", "-1"}}) == "new_subjects_per_minute");
    CHECK(failing_option({{"schemas", "s"}, {"new_subjects_burst", "0"}}) == "new_subjects_burst");
    CHECK(failing_option({{"schemas", "s"}, {"new_subjects_burst", "many"}}) == "new_subjects_burst");
    // The control API's own topics: alerts published there would reach no operator.
    CHECK(failing_option({{"schemas", "s"}, {"alert_topic", "$CONTROL/gdpr/v1"}}) == "alert_topic");
    CHECK(failing_option({{"schemas", "s"}, {"alert_topic", "$CONTROL/gdpr/v1/response"}}) == "alert_topic");
    try {
        gdpr::parse_plugin_options({{"schemas", "s"}, {"unmatched_topics", "drop"}});
        FAIL("no error");
    } catch (const gdpr::config_error& e) {
        CHECK(std::string(e.what()) == "invalid 'unmatched_topics' value: 'drop' is not one of pass, deny");
    }
}

TEST_CASE("secret files must be private and long enough", "[config]") {
    test_support::temp_dir dir;
    const auto good = dir.write("good.key", std::string(32, 'k'));
    ::chmod(good.c_str(), 0600);
    CHECK(gdpr::read_secret_file("k", good, 32).size() == 32);
    const auto open = dir.write("open.key", std::string(32, 'k'));
    ::chmod(open.c_str(), 0644);
    CHECK_THROWS_WITH(gdpr::read_secret_file("k", open, 32), Catch::Contains("mode 0644"));
    const auto group = dir.write("group.key", std::string(32, 'k'));
    ::chmod(group.c_str(), 0640);
    CHECK_THROWS_AS(gdpr::read_secret_file("k", group, 32), gdpr::config_error);
    const auto shortk = dir.write("short.key", std::string(8, 'k'));
    ::chmod(shortk.c_str(), 0600);
    CHECK_THROWS_WITH(gdpr::read_secret_file("k", shortk, 32), Catch::Contains("holds 8 bytes"));
    CHECK_THROWS_WITH(gdpr::read_secret_file("k", (dir.path() / "missing").string(), 32), Catch::Contains("does not exist"));
    CHECK_THROWS_WITH(gdpr::read_secret_file("k", dir.path().string(), 32), Catch::Contains("not a regular file"));
    // A named pipe with no writer would block an open: refused without one.
    const auto pipe = (dir.path() / "pipe.key").string();
    REQUIRE(::mkfifo(pipe.c_str(), 0600) == 0);
    CHECK_THROWS_WITH(gdpr::read_secret_file("k", pipe, 32), Catch::Contains("not a regular file"));
    // The wrong file altogether: refused before it is read into memory.
    const auto huge = dir.write("huge.key", std::string(100 * 1024, 'k'));
    ::chmod(huge.c_str(), 0600);
    CHECK_THROWS_WITH(gdpr::read_secret_file("k", huge, 32), Catch::Contains("at most 65536"));
    // A key longer than any read chunk comes back whole.
    std::string long_key(10000, '\0');
    for (std::size_t i = 0; i < long_key.size(); ++i) long_key[i] = static_cast<char>(i * 131 % 251);
    const auto big = dir.write("big.key", long_key);
    ::chmod(big.c_str(), 0600);
    CHECK(std::string_view(gdpr::read_secret_file("k", big, 32)) == long_key);
}
