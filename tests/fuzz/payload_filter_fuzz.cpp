// libFuzzer target: the per-message payload filter. First byte: which schema; second: consent
// bits; the rest: the payload. Oracle: whatever the filter forwards is valid JSON (nlohmann
// parses it), filtering it again with every consent given still succeeds, and checking it again
// as a stored message (remove_withdrawn) changes nothing under the consent it was filtered with
// (or every consent) and leaves JSON with none.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "gdpr/payload_filter.hpp"
#include "gdpr/pseudonymiser.hpp"

namespace {

struct rig {
    std::vector<gdpr::schema> schemas;
    gdpr::pseudonymiser pseudonyms{fuzz_support::key()};
    gdpr::payload_filter filter{&pseudonyms};
    std::string out;
    std::string again;
    rig() {
        const auto purposes = fuzz_support::purposes();
        for (const char* text : fuzz_support::SCHEMAS) schemas.push_back(gdpr::parse_schema(text, "fuzz", purposes));
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static rig r;
    if (size < 2) return 0;
    const auto& s = r.schemas[data[0] % r.schemas.size()];
    const std::uint64_t consent = data[1];
    const std::string_view payload(reinterpret_cast<const char*>(data + 2), size - 2);
    const auto result = r.filter.run(s, consent, payload, r.out);
    if (result.status == gdpr::filter_status::ok) {
        // The filter forwarded something that is not JSON. (nlohmann refuses numbers beyond a
        // double's range, which RFC 8259 allows and the filter keeps byte for byte.)
        try {
            (void)nlohmann::json::parse(r.out);
        } catch (const nlohmann::json::parse_error&) {
            std::abort();
        } catch (const nlohmann::json::out_of_range&) {
        }
        const auto again = r.filter.run(s, ~std::uint64_t{0}, r.out, r.again);
        if (again.status != gdpr::filter_status::ok) std::abort();
        // Checked again as a stored message: under the consent it was filtered with, or every
        // consent, nothing changes, byte for byte; with none, what is left is still JSON.
        const std::string stored = r.out;
        const auto kept = r.filter.remove_withdrawn(s, ~std::uint64_t{0}, stored, r.again);
        if (kept.status != gdpr::filter_status::ok || kept.no_consent != 0 || r.again != stored) std::abort();
        const auto same = r.filter.remove_withdrawn(s, consent, stored, r.again);
        if (same.status != gdpr::filter_status::ok || same.no_consent != 0 || r.again != stored) std::abort();
        const auto withdrawn = r.filter.remove_withdrawn(s, 0, stored, r.again);
        if (withdrawn.status != gdpr::filter_status::ok) std::abort();
        try {
            (void)nlohmann::json::parse(r.again);
        } catch (const nlohmann::json::parse_error&) {
            std::abort();
        } catch (const nlohmann::json::out_of_range&) {
        }
    }
    std::string value;
    gdpr::payload_filter::find_scalar(payload, {"driver_id"}, value);
    gdpr::payload_filter::find_scalar(payload, {"readings", "0", "hr"}, value);
    return 0;
}
