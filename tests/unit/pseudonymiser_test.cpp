#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>

#include "gdpr/pseudonymiser.hpp"

TEST_CASE("pseudonyms are HMAC-SHA256 (RFC 4231 vectors), truncated to 128 bits", "[pseudonymise]") {
    const std::string long_key(131, '\xaa');
    gdpr::pseudonymiser p(long_key);
    // RFC 4231 test case 6 (key longer than the block size).
    CHECK(p.pseudonym("Test Using Larger Than Block-Size Key - Hash Key First") == "60e431591ee0b67f0d8a26aacbf5b77f");
    // RFC 4231 test case 7.
    CHECK(p.pseudonym("This is a test using a larger than block-size key and a larger than block-size data. "
                      "The key needs to be hashed before being used by the HMAC algorithm.") ==
          "9b09ffa71b942fcb27635fbcd5b0e944");
}

TEST_CASE("pseudonyms are stable and key-dependent", "[pseudonymise]") {
    gdpr::pseudonymiser a(std::string(32, 'a'));
    gdpr::pseudonymiser b(std::string(32, 'b'));
    CHECK(a.pseudonym("D-1234") == a.pseudonym("D-1234"));
    CHECK(a.pseudonym("D-1234") != a.pseudonym("D-1235"));
    CHECK(a.pseudonym("D-1234") != b.pseudonym("D-1234"));
    CHECK(a.pseudonym("D-1234").size() == gdpr::pseudonymiser::PSEUDONYM_HEX_CHARS);
    CHECK(a.pseudonym("").size() == gdpr::pseudonymiser::PSEUDONYM_HEX_CHARS);
}

TEST_CASE("short keys are rejected", "[pseudonymise]") {
    CHECK_THROWS_AS(gdpr::pseudonymiser(std::string(31, 'k')), std::invalid_argument);
}
