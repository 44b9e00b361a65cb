#pragma once
// Offline reading of the audit trail: verification of the chain, a subject's export (GDPR
// Art. 15, 20) and summary counts. These open the database read-only and never need the broker.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "gdpr/audit_crypto.hpp"
#include "gdpr/sqlite.hpp"

namespace gdpr {

struct verify_problem {
    std::int64_t seq;   // the first record at fault
    std::string what;
};

struct verify_report {
    std::uint64_t records = 0;
    std::uint64_t tombstones = 0;
    std::int64_t first_seq = 0;
    std::int64_t last_seq = 0;
    std::string head_hash;                    // hex; note it down to detect a rewritten chain later
    std::optional<std::int64_t> anchor_seq;   // records up to here were removed by retention
    bool anchor_confirmed = false;            // a live retention record names this anchor
    std::vector<verify_problem> problems;     // edits, deletions, broken links
    std::vector<std::pair<std::int64_t, std::uint64_t>> gaps;  // (seq of gap record, records dropped)
    bool intact() const { return problems.empty(); }
    bool complete() const { return gaps.empty(); }
};

// `progress(done, total)` is called now and then. Stops collecting after `max_problems`.
verify_report verify_audit_trail(sqlite_db& db, const std::function<void(std::uint64_t, std::uint64_t)>& progress = {},
                                 std::size_t max_problems = 20, std::int64_t now_ms = 0);

// Everything recorded about `subject`, decrypted, as a JSON document (text).
std::string export_subject(sqlite_db& db, const audit_keys& keys, const std::string& subject, std::int64_t now_ms);

struct report_row {
    std::string day;     // YYYY-MM-DD (UTC)
    std::string kind;
    std::string schema;
    std::string reason;  // refusals only
    std::uint64_t count = 0;
    std::string category;  // kind "fields": the data category of the fields removed or changed
};
std::vector<report_row> audit_report(sqlite_db& db);

} // namespace gdpr
