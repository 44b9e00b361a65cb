#include "gdpr/audit_record.hpp"

#include <array>
#include <stdexcept>
#include <string>

namespace gdpr {

namespace {
constexpr std::array<std::string_view, 15> NAMES = {
    "session_start", "session_end", "subscribe",  "unsubscribe", "publish",      "publish_refused", "delivery",
    "delivery_refused", "control",  "consent",    "gap",         "retention",    "key_shredded",   "writer_started",
    "erasure"};
} // namespace

void audit_record::clear() {
    at_ms = 0;
    kind = audit_kind::publish;
    session = 0;
    client_id.clear();
    schema.clear();
    detail.clear();
    has_payload = false;
    payload.clear();
    personal.clear();
    subjects.clear();
    retention_days = 0;
}

std::string_view to_string(audit_kind kind) { return NAMES.at(static_cast<std::size_t>(kind)); }

audit_kind audit_kind_from_string(std::string_view name) {
    for (std::size_t i = 0; i < NAMES.size(); ++i)
        if (NAMES[i] == name) return static_cast<audit_kind>(i);
    throw std::invalid_argument("unknown audit record kind '" + std::string(name) + "'");
}

} // namespace gdpr
