#pragma once
// Offline reading of the audit trail: verification of the chain, a subject's export (GDPR
// Art. 15, 20) and summary counts. These open the database read-only and never need the broker.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "gdpr/audit_chain.hpp"
#include "gdpr/audit_crypto.hpp"
#include "gdpr/sqlite.hpp"
#include "gdpr/topic_sealer.hpp"

namespace gdpr {

// The columns of audit_records that hold a record's chained fields and content, in the order
// read_record_columns expects them at the start of a row.
inline constexpr const char* AUDIT_RECORD_COLUMNS =
    "seq, at_ms, kind, expires_ms, session, client_id, schema, detail, payload, sealed";
stored_record read_record_columns(sqlite_statement& row);

// The records in which the trail states things about itself: its anchor, and from which seq
// every key_shredded record is authenticated (indexed by audit_statements, trail version 4).
inline constexpr const char* AUDIT_STATEMENT_KINDS = "kind IN ('writer_started', 'retention')";
// The lowest `shreds_authenticated_from` a live statement states, and the first record that
// states it; nothing when none does. A statement of a boundary after itself is no writer's (each
// states one it has reached) and is passed over.
struct stated_shreds_boundary {
    std::int64_t from = 0;
    std::int64_t stated_by = 0;
};
std::optional<stated_shreds_boundary> lowest_stated_shreds_boundary(sqlite_db& db);

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
    // With the key file: whether that statement is the broker's (audit_keys::anchor_mac). Without
    // it, anyone able to write the file could have appended it.
    std::optional<bool> anchor_authenticated;
    // writer_started records that took a statement written without authentication as it was: an
    // upgrade from trail version 2, or the marker in audit_meta removed by hand.
    std::vector<std::int64_t> anchor_inherited;
    // With the key file: key_shredded records an older writer wrote, before they were
    // authenticated (trail version 3 and older); taken as written.
    std::vector<std::int64_t> shreds_inherited;
    std::uint64_t shred_records = 0;  // live key_shredded records (the key file authenticates them)
    // With the key file, when some key_shredded records have had their content removed by
    // retention: sealed parts that do not open under their subject's current data key, which a
    // shred verify can no longer see may explain (otherwise each one is a problem).
    std::uint64_t envelopes_unexplained = 0;
    std::vector<verify_problem> problems;     // edits, deletions, broken links
    std::vector<std::pair<std::int64_t, std::uint64_t>> gaps;  // (seq of gap record, records dropped)
    // Subjects whose sealed data has no data key and no key_shredded record that says why, all of
    // it sealed before a key_shredded record (an older writer's) whose content retention removed:
    // their keys were shredded then, or deleted by hand; verify cannot tell which. (Otherwise each
    // one is a problem.)
    std::uint64_t keys_unaccounted = 0;
    // Records still holding their content more than OVERDUE_AFTER_MS after their retention period
    // ended (GDPR Art. 5(1)(e)): the sweeper removes them while the broker runs, so these say it
    // has not run (the broker stopped) or cannot. The newest record stating the anchor is not
    // counted: it keeps its content until a newer one states it.
    static constexpr std::int64_t OVERDUE_AFTER_MS = 86'400'000;
    std::uint64_t overdue = 0;
    std::int64_t first_overdue_seq = 0;
    bool intact() const { return problems.empty(); }
    bool complete() const { return gaps.empty(); }
};

// `progress(done, total)` is called now and then. Stops collecting after `max_problems`.
// With `keys` (the audit key file's), the statement of the anchor is authenticated too.
verify_report verify_audit_trail(sqlite_db& db, const std::function<void(std::uint64_t, std::uint64_t)>& progress = {},
                                 std::size_t max_problems = 20, std::int64_t now_ms = 0, const audit_keys* keys = nullptr);

struct export_options {
    std::size_t max_bytes = 0;                   // 0: no limit; else export_error past about this size
    const std::atomic<bool>* cancelled = nullptr;  // checked between chunks: export_error once set
    int indent = 2;  // as nlohmann::json::dump: -1 for the most compact text
    // The purposes the subject consents to now, when the caller holds the live consent store
    // (the broker does; an offline reader has only the history): exported as "consent".
    std::optional<std::vector<std::string>> granted_now;
    // Consent held for purposes that do not rest on consent now (counts again if they do).
    std::vector<std::string> held_now;
    // Opens the retained topics the data map stores sealed (they name the subject); without it,
    // or for a seal it did not make, they are only counted. Used by the exporting thread alone.
    topic_sealer* topic_opener = nullptr;
    // Opens the topics sealed under the pseudonymisation key before an audit key was configured.
    topic_sealer* earlier_topic_opener = nullptr;
    // Names the data map may also hold the subject's holders under, besides the audit key's
    // reference (data_map::names_of: holders named by pseudonym before an audit key was added, until
    // their subject publishes again). The caller vouches that none can be another subject's
    // (is_keyed_subject_name).
    std::vector<std::string> data_map_names;
    // Also the holders the data map named by the subject id itself (written with no key file, in a
    // file no broker has opened with a key file since), unless the id has a keyed name's form
    // (is_keyed_subject_name).
    bool data_map_by_id = false;
    // Filled with the schema tag of each record exported and the residency the record states
    // ("" for none; nothing when it does not say, as records of earlier versions), for the
    // caller's residency check.
    std::set<std::pair<std::string, std::optional<std::string>>>* schema_residencies = nullptr;
};
class export_error : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Everything recorded about `subject`, decrypted, as a JSON document (text). With the data map in
// the same database, also every client that published or received the subject's data and every
// retained topic holding it ("holders"), as far as the broker saw them. The trail is read in
// chunks of rows, each its own read transaction when `db` has none open, so a long export never
// holds up the writer's checkpoints for long (the export then reflects the trail while it was
// read). Every buffer that held decrypted data is wiped before it is freed; the returned text is
// the caller's to wipe.
std::string export_subject(sqlite_db& db, const audit_keys& keys, const std::string& subject, std::int64_t now_ms,
                           const export_options& options = {});

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
