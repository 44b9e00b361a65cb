#pragma once
// The per-message hot path: one pass over a JSON payload that validates it (RFC 8259, UTF-8) and
// writes the filtered copy. Kept values are copied byte for byte (same member order, same number
// text); classified fields are dropped, masked, pseudonymised or generalised by their rule; fields
// no rule covers follow the schema's unclassified policy. No exceptions, no allocation beyond the
// caller's output buffer once it has grown.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gdpr/schema.hpp"

namespace gdpr {

class pseudonymiser;

enum class filter_status : std::uint8_t {
    ok,             // `out` holds the filtered payload
    invalid_json,   // not RFC 8259 JSON, or a string is not valid UTF-8
    too_deep,       // nesting deeper than payload_filter::MAX_DEPTH
    not_container,  // valid JSON whose top level is not an object or array
    shape_mismatch, // top level is an array, but the schema's rules name only object members
};

std::string_view to_string(filter_status s);

// What happened to one classified or unclassified member.
struct field_outcome {
    enum class kind : std::uint8_t { dropped, masked, pseudonymised, generalised, unsupported, unclassified_dropped, no_consent };
    std::int32_t rule;  // index into schema::fields; -1 for unclassified members
    kind what;
};

struct filter_result {
    filter_status status = filter_status::ok;
    std::size_t error_offset = 0;             // byte offset of the problem when status != ok
    std::uint32_t dropped = 0;                // classified members removed by a drop rule
    std::uint32_t transformed = 0;            // masked, pseudonymised or generalised
    std::uint32_t unsupported = 0;            // removed because the rule's action cannot handle the value
    std::uint32_t unclassified_dropped = 0;   // removed by the schema's "unclassified": "drop"
    std::uint32_t no_consent = 0;             // removed: the purpose needs consent the subject has not given
    // Personal members still in the output: kept, pseudonymised or generalised (GDPR Recital 26:
    // pseudonymised data is still personal data). Masked and removed members do not count.
    std::uint32_t personal_forwarded = 0;

    // True when the filtered payload differs from the original in content.
    bool changed() const { return dropped + transformed + unsupported + unclassified_dropped + no_consent > 0; }
};

class payload_filter {
public:
    static constexpr int MAX_DEPTH = 128;

    // `pseudonyms` may be null when no schema uses "pseudonymise"; a pseudonymise rule then drops
    // the field (fail closed) and counts it as unsupported.
    explicit payload_filter(const pseudonymiser* pseudonyms) : pseudonyms_(pseudonyms) {}

    // Filters `payload` by `rules`. `consented` holds the consent bits (field_rule::consent_bit)
    // the data subjects have granted; a rule whose purpose needs a bit that is not set drops its
    // field (GDPR Art. 6(1)(a)). `out` is cleared first. When `outcomes` is given, one entry per
    // member that was not kept unchanged is appended. Contract: never throws (allocation failure
    // aside); on a status other than ok, `out` is unspecified.
    filter_result run(const schema& rules, std::uint64_t consented, std::string_view payload, std::string& out,
                      std::vector<field_outcome>* outcomes = nullptr) const;

    // A payload this filter forwarded earlier (a retained message, an offline client's queue),
    // checked again before the broker delivers it: members whose purpose needs a consent bit that
    // `consented` no longer has are removed (counted in no_consent); everything else is copied
    // as it is, since the actions were applied when it was published. GDPR Art. 7(3).
    filter_result remove_withdrawn(const schema& rules, std::uint64_t consented, std::string_view stored,
                                   std::string& out) const;

    // A payload forwarded earlier under other rules (before a schema reload) checked again before
    // the broker delivers it: filtered by `rules` as a publish would be; removing, masking and
    // generalising again change nothing where they were done before. A member under a
    // "pseudonymise" rule is copied as it is when it is a string of pseudonym form (32 lowercase
    // hex digits), else removed (counted in dropped): it was stored before the rule applied.
    // `consent_unknown`, when given, has one entry per rule: true where whether the subject
    // consented cannot be known (counted as not given). GDPR Art. 5(1)(c).
    filter_result refilter_stored(const schema& rules, std::uint64_t consented, std::string_view stored,
                                  const std::vector<bool>* consent_unknown, std::string& out) const;

    // Finds the scalar at `tokens` (an object/array path without wildcards) in `payload` and
    // stores it in `value`: strings unescaped, numbers and booleans as written. Returns false when
    // the payload is not valid JSON up to that point, the path is absent, or the value is null,
    // an object or an array.
    static bool find_scalar(std::string_view payload, const std::vector<std::string>& tokens, std::string& value);

private:
    const pseudonymiser* pseudonyms_;
};

} // namespace gdpr
