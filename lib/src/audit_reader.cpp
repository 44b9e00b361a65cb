#include "gdpr/audit_reader.hpp"

#include "gdpr/data_map.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <limits>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include "gdpr/audit_chain.hpp"
#include "gdpr/wiped_memory.hpp"

namespace gdpr {

namespace {

using json = nlohmann::json;
// The export's document holds decrypted personal data: every buffer it grows or frees is wiped.
using wiped_json = nlohmann::basic_json<std::map, std::vector, wiped_string, bool, std::int64_t, std::uint64_t, double,
                                        wiping_allocator>;

wiped_string wiped(std::string_view text) { return wiped_string(text.data(), text.size()); }

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

const std::string SELECT_ROWS = std::string("SELECT ") + AUDIT_RECORD_COLUMNS + ", digest, hash FROM audit_records ORDER BY seq";

stored_record read_row(sqlite_statement& q) {
    stored_record r = read_record_columns(q);
    if (!q.is_null(10)) r.digest = q.blob(10);
    r.hash = q.blob(11);
    return r;
}

bool has_table(sqlite_db& db, const std::string& name) {
    auto& q = db.cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?");
    q.bind(1, name);
    const bool found = q.step();
    q.reset();
    return found;
}

// The trail says it was written with another master key than `keys` (audit_meta's key_check).
bool written_with_other_key(sqlite_db& db, const audit_keys& keys) {
    if (!has_table(db, "audit_meta")) return false;
    auto& check = db.cached("SELECT value FROM audit_meta WHERE key = 'key_check'");
    const bool other = check.step() && check.text(0) != keys.key_check();
    check.reset();
    return other;
}

wiped_json parse_or_text(const std::string& text) {
    wiped_json j = wiped_json::parse(text, nullptr, false);
    return j.is_discarded() ? wiped_json(wiped(text)) : j;
}

} // namespace

stored_record read_record_columns(sqlite_statement& q) {
    stored_record r;
    r.seq = q.integer(0);
    r.at_ms = q.integer(1);
    r.kind = q.text(2);
    r.expires_ms = q.integer(3);
    r.session = q.integer(4);
    r.client_id = q.text(5);
    r.schema = q.text(6);
    r.detail = q.text(7);
    if (!q.is_null(8)) r.payload = q.blob(8);
    if (!q.is_null(9)) r.sealed = q.blob(9);
    return r;
}

std::optional<stated_shreds_boundary> lowest_stated_shreds_boundary(sqlite_db& db) {
    sqlite_statement q(db.handle(),
                       std::string("SELECT seq, v FROM (SELECT seq, CASE WHEN json_valid(detail) AND json_type(detail,"
                                   " '$.shreds_authenticated_from') = 'integer' THEN json_extract(detail,"
                                   " '$.shreds_authenticated_from') END AS v"
                                   " FROM audit_records WHERE ") +
                           AUDIT_STATEMENT_KINDS + " AND digest IS NULL AND json_valid(detail))"
                                                   " WHERE v IS NOT NULL AND v <= seq ORDER BY v, seq LIMIT 1");
    if (!q.step()) return std::nullopt;
    return stated_shreds_boundary{q.integer(1), q.integer(0)};
}

verify_report verify_audit_trail(sqlite_db& db, const std::function<void(std::uint64_t, std::uint64_t)>& progress,
                                 std::size_t max_problems, std::int64_t now_ms, const audit_keys* keys) {
    if (now_ms == 0) now_ms = wall_ms();
    verify_report rep;
    if (!has_table(db, "audit_records")) throw storage_error("'" + db.path() + "' holds no audit trail");
    if (keys && written_with_other_key(db, *keys))
        throw storage_error("the key file is not the one this audit trail was written with");
    // One snapshot: a sweep or batch committed meanwhile must not look like missing records.
    db.exec("BEGIN");
    struct end_read {
        sqlite_db& db;
        ~end_read() {
            try {
                db.exec("COMMIT");
            } catch (...) {
            }
        }
    } end{db};
    std::uint64_t total = 0;
    {
        auto& count = db.cached("SELECT count(*) FROM audit_records");
        if (count.step()) total = static_cast<std::uint64_t>(count.integer(0));
        count.reset();
    }
    chain_hash prev{};
    std::int64_t expected = 1;
    std::int64_t restated_seq = 0;  // the anchor as the newest record that names one states it
    std::string restated_hash;
    std::string restated_mac;
    std::string anchor_hash;
    std::uint64_t disputes = 0;
    std::int64_t first_dispute = 0;
    // With the key file: each envelope must open under its subject's data key as the file holds it
    // now, unless a key_shredded record after it says that key went. A key row deleted and made
    // anew by the writer, or one edited, leaves envelopes that do not open and nothing that says why.
    struct subject_key {
        bool has_row = false;           // no row: reported below as a missing key, not here again
        std::optional<data_key> key;    // the row's key, when it opens
        std::uint64_t unopened = 0;     // envelopes since the subject's newest key_shredded record
        std::int64_t first_unopened = 0, last_unopened = 0;
        ~subject_key() {
            if (key) OPENSSL_cleanse(key->data(), key->size());
        }
    };
    std::unordered_map<std::string, subject_key> data_keys;  // by reference (hex)
    std::unique_ptr<gcm_sealer> opener;                      // rekeyed as subjects change
    const data_key* opener_key = nullptr;
    std::int64_t last_shred_tombstone = 0;  // a key_shredded record whose subject retention has removed
    const bool key_table = keys && has_table(db, "audit_subject_keys");
    std::string aad, plain;
    const auto key_of = [&](const std::string& ref) -> subject_key& {
        auto [it, fresh] = data_keys.try_emplace(ref);
        if (fresh && key_table) {
            auto& q = db.cached("SELECT wrapped FROM audit_subject_keys WHERE ref = ?");
            q.bind(1, ref);
            if (q.step()) {
                it->second.has_row = true;
                try {
                    it->second.key = keys->unwrap(q.blob(0), ref);
                } catch (const audit_keys::key_not_opened&) {
                }
            }
            q.reset();
        }
        return it->second;
    };
    auto add_problem = [&](std::int64_t seq, std::string what) {
        if (rep.problems.size() < max_problems) rep.problems.push_back({seq, std::move(what)});
    };
    // Record numbers the writer can give: 1 up to one below the largest integer (seq + 1 must exist).
    constexpr std::int64_t LAST_SEQ = std::numeric_limits<std::int64_t>::max() - 1;
    {
        auto& anchor = db.cached("SELECT seq, hash FROM audit_anchor WHERE id = 1");
        if (anchor.step()) {
            rep.anchor_seq = anchor.integer(0);
            anchor_hash = anchor.blob(1);
            if (anchor_hash.size() == prev.size()) std::copy(anchor_hash.begin(), anchor_hash.end(), prev.begin());
            if (*rep.anchor_seq < 0 || *rep.anchor_seq >= LAST_SEQ)
                add_problem(*rep.anchor_seq, "the chain's anchor names a record number no trail can reach");
            else
                expected = *rep.anchor_seq + 1;
        }
        anchor.reset();
    }
    // key_shredded records from here on must carry shred_mac (none in a trail older than version 4).
    std::optional<std::int64_t> shreds_from_meta;
    std::int64_t trail_version = 0;
    if (has_table(db, "audit_meta")) {
        auto& meta = db.cached("SELECT key, value FROM audit_meta WHERE key IN ('schema_version', 'shreds_authenticated_from')");
        while (meta.step()) {
            if (meta.text(0) == "schema_version") trail_version = meta.integer(1);
            else shreds_from_meta = meta.integer(1);
        }
        meta.reset();
    }
    // The trail's own statements of it outrank audit_meta; a running broker always has a live one
    // (each start and each sweep that removes anything writes one), so a version 4 trail with none
    // is held to it from the start.
    std::int64_t shreds_from = shreds_from_meta ? *shreds_from_meta : std::numeric_limits<std::int64_t>::max();
    if (const auto stated = lowest_stated_shreds_boundary(db); stated && stated->from < shreds_from) {
        add_problem(stated->stated_by, "this record states that key_shredded records are authenticated from seq " +
                                           std::to_string(stated->from) + ", but the trail's audit_meta says " +
                                           (shreds_from_meta ? "from seq " + std::to_string(*shreds_from_meta)
                                                             : std::string("nothing of it")) +
                                           ": changed by hand");
        shreds_from = stated->from;
    } else if (!stated && trail_version >= 4) {
        // Kept only while nothing has been written since it was set (a start that stopped before
        // its writer_started record): it is then the next record's seq, as the writer reckons it.
        std::int64_t next_seq = 1;
        auto& last = db.cached("SELECT max(seq) FROM audit_records");
        if (last.step() && !last.is_null(0)) next_seq = std::max(next_seq, last.integer(0) + 1);
        last.reset();
        auto& committed = db.cached("SELECT value FROM audit_meta WHERE key = 'last_seq'");
        if (committed.step() && committed.integer(0) < std::numeric_limits<std::int64_t>::max())
            next_seq = std::max(next_seq, committed.integer(0) + 1);
        committed.reset();
        if (rep.anchor_seq && *rep.anchor_seq < std::numeric_limits<std::int64_t>::max())
            next_seq = std::max(next_seq, *rep.anchor_seq + 1);
        if (!shreds_from_meta || *shreds_from_meta != next_seq) shreds_from = 1;
    }

    // Data keys: every subject with sealed data has its key, or a key_shredded record after that
    // data says it went.
    // Reference (hex) -> the first and last seq sealed for it since its last shred.
    std::unordered_map<std::string, std::pair<std::int64_t, std::int64_t>> sealed_refs;
    // key_shredded records before the first one the key file authenticates may be an older
    // writer's; none after it can be.
    std::int64_t first_authenticated_shred = std::numeric_limits<std::int64_t>::max();
    const auto shreds_boundary = [&] { return std::min(shreds_from, first_authenticated_shred); };
    // Live records past their retention: counted, with the first two, since the newest record
    // that states the anchor (known only at the end) is not to be counted.
    std::array<std::int64_t, 2> first_overdue{};
    std::int64_t statement_seq = 0;
    bool statement_overdue = false;
    sqlite_statement rows(db.handle(), SELECT_ROWS);
    while (rows.step()) {
        const stored_record r = read_row(rows);
        if (r.kind == "key_shredded") {
            if (r.digest) {
                // This version keeps a key_shredded record as long as every record before it: once
                // its content is gone, so are theirs, and it has nothing left to explain. An older
                // writer's may have gone first.
                if (r.seq < shreds_boundary()) last_shred_tombstone = r.seq;
            } else {
                const json d = json::parse(r.detail, nullptr, false);
                if (d.is_object() && d.contains("subject_ref") && d["subject_ref"].is_string()) {
                    const std::string ref = d["subject_ref"].get<std::string>();
                    ++rep.shred_records;
                    // With the key file, only a record the broker wrote explains a key that went.
                    bool explains = true;
                    if (keys) {
                        const auto mac = d.find("shred_mac");
                        const auto existed = d.find("key_existed");
                        if (mac != d.end()) {
                            explains = mac->is_string() && existed != d.end() && existed->is_boolean() &&
                                       mac->get<std::string>() == keys->shred_mac(r.seq, ref, existed->get<bool>());
                            if (!explains)
                                add_problem(r.seq, "key_shredded record not authenticated by this key file: written by "
                                                   "hand to explain away a data key deleted or replaced");
                            else
                                first_authenticated_shred = std::min(first_authenticated_shred, r.seq);
                            // The writer makes a subject's key with its first sealed part and deletes it
                            // only when shredding: found missing with parts sealed since, it was deleted
                            // by hand before the erasure. (Parts before a shred retention has emptied
                            // may be that shred's subject's: an older writer's shred could expire first.)
                            const auto sealed = sealed_refs.find(ref);
                            if (explains && !existed->get<bool>() && sealed != sealed_refs.end() &&
                                sealed->second.second > last_shred_tombstone)
                                add_problem(r.seq, "key_shredded record says the subject had no data key, yet records " +
                                                       std::to_string(sealed->second.first) + ".." +
                                                       std::to_string(sealed->second.second) +
                                                       " sealed data for it since its last shred: the key was deleted "
                                                       "by hand before the erasure");
                        } else if (r.seq >= shreds_boundary()) {
                            explains = false;
                            add_problem(r.seq, "key_shredded record carries no authentication: written by hand to "
                                               "explain away a data key deleted or replaced");
                        } else {
                            rep.shreds_inherited.push_back(r.seq);
                        }
                    }
                    if (explains) {
                        sealed_refs.erase(ref);  // what was sealed for the subject before it
                        if (keys) key_of(ref).unopened = 0;
                    }
                }
            }
        }
        if (r.sealed)
            for_each_envelope(*r.sealed, [&](const envelope_view& e) {
                const std::string ref = to_hex(e.ref);
                sealed_refs.try_emplace(ref, r.seq, r.seq).first->second.second = r.seq;
                if (!keys) return;
                subject_key& k = key_of(ref);
                if (!k.has_row) return;
                bool opened = false;
                if (k.key) {
                    if (!opener) opener = std::make_unique<gcm_sealer>(*k.key);
                    else if (opener_key != &*k.key) opener->rekey(*k.key);
                    opener_key = &*k.key;
                    aad = envelope_aad(r.seq, e.ref);
                    opened = opener->open(e.seal, aad, plain);
                    OPENSSL_cleanse(plain.data(), plain.size());
                }
                if (opened) return;
                if (k.unopened++ == 0) k.first_unopened = r.seq;
                k.last_unopened = r.seq;
            });
        if (rep.records == 0) rep.first_seq = r.seq;
        ++rep.records;
        rep.last_seq = r.seq;
        bool link_known = true;
        if (r.seq < 1 || r.seq > LAST_SEQ) {
            add_problem(r.seq, "record number out of range");
            link_known = false;
        } else if (r.seq != expected) {
            if (r.seq > expected)
                add_problem(expected, "records " + std::to_string(expected) +
                                          (r.seq - 1 > expected ? ".." + std::to_string(r.seq - 1) : std::string()) +
                                          " are missing (deleted)");
            else
                add_problem(r.seq, "record is out of sequence");
            link_known = false;
        }
        chain_hash digest{};
        if (r.digest) {
            ++rep.tombstones;
            if (r.digest->size() != digest.size()) {
                add_problem(r.seq, "tombstone has a malformed digest");
            } else {
                std::copy(r.digest->begin(), r.digest->end(), digest.begin());
            }
            if (!r.client_id.empty() || !r.schema.empty() || r.session != 0 || !r.detail.empty() || r.payload || r.sealed)
                add_problem(r.seq, "tombstone still holds content");
            if (r.expires_ms > now_ms) add_problem(r.seq, "content was removed before its retention period ended");
        }
        const bool overdue = !r.digest && r.expires_ms > 0 && r.expires_ms < now_ms - verify_report::OVERDUE_AFTER_MS;
        if (overdue && rep.overdue < first_overdue.size()) first_overdue[rep.overdue] = r.seq;
        if (overdue) ++rep.overdue;
        if (!r.digest) digest = content_digest(r);
        const chain_hash h = link_hash(prev, r, digest);
        if (link_known && as_bytes(h) != r.hash)
            add_problem(r.seq, "record does not match its hash: it was modified, or the chain was rewritten here");
        if (r.hash.size() == prev.size()) std::copy(r.hash.begin(), r.hash.end(), prev.begin());
        if (r.seq >= 1 && r.seq <= LAST_SEQ) expected = r.seq + 1;
        if (!r.digest && (r.kind == "gap" || r.kind == "retention" || r.kind == "writer_started")) {
            // Read without trusting the types: an edited detail is a problem to report (its hash
            // no longer matches), never a reason to stop verifying.
            const json d = json::parse(r.detail, nullptr, false);
            if (r.kind == "gap" && d.is_object()) {
                const auto dropped = d.find("dropped");
                rep.gaps.emplace_back(r.seq, dropped != d.end() && dropped->is_number_unsigned() ? dropped->get<std::uint64_t>() : 0);
            }
            if (r.kind != "gap" && d.is_object() && d.contains("anchor_seq")) {
                const auto& seq = d["anchor_seq"];
                const auto hash = d.find("anchor_hash");
                const auto mac = d.find("anchor_mac");
                restated_seq = seq.is_number_integer() ? seq.get<std::int64_t>() : 0;
                statement_seq = r.seq;
                statement_overdue = overdue;
                restated_hash = hash != d.end() && hash->is_string() ? hash->get<std::string>() : std::string();
                restated_mac = mac != d.end() && mac->is_string() ? mac->get<std::string>() : std::string();
            }
            // One problem for them all (each start and sweep adds one): reported at the end.
            if (r.kind != "gap" && d.is_object() && d.contains("anchor_disputed")) {
                if (disputes++ == 0) first_dispute = r.seq;
            }
            if (r.kind == "writer_started" && d.is_object() && d.contains("anchor_inherited"))
                rep.anchor_inherited.push_back(r.seq);
        }
        if (progress && rep.records % 100000 == 0) progress(rep.records, total);
    }
    if (progress) progress(rep.records, total);
    if (disputes > 0)
        add_problem(first_dispute, std::to_string(disputes) + " record(s) from here on say the broker found the statement "
                                   "of the chain's anchor not authenticated by the audit key file: records before the "
                                   "anchor may have been removed by hand");
    rep.head_hash = to_hex(prev);
    if (statement_overdue) --rep.overdue;
    rep.first_overdue_seq = rep.overdue == 0 ? 0 : first_overdue[first_overdue[0] == statement_seq && statement_overdue ? 1 : 0];
    // The anchor lives outside the chain; the chain itself must vouch for it, or rows before it
    // may have been deleted by hand and the anchor forged from the next row's hash.
    if (rep.anchor_seq) {
        rep.anchor_confirmed = restated_seq == *rep.anchor_seq && restated_hash == to_hex(anchor_hash);
        if (!rep.anchor_confirmed)
            add_problem(*rep.anchor_seq, "the chain's anchor (records up to here removed) is not stated by the trail "
                                         "itself: records may have been removed by hand");
        if (keys && rep.anchor_confirmed) {
            rep.anchor_authenticated = !restated_mac.empty() && restated_mac == keys->anchor_mac(*rep.anchor_seq, anchor_hash);
            if (!*rep.anchor_authenticated)
                add_problem(statement_seq, restated_mac.empty()
                                               ? "the record that states the chain's anchor carries no authentication: "
                                                 "written by hand to hide records removed before the anchor, or by a "
                                                 "version of the plugin before statements were authenticated"
                                               : "the record that states the chain's anchor is not authenticated by this "
                                                 "key file: written by hand to hide records removed before the anchor");
        }
    }
    if (!sealed_refs.empty() && has_table(db, "audit_subject_keys")) {
        auto& key = db.cached("SELECT 1 FROM audit_subject_keys WHERE ref = ?");
        std::vector<std::pair<std::int64_t, std::string>> unaccounted;  // first seq, ref
        for (const auto& [ref, seqs] : sealed_refs) {
            key.bind(1, ref);
            const bool has_key = key.step();
            key.reset();
            if (has_key) continue;
            // A shred whose content retention removed may explain data sealed before it, not after.
            if (seqs.second < last_shred_tombstone) ++rep.keys_unaccounted;
            else unaccounted.emplace_back(seqs.first, ref);
        }
        std::sort(unaccounted.begin(), unaccounted.end());
        if (!unaccounted.empty()) {
            add_problem(unaccounted.front().first,
                        "the data key of " + std::to_string(unaccounted.size()) +
                            " subject(s) whose data is sealed from here on is missing, and no key_shredded record says "
                            "it was shredded: removed by hand (their records cannot be read)");
        }
    }
    if (keys) {
        // Envelopes no later key_shredded record explains. A shred whose record retention has
        // emptied may explain those before it (a subject's envelopes after its shred open under
        // its new key): a subject whose last such envelope comes before the last emptied shred is
        // only noted.
        std::uint64_t unexplained = 0, noted = 0;
        std::int64_t first_unexplained = 0;
        for (const auto& [ref, k] : data_keys) {
            if (k.unopened == 0) continue;
            if (k.last_unopened < last_shred_tombstone) {
                noted += k.unopened;
            } else {
                if (unexplained == 0 || k.first_unopened < first_unexplained) first_unexplained = k.first_unopened;
                unexplained += k.unopened;
            }
        }
        if (unexplained > 0)
            add_problem(first_unexplained,
                        std::to_string(unexplained) + " sealed part(s) from here on do not open under their subject's "
                        "data key as the file holds it, and no key_shredded record says the key went: the key was "
                        "deleted or replaced by hand, or damaged (the broker then logs that it \"cannot be opened\" "
                        "and seals new records under a new key); those records cannot be read");
        rep.envelopes_unexplained = noted;
    }
    if (has_table(db, "audit_meta")) {
        auto& last = db.cached("SELECT value FROM audit_meta WHERE key = 'last_seq'");
        if (last.step() && last.integer(0) <= LAST_SEQ && last.integer(0) > (rep.records ? rep.last_seq : expected - 1)) {
            const std::int64_t from = (rep.records ? rep.last_seq : expected - 1) + 1;
            add_problem(from, "records " + std::to_string(from) + ".." + std::to_string(last.integer(0)) +
                                  " are missing from the end of the trail");
        }
        last.reset();
    }
    return rep;
}

std::string export_subject(sqlite_db& db, const audit_keys& keys, const std::string& subject, std::int64_t now_ms,
                           const export_options& options) {
    constexpr std::int64_t CHUNK_ROWS = 2000;
    std::size_t size = 0;  // about what the document will take, to stop early when too large
    const auto grow = [&](std::size_t bytes) {
        size += bytes;
        if (options.max_bytes > 0 && size > options.max_bytes)
            throw export_error("the export is larger than " + std::to_string(options.max_bytes) + " bytes");
    };
    // Another key file names every subject differently: the export would find nothing and read as
    // "no data held" (GDPR Art. 15).
    if (written_with_other_key(db, keys))
        throw export_error("the key file is not the one this audit trail was written with: nothing in it can be "
                           "found or read with it");
    const std::string ref = keys.subject_ref(subject);
    const std::string raw_ref = ref_bytes(ref);
    wiped_json doc;
    doc["subject"] = wiped(subject);
    doc["subject_ref"] = wiped(ref);
    doc["generated_at_ms"] = now_ms;
    std::unique_ptr<gcm_sealer> sealer;
    if (has_table(db, "audit_subject_keys")) {
        auto& q = db.cached("SELECT wrapped FROM audit_subject_keys WHERE ref = ?");
        q.bind(1, ref);
        bool damaged = false;
        if (q.step()) {
            try {
                data_key k = keys.unwrap(q.blob(0), ref);
                sealer = std::make_unique<gcm_sealer>(k);
                OPENSSL_cleanse(k.data(), k.size());
            } catch (const audit_keys::key_not_opened&) {
                damaged = true;  // the records are counted unreadable; the rest of the export stands
            }
        }
        q.reset();
        doc["data_key"] = sealer    ? "present"
                          : damaged ? "present but damaged: it does not open (records sealed under it are unreadable)"
                                    : "absent (never recorded, or shredded)";
    } else {
        doc["data_key"] = "absent (never recorded, or shredded)";
    }
    wiped_json records = wiped_json::array();
    wiped_json recipients = wiped_json::object();
    std::set<std::int64_t> seqs;
    std::uint64_t unreadable = 0;
    if (has_table(db, "audit_records")) {
        sqlite_statement rows(db.handle(),
                              "SELECT seq, at_ms, kind, client_id, schema, detail, sealed,"
                              " CASE WHEN json_valid(detail) THEN json_extract(detail, '$.publish_seq') END FROM audit_records"
                              " WHERE seq > ? AND (sealed IS NOT NULL OR kind IN ('delivery', 'delivery_refused'))"
                              " ORDER BY seq LIMIT " + std::to_string(CHUNK_ROWS));
        std::int64_t after = std::numeric_limits<std::int64_t>::min();
        for (std::int64_t in_chunk = CHUNK_ROWS; in_chunk == CHUNK_ROWS;) {
            if (options.cancelled && options.cancelled->load()) throw export_error("the export was cancelled");
            rows.reset();  // ends the previous chunk's read transaction
            rows.bind(1, after);
            in_chunk = 0;
            while (rows.step()) {
                ++in_chunk;
                const std::int64_t seq = after = rows.integer(0);
                const std::string kind = rows.text(2);
                if (kind == "delivery" || kind == "delivery_refused") {
                    if (rows.is_null(7) || !seqs.count(rows.integer(7))) continue;
                    wiped_json& who = recipients[wiped(rows.text(3))];
                    if (who.is_null()) {
                        grow(96 + rows.text(3).size());
                        who = {{"delivered", 0}, {"refused", 0}, {"first_at_ms", rows.integer(1)}};
                    }
                    who[kind == "delivery" ? "delivered" : "refused"] = who[kind == "delivery" ? "delivered" : "refused"].get<std::uint64_t>() + 1;
                    who["last_at_ms"] = rows.integer(1);
                    continue;
                }
                const std::string sealed = rows.blob(6);
                for_each_envelope(sealed, [&](const envelope_view& e) {
                    if (e.ref != raw_ref) return;
                    std::string plain;
                    struct wipe_on_exit {  // GDPR Art. 32: no clear copy lingers, also when the export stops here
                        std::string& text;
                        ~wipe_on_exit() { OPENSSL_cleanse(text.data(), text.size()); }
                    } wipe{plain};
                    if (!sealer || !sealer->open(e.seal, envelope_aad(seq, raw_ref), plain)) {
                        ++unreadable;
                        return;
                    }
                    seqs.insert(seq);
                    const std::string detail_text = rows.text(5);
                    grow(160 + detail_text.size() + plain.size() + rows.text(3).size());
                    wiped_json detail = parse_or_text(detail_text);
                    if (options.schema_residencies && !rows.text(4).empty()) {
                        std::optional<std::string> stated;
                        if (detail.is_object() && detail.contains("residency")) {
                            const auto& residency = detail["residency"];
                            if (residency.is_string()) stated = std::string(residency.get<std::string_view>());
                            else if (residency.is_null()) stated = std::string();
                        }
                        options.schema_residencies->emplace(rows.text(4), std::move(stated));
                    }
                    wiped_json data = parse_or_text(plain);
                    // The topic is sealed only when it names the subject; otherwise it is in the detail.
                    if (data.is_object() && !data.contains("topic") && detail.is_object() && detail.contains("topic") &&
                        kind == "publish")
                        data["topic"] = detail["topic"];
                    records.push_back({{"seq", seq},
                                       {"at_ms", rows.integer(1)},
                                       {"kind", kind},
                                       {"client_id", wiped(rows.text(3))},
                                       {"schema", wiped(rows.text(4))},
                                       {"detail", std::move(detail)},
                                       {"data", std::move(data)}});
                });
            }
        }
        rows.reset();
    }
    doc["records"] = std::move(records);
    doc["unreadable_records"] = unreadable;
    doc["recipients"] = std::move(recipients);
    // GDPR Art. 15(1)(c), (g): the data map knows recipients the trail cannot tie to a publish
    // (retained messages delivered later, records past their retention) and the publishers, the
    // data's sources. Named there by the same reference as in the trail, or by an earlier name.
    if (has_table(db, "data_map")) {
        // role -> (holder, first seen); an opened topic may sit inside an element, so the vector wipes too
        using holder_seen = std::pair<wiped_string, std::int64_t>;
        std::map<std::string, std::vector<holder_seen, wiping_allocator<holder_seen>>> by_role;
        std::uint64_t sealed_unopened = 0;
        auto& q = db.cached("SELECT role, holder, first_seen_ms FROM data_map WHERE subject_ref = ?");
        std::vector<std::string> names{ref};
        for (const auto& name : options.data_map_names)
            if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
        if (options.data_map_by_id && !is_keyed_subject_name(subject) &&
            std::find(names.begin(), names.end(), subject) == names.end())
            names.push_back(subject);
        for (const auto& name : names) {
            q.bind(1, name);
            while (q.step()) {
                const std::string role = q.text(0);
                wiped_string holder = wiped(q.text(1));
                if (role == "retained" && topic_sealer::is_sealed(holder)) {
                    std::string topic;
                    const bool opened = (options.topic_opener && options.topic_opener->open(holder, topic)) ||
                                        (options.earlier_topic_opener && options.earlier_topic_opener->open(holder, topic));
                    holder = wiped(topic);
                    OPENSSL_cleanse(topic.data(), topic.size());
                    if (!opened) {
                        ++sealed_unopened;
                        continue;
                    }
                }
                grow(64 + holder.size());
                by_role[role].emplace_back(std::move(holder), q.integer(2));
            }
            q.reset();
        }
        wiped_json holders = wiped_json::object();
        for (const auto& [role, list_name, key] : {std::tuple<const char*, const char*, const char*>{"publisher", "publishers", "client_id"},
                                                   {"recipient", "recipients", "client_id"},
                                                   {"retained", "retained_topics", "topic"}}) {
            auto& found = by_role[role];
            // A holder seen under two names is listed once, first seen the earlier time.
            std::sort(found.begin(), found.end());
            found.erase(std::unique(found.begin(), found.end(), [](const holder_seen& a, const holder_seen& b) { return a.first == b.first; }),
                        found.end());
            wiped_json list = wiped_json::array();
            for (auto& [holder, first_seen] : found) list.push_back({{key, std::move(holder)}, {"first_seen_ms", first_seen}});
            holders[list_name] = std::move(list);
        }
        // Recipients that received the subject's data only under its pseudonym are recipients too
        // (GDPR Art. 4(5), 15(1)(c)); one that received the id as well is listed once, as above,
        // and one that published the data knows the id.
        auto& pseudonymous = by_role["pseudonymous_recipient"];
        if (!pseudonymous.empty()) {
            std::sort(pseudonymous.begin(), pseudonymous.end());
            wiped_json& recipients_list = holders["recipients"];
            // Pointers into the lists, not copies: a sort would move short ids through unwiped temporaries.
            using names = std::vector<const wiped_string*>;
            const auto by_name = [](const wiped_string* a, const wiped_string* b) { return *a < *b; };
            const auto sorted_names = [&](const wiped_json& list) {
                names out;
                for (const auto& h : list) out.push_back(&h["client_id"].get_ref<const wiped_string&>());
                std::sort(out.begin(), out.end(), by_name);
                return out;
            };
            const auto named = [&](const names& list, const wiped_string& name) {
                return std::binary_search(list.begin(), list.end(), &name, by_name);
            };
            const names listed = sorted_names(recipients_list), publishers = sorted_names(holders["publishers"]);
            std::vector<wiped_json> added;  // appended after the loop, which points into the list
            // Sorted, so a holder's earliest sighting comes first and its later ones follow it.
            for (std::size_t i = 0; i < pseudonymous.size(); ++i) {
                auto& [holder, first_seen] = pseudonymous[i];
                if (i > 0 && pseudonymous[i - 1].first == holder) continue;
                if (named(listed, holder)) {
                    // Received under the pseudonym first, the id later: a recipient since the first.
                    for (auto& r : recipients_list)
                        if (r["client_id"].get_ref<const wiped_string&>() == holder)
                            r["first_seen_ms"] = std::min(r["first_seen_ms"].get<std::int64_t>(), first_seen);
                    continue;
                }
                wiped_json entry = {{"client_id", holder}, {"first_seen_ms", first_seen}};
                if (!named(publishers, holder)) entry["by_pseudonym"] = true;
                added.push_back(std::move(entry));
            }
            for (auto& entry : added) recipients_list.push_back(std::move(entry));
            std::sort(recipients_list.begin(), recipients_list.end(),
                      [](const wiped_json& a, const wiped_json& b) { return a["client_id"] < b["client_id"]; });
        }
        if (sealed_unopened) holders["sealed_retained_topics"] = sealed_unopened;
        doc["holders"] = std::move(holders);
    }
    // Consent and bindings are kept in clear by the consent store (they are needed per message).
    if (has_table(db, "consent_events")) {
        wiped_json consent = wiped_json::array();
        auto& q = db.cached("SELECT purpose, granted, at_ms, operator, evidence FROM consent_events WHERE subject = ? ORDER BY at_ms, seq");
        q.bind(1, subject);
        while (q.step())
            consent.push_back({{"purpose", wiped(q.text(0))}, {"granted", q.integer(1) != 0}, {"at_ms", q.integer(2)},
                               {"operator", wiped(q.text(3))}, {"evidence", wiped(q.text(4))}});
        q.reset();
        doc["consent_history"] = std::move(consent);
    }
    if (has_table(db, "device_bindings")) {
        wiped_json bindings = wiped_json::array();
        auto& q = db.cached("SELECT client_id, bound_at_ms, operator FROM device_bindings WHERE subject = ? ORDER BY client_id");
        q.bind(1, subject);
        while (q.step())
            bindings.push_back({{"client_id", wiped(q.text(0))}, {"bound_at_ms", q.integer(1)}, {"operator", wiped(q.text(2))}});
        q.reset();
        doc["device_bindings"] = std::move(bindings);
    }
    if (options.granted_now) {
        wiped_json granted = wiped_json::array();
        for (const auto& purpose : *options.granted_now) granted.push_back(wiped(purpose));
        wiped_json held = wiped_json::array();
        for (const auto& purpose : options.held_now) held.push_back(wiped(purpose));
        doc["consent"] = {{"granted", std::move(granted)}, {"held", std::move(held)}};
    }
    const wiped_string text = doc.dump(options.indent);
    return std::string(text.data(), text.size());  // exactly its size: the caller wipes it
}

std::vector<report_row> audit_report(sqlite_db& db) {
    std::vector<report_row> out;
    if (!has_table(db, "audit_records")) throw storage_error("'" + db.path() + "' holds no audit trail");
    sqlite_statement q(db.handle(),
                       "SELECT date(at_ms / 1000, 'unixepoch') AS day, kind, coalesce(schema, ''),"
                       " coalesce(CASE WHEN json_valid(detail) THEN json_extract(detail, '$.reason') END, ''), count(*) FROM audit_records"
                       " WHERE digest IS NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4");
    while (q.step()) out.push_back({q.text(0), q.text(1), q.text(2), q.text(3), static_cast<std::uint64_t>(q.integer(4)), ""});
    // Fields removed or changed, per data category (location, health, identifier ...).
    sqlite_statement c(db.handle(),
                       "SELECT date(r.at_ms / 1000, 'unixepoch'), coalesce(r.schema, ''), c.key, sum(c.value)"
                       " FROM audit_records AS r,"
                       " json_each(CASE WHEN json_valid(r.detail) THEN r.detail ELSE '{}' END, '$.categories') AS c"
                       " WHERE r.digest IS NULL AND r.kind = 'publish' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
    while (c.step())
        out.push_back({c.text(0), "fields", c.text(1), "", static_cast<std::uint64_t>(c.integer(3)), c.text(2)});
    return out;
}

} // namespace gdpr
