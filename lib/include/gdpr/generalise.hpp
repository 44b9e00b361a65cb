#pragma once
// Generalisation of values (GDPR Art. 5(1)(c), data minimisation): coarser numbers and times.
#include <string>
#include <string_view>

#include "gdpr/schema.hpp"

namespace gdpr {

// Rounds the JSON number `number_text` to `decimals` places, half away from zero, working on the
// decimal text so no binary floating-point error is introduced ("48.137154", 2 -> "48.14").
// Numbers already at or below that precision are returned unchanged; exponent forms are first
// written out as plain decimals ("4.8137154e1" -> "48.14"). Appends to `out` and returns true;
// false when the exponent is beyond ±400 (e.g. "1e999"), in which case nothing is appended.
bool round_decimal_text(std::string_view number_text, int decimals, std::string& out);

// Truncates an ISO-8601 / RFC 3339 timestamp ("2026-11-23T16:41:55.123+01:00") to `unit`: smaller
// units become zero (month and day become 01), fractional seconds are removed, the separator and
// offset are kept as written. A date-only value stays date-only. Returns false (appends nothing)
// when the text is not such a timestamp.
bool truncate_iso_timestamp(std::string_view text, time_unit unit, std::string& out);

// Floors an epoch timestamp given as a JSON number (seconds, or milliseconds when `millis`) to
// `unit` in UTC. Fractions are floored away. Returns false (appends nothing) when the number is
// out of range or not a plain decimal.
bool truncate_epoch_number(std::string_view number_text, time_unit unit, bool millis, std::string& out);

} // namespace gdpr
