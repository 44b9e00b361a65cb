#pragma once
// JSON text written by hand where a document model would cost too much: per recorded publish on
// the broker thread, and receipts with thousands of entries.
#include <cstdint>
#include <string>
#include <string_view>

namespace gdpr {

// Appends `s` to `out` as a JSON string literal. `s` must be valid UTF-8.
void append_json_string(std::string& out, std::string_view s);
void append_number(std::string& out, std::int64_t v);

} // namespace gdpr
