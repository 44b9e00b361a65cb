// libFuzzer target: the schema loader and the residency file parser. Anything they cannot use
// must be refused with their own error type; a schema they accept must drive the filter.
#include <cstdint>
#include <string>

#include "fuzz_support.hpp"
#include "gdpr/errors.hpp"
#include "gdpr/payload_filter.hpp"
#include "gdpr/residency.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const auto purposes = fuzz_support::purposes();
    static std::string out;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    gdpr::schema_set set;
    try {
        set.schemas.push_back(gdpr::parse_schema(text, "fuzz.json", purposes));
        for (const auto& t : set.schemas[0].topics) set.router.add(t, 0);
        const gdpr::payload_filter filter(nullptr);
        filter.run(set.schemas[0], ~std::uint64_t{0},
                   R"({"a":{"b":[1,{"c":"d"}]},"driver_id":"x","gps":{"lat":1.234,"lon":5.678},"ts":"2026-01-01T10:11:12Z"})",
                   out);
    } catch (const gdpr::schema_error&) {
    }
    // The same bytes as a residency file, against the schema if it loaded. brokerConfig would read
    // files named by the input: not here.
    if (text.find("brokerConfig") == std::string_view::npos) {
        try {
            gdpr::residency_rules::from_json_text(text, set);
        } catch (const gdpr::config_error&) {
        }
    }
    return 0;
}
