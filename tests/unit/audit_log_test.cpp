#include <catch2/catch.hpp>

#include <future>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <limits>
#include <iterator>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "gdpr/audit_log.hpp"
#include "gdpr/audit_reader.hpp"
#include "gdpr/data_map.hpp"
#include "gdpr/session_recorder.hpp"
#include "gdpr/errors.hpp"
#include "test_support.hpp"

namespace {

using json = nlohmann::json;
constexpr std::int64_t DAY_MS = 86'400'000;

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// What verify reports at `seq` (all problems there, joined), or nothing.
std::string problems_at(const gdpr::verify_report& rep, std::int64_t seq) {
    std::string what;
    for (const auto& p : rep.problems)
        if (p.seq == seq) what += p.what + "\n";
    return what;
}

struct trail_fixture {
    test_support::temp_dir dir;
    std::string path = (dir.path() / "audit.db").string();
    std::shared_ptr<gdpr::audit_keys> keys = std::make_shared<gdpr::audit_keys>(std::string(32, 'k'));
    gdpr::audit_options options = [this] {
        gdpr::audit_options o;
        o.path = path;
        o.flush_period = std::chrono::milliseconds(20);
        return o;
    }();
    std::unique_ptr<gdpr::audit_log> log;

    void open() { log = gdpr::audit_log::open(options, keys); }
    void close() { log.reset(); }

    std::int64_t publish(const std::vector<std::string>& subjects, const std::string& value,
                         std::int64_t at = 0, std::int32_t retention_days = 0) {
        gdpr::audit_record r;
        r.at_ms = at ? at : now_ms();
        r.kind = gdpr::audit_kind::publish;
        r.client_id = "car-1";
        r.schema = "vehicle@1";
        r.detail = R"({"topic":"fleet/car-1/telemetry","dropped":["driver_name"]})";
        r.personal = json{{"payload", json{{"speed", value}}}}.dump();
        r.subjects = subjects;
        r.retention_days = retention_days;
        return log->append(std::move(r));
    }
    std::int64_t delivery(std::int64_t publish_seq, const std::string& to) {
        gdpr::audit_record r;
        r.at_ms = now_ms();
        r.kind = gdpr::audit_kind::delivery;
        r.client_id = to;
        r.detail = json{{"publish_seq", publish_seq}}.dump();
        return log->append(std::move(r));
    }
    // With the key file, as the broker's operator would run it; verify_without_key(): what
    // anyone without it can check.
    gdpr::verify_report verify(std::int64_t at = 0) {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        return gdpr::verify_audit_trail(db, {}, 20, at, keys.get());
    }
    gdpr::verify_report verify_without_key(std::int64_t at = 0) {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        return gdpr::verify_audit_trail(db, {}, 20, at);
    }
    json export_of(const std::string& subject) {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        return json::parse(gdpr::export_subject(db, *keys, subject, now_ms()));
    }
    // The first column of the first row of `sql`, read from the database file.
    std::int64_t scalar(const std::string& sql) {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(db.handle(), sql);
        REQUIRE(q.step());
        return q.integer(0);
    }
    bool live(std::int64_t seq) {
        return scalar("SELECT count(*) FROM audit_records WHERE digest IS NULL AND seq = " + std::to_string(seq)) == 1;
    }
    bool tombstoned(std::int64_t seq) {
        return scalar("SELECT count(*) FROM audit_records WHERE digest IS NOT NULL AND seq = " + std::to_string(seq)) == 1;
    }
    std::int64_t count_kind(const std::string& kind) {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(db.handle(), "SELECT count(*) FROM audit_records WHERE kind = ?");
        q.bind(1, kind);
        q.step();
        return q.integer(0);
    }
    // Another connection holding the write lock longer than the writer's busy timeout allows.
    std::unique_ptr<gdpr::sqlite_db> hold_write_lock() {
        auto holder = std::make_unique<gdpr::sqlite_db>(path);
        holder->exec("BEGIN IMMEDIATE");
        return holder;
    }
    // Until the writer reports that it cannot write (another connection holds the write lock).
    void wait_until_failing() {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (!log->stats().failing && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        REQUIRE(log->stats().failing);
    }
    void tamper(const std::string& sql) {
        gdpr::sqlite_db db(path);
        db.exec(sql);
    }
    // Recomputes every record's hash from the first, as someone rewriting the whole chain (or an
    // older writer, for a trail edited into the form it wrote) would have it.
    void rechain() {
        gdpr::sqlite_db db(path);
        db.exec("BEGIN");
        std::vector<std::pair<std::int64_t, gdpr::chain_hash>> hashes;
        {
            gdpr::sqlite_statement q(db.handle(), std::string("SELECT ") + gdpr::AUDIT_RECORD_COLUMNS +
                                                      ", digest FROM audit_records ORDER BY seq");
            gdpr::chain_hash previous{};
            while (q.step()) {
                const gdpr::stored_record r = gdpr::read_record_columns(q);
                gdpr::chain_hash digest = gdpr::content_digest(r);
                if (!q.is_null(10)) {
                    const std::string stored = q.blob(10);
                    std::copy(stored.begin(), stored.end(), digest.begin());
                }
                previous = gdpr::link_hash(previous, r, digest);
                hashes.emplace_back(r.seq, previous);
            }
        }
        gdpr::sqlite_statement update(db.handle(), "UPDATE audit_records SET hash = ? WHERE seq = ?");
        for (const auto& [seq, hash] : hashes) update.bind_blob(1, gdpr::as_bytes(hash)).bind(2, seq).run();
        db.exec("COMMIT");
    }
    // The trail as version 3 wrote it: key_shredded records carry no MAC, nothing states from
    // where they would, and it says it is version 3.
    void as_version_3() {
        tamper("UPDATE audit_records SET detail = json_remove(detail, '$.shred_mac', '$.shreds_authenticated_from');"
               "DELETE FROM audit_meta WHERE key = 'shreds_authenticated_from';"
               "UPDATE audit_meta SET value = 3 WHERE key = 'schema_version';");
        rechain();
    }
    // A version 3 trail holding alice's part (kept 30 days) and, after it, an older writer's
    // key_shredded record for her that retention has emptied (kept one day, as the trail's own
    // records): what the sweep at the returned time leaves. The trail is open afterwards.
    std::int64_t alice_part_behind_an_emptied_older_shred() {
        options.default_retention_days = 1;
        open();
        publish({"alice"}, "1", 0, 30);
        const auto shred = log->shred_subject("alice");
        REQUIRE(log->flush());
        close();
        const std::string seq = std::to_string(shred);
        tamper("UPDATE audit_records SET expires_ms = at_ms + " + std::to_string(DAY_MS) + " WHERE seq = " + seq +
               ";INSERT INTO audit_expiry(days, bucket, first_seq, last_seq) SELECT 1, expires_ms / 3600000, seq, seq"
               " FROM audit_records WHERE seq = " + seq +
               " ON CONFLICT(days, bucket) DO UPDATE SET first_seq = min(first_seq, excluded.first_seq),"
               " last_seq = max(last_seq, excluded.last_seq)");
        as_version_3();
        open();
        const std::int64_t later = now_ms() + 2 * DAY_MS;
        log->sweep(later);
        REQUIRE(log->flush());
        return later;
    }
    // Appends `r` as the next record, correctly chained: what anyone able to write the file can
    // do. With `digest`, in the form retention leaves (content removed). Returns its seq.
    std::int64_t append_by_hand(gdpr::stored_record r, const std::optional<gdpr::chain_hash>& digest = {}) {
        gdpr::sqlite_db db(path);
        gdpr::chain_hash previous{};
        {
            gdpr::sqlite_statement q(db.handle(), "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1");
            REQUIRE(q.step());
            r.seq = q.integer(0) + 1;
            const std::string hash = q.blob(1);
            std::copy(hash.begin(), hash.end(), previous.begin());
        }
        const auto link = gdpr::link_hash(previous, r, digest ? *digest : gdpr::content_digest(r));
        gdpr::sqlite_statement insert(db.handle(), "INSERT INTO audit_records(seq, at_ms, kind, expires_ms, detail, digest, hash)"
                                                   " VALUES (?, ?, ?, ?, ?, ?, ?)");
        insert.bind(1, r.seq).bind(2, r.at_ms).bind(3, r.kind).bind(4, r.expires_ms);
        if (digest) insert.bind_null(5).bind_blob(6, gdpr::as_bytes(*digest));
        else insert.bind(5, r.detail).bind_null(6);
        insert.bind_blob(7, gdpr::as_bytes(link)).run();
        db.exec("UPDATE audit_meta SET value = " + std::to_string(r.seq) + " WHERE key = 'last_seq'");
        return r.seq;
    }
    std::int64_t append_shred_by_hand(const json& detail) {
        gdpr::stored_record forged;
        forged.at_ms = now_ms();
        forged.kind = "key_shredded";
        forged.expires_ms = now_ms() + 365 * DAY_MS;
        forged.detail = detail.dump();
        return append_by_hand(forged);
    }
};

} // namespace

TEST_CASE_METHOD(trail_fixture, "a written trail verifies, with sequence numbers in order", "[audit]") {
    open();
    std::int64_t first = publish({"alice"}, "50");
    for (int i = 0; i < 100; ++i) publish({"alice"}, std::to_string(i));
    REQUIRE(first == 2);  // 1 is writer_started
    REQUIRE(log->flush());
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.complete());
    CHECK(rep.records == 102);
    CHECK(rep.first_seq == 1);
    CHECK(rep.last_seq == 102);
}

TEST_CASE_METHOD(trail_fixture, "verify names a modified record", "[audit]") {
    open();
    for (int i = 0; i < 10; ++i) publish({"alice"}, std::to_string(i));
    REQUIRE(log->flush());
    close();
    tamper("UPDATE audit_records SET detail = '{\"topic\":\"other\"}' WHERE seq = 5");
    const auto rep = verify();
    REQUIRE_FALSE(rep.intact());
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].seq == 5);
    CHECK_THAT(rep.problems[0].what, Catch::Contains("modified"));
}

TEST_CASE_METHOD(trail_fixture, "verify names a deleted record, and one removed from the start", "[audit]") {
    open();
    for (int i = 0; i < 10; ++i) publish({"alice"}, std::to_string(i));
    REQUIRE(log->flush());
    close();
    SECTION("in the middle") {
        tamper("DELETE FROM audit_records WHERE seq = 7");
        const auto rep = verify();
        REQUIRE(rep.problems.size() == 1);
        CHECK(rep.problems[0].seq == 7);
        CHECK_THAT(rep.problems[0].what, Catch::Contains("missing"));
    }
    SECTION("at the start") {
        tamper("DELETE FROM audit_records WHERE seq <= 2");
        const auto rep = verify();
        REQUIRE(rep.problems.size() == 1);
        CHECK(rep.problems[0].seq == 1);
    }
    SECTION("a rewritten hash alone breaks the next link") {
        tamper("UPDATE audit_records SET hash = zeroblob(32) WHERE seq = 4");
        const auto rep = verify();
        REQUIRE_FALSE(rep.intact());
        CHECK(rep.problems[0].seq == 4);
    }
}

TEST_CASE_METHOD(trail_fixture, "the chain continues across restarts", "[audit]") {
    open();
    publish({"alice"}, "1");
    close();
    open();
    publish({"alice"}, "2");
    REQUIRE(log->flush());
    close();
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.records == 4);  // two writer_started, two publishes
}

TEST_CASE_METHOD(trail_fixture, "personal data is sealed per subject and exported decrypted", "[audit][export]") {
    open();
    const auto p1 = publish({"alice"}, "61");
    publish({"alice", "bob"}, "62");
    publish({"bob"}, "63");
    delivery(p1, "dashboard");
    REQUIRE(log->flush());
    close();
    {
        std::ifstream in(path, std::ios::binary);
        const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        CHECK(file.find("alice") == std::string::npos);
        CHECK(file.find("\"speed\"") == std::string::npos);
    }
    const json alice = export_of("alice");
    REQUIRE(alice["records"].size() == 2);
    CHECK(alice["records"][0]["data"]["payload"]["speed"] == "61");
    CHECK(alice["records"][1]["data"]["payload"]["speed"] == "62");
    CHECK(alice["recipients"]["dashboard"]["delivered"] == 1);
    CHECK(alice["unreadable_records"] == 0);
    CHECK(export_of("bob")["records"].size() == 2);
    CHECK(export_of("carol")["records"].empty());
    // The compact form (the control API's) is the same document on one line.
    gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
    gdpr::export_options compact_options;
    compact_options.indent = -1;
    const std::string compact = gdpr::export_subject(db, *keys, "alice", now_ms(), compact_options);
    CHECK(compact.find('\n') == std::string::npos);
    json same = json::parse(compact);
    same["generated_at_ms"] = alice["generated_at_ms"];
    CHECK(same == alice);
    // Live consent is the caller's to give: an offline reader has only the history.
    CHECK_FALSE(alice.contains("consent"));
    gdpr::export_options with_consent;
    with_consent.granted_now = std::vector<std::string>{"fleet-operations", "insurance"};
    with_consent.held_now = {"marketing"};
    const json consented = json::parse(gdpr::export_subject(db, *keys, "alice", now_ms(), with_consent));
    CHECK(consented["consent"] == json{{"granted", {"fleet-operations", "insurance"}}, {"held", {"marketing"}}});
    CHECK(consented["records"] == alice["records"]);
    with_consent.granted_now->clear();
    CHECK(json::parse(gdpr::export_subject(db, *keys, "alice", now_ms(), with_consent))["consent"]["granted"] == json::array());
    // Another key file would find nothing and say so as if nothing were held (GDPR Art. 15).
    const gdpr::audit_keys other_keys(std::string(32, 'o'));
    CHECK_THROWS_WITH(gdpr::export_subject(db, other_keys, "alice", now_ms(), compact_options),
                      Catch::Contains("not the one this audit trail was written with"));
}

TEST_CASE_METHOD(trail_fixture, "a shredded subject exports nothing readable and the chain still verifies", "[audit][shred]") {
    open();
    publish({"alice"}, "61");
    publish({"alice", "bob"}, "62");
    REQUIRE(log->flush());
    std::string wrapped;
    {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(db.handle(), "SELECT wrapped FROM audit_subject_keys WHERE ref = ?");
        q.bind(1, keys->subject_ref("alice"));
        REQUIRE(q.step());
        wrapped = q.blob(0);
    }
    log->shred_subject("alice");
    REQUIRE(log->flush());
    CHECK(log->take_problems().empty());  // the checkpoint went through
    // secure_delete and the checkpoint leave no copy of the wrapped key in the files, even while
    // the writer keeps them open.
    for (const auto* suffix : {"", "-wal"}) {
        std::ifstream in(path + suffix, std::ios::binary);
        const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        CHECK(file.find(wrapped) == std::string::npos);
    }
    const auto stats = log->stats();
    CHECK(stats.keys_shredded == 1);
    const json alice = export_of("alice");
    CHECK(alice["records"].empty());
    CHECK(alice["unreadable_records"] == 2);
    CHECK(export_of("bob")["records"].size() == 1);  // bob's own envelope is untouched
    const auto rep = verify();
    CHECK(rep.intact());
    close();
}

TEST_CASE_METHOD(trail_fixture, "a shredded key counts as destroyed only once the write-ahead log no longer holds it",
                 "[audit][shred]") {
    options.wipe_alert_after = std::chrono::milliseconds(0);  // reported at the first failure
    open();
    publish({"alice"}, "61");
    REQUIRE(log->flush());
    std::int64_t shred_seq = 0;
    {
        // A reader on an older snapshot (an export, gdprctl verify) keeps the log from being truncated.
        gdpr::sqlite_db reader(path, gdpr::sqlite_db::read_only);
        reader.exec("BEGIN");
        gdpr::sqlite_statement q(reader.handle(), "SELECT count(*) FROM audit_records");
        REQUIRE(q.step());
        shred_seq = log->shred_subject("alice");
        publish({"bob"}, "62");
        const auto started = std::chrono::steady_clock::now();
        REQUIRE(log->flush());
        CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));  // the writer does not wait on the reader
        CHECK(log->committed_through() > shred_seq);
        CHECK(log->shredded_through() < shred_seq);
        const auto problems = log->take_problems();
        REQUIRE(problems.size() == 1);
        CHECK_THAT(problems[0], Catch::Contains("stays in the database's write-ahead log"));
        q.reset();
        reader.exec("COMMIT");
    }
    // Tried again while idle: the reader gone, the log is truncated and the key counts as destroyed.
    for (int i = 0; i < 100 && log->shredded_through() < shred_seq; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(log->shredded_through() >= shred_seq);
    CHECK_THAT(log->take_problems().at(0), Catch::Contains("gone from the write-ahead log too"));
    close();
}

TEST_CASE_METHOD(trail_fixture, "a damaged data key row is reported and does not stop the trail", "[audit][failure]") {
    open();
    publish({"alice"}, "before");
    publish({"bob"}, "b");
    REQUIRE(log->flush());
    close();
    tamper("UPDATE audit_subject_keys SET wrapped = zeroblob(60) WHERE ref = '" + keys->subject_ref("alice") + "'");
    open();
    publish({"alice"}, "after");
    publish({"bob"}, "b2");
    REQUIRE(log->flush());  // written, not retried for ever
    const auto problems = log->take_problems();
    REQUIRE(problems.size() == 1);
    CHECK_THAT(problems[0], Catch::Contains("cannot be opened"));
    CHECK(problems[0].find("alice") == std::string::npos);
    close();
    // The chain is intact; with the key file, the record sealed under the damaged key is reported.
    CHECK(verify_without_key().intact());
    const auto rep = verify();
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].seq == 2);
    CHECK_THAT(rep.problems[0].what, Catch::Contains("1 sealed part(s) from here on do not open"));
    const json alice = export_of("alice");
    REQUIRE(alice["records"].size() == 1);  // what was sealed under the damaged key stays unreadable
    CHECK(alice["records"][0]["data"]["payload"]["speed"] == "after");
    CHECK(export_of("bob")["records"].size() == 2);
}

TEST_CASE_METHOD(trail_fixture, "a damaged row spoils only itself: exports and the report go on around it", "[audit][export]") {
    open();
    const auto p1 = publish({"alice"}, "1");
    publish({"bob"}, "2");
    delivery(p1, "dashboard");
    REQUIRE(log->flush());
    close();
    tamper("UPDATE audit_records SET detail = '{not json' WHERE kind = 'delivery'");
    tamper("UPDATE audit_subject_keys SET wrapped = zeroblob(60) WHERE ref = '" + keys->subject_ref("alice") + "'");
    CHECK_FALSE(verify().intact());  // the edited delivery
    const json alice = export_of("alice");
    CHECK_THAT(alice["data_key"].get<std::string>(), Catch::Contains("damaged"));
    CHECK(alice["records"].empty());
    CHECK(alice["unreadable_records"] == 1);
    const json bob = export_of("bob");
    REQUIRE(bob["records"].size() == 1);
    CHECK(bob["records"][0]["data"]["payload"]["speed"] == "2");
    gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
    CHECK_FALSE(gdpr::audit_report(db).empty());
}

TEST_CASE_METHOD(trail_fixture, "a data key deleted by hand, without a key_shredded record, is reported", "[audit][shred]") {
    open();
    publish({"alice"}, "1");
    publish({"bob"}, "2");
    log->shred_subject("bob");  // shredded the proper way: accounted for
    REQUIRE(log->flush());
    close();
    CHECK(verify().intact());
    tamper("DELETE FROM audit_subject_keys WHERE ref = '" + keys->subject_ref("alice") + "'");
    const auto rep = verify_without_key();
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].seq == 2);  // alice's first sealed record
    CHECK_THAT(rep.problems[0].what, Catch::Contains("data key of 1 subject(s)"));

    SECTION("and when the writer has made the subject a new key since, the key file still tells") {
        open();
        publish({"alice"}, "3");
        REQUIRE(log->flush());
        close();
        CHECK(verify_without_key().intact());  // a key row for every subject again
        const auto keyed = verify();
        REQUIRE(keyed.problems.size() == 1);
        CHECK(keyed.problems[0].seq == 2);
        CHECK_THAT(keyed.problems[0].what, Catch::Contains("do not open under their subject's data key"));
    }
    SECTION("a key row edited by hand is found with the key file before anything writes again") {
        tamper("DELETE FROM audit_subject_keys");
        open();
        publish({"alice"}, "3");
        REQUIRE(log->flush());
        close();
        tamper("UPDATE audit_subject_keys SET wrapped = zeroblob(60)");
        CHECK(verify_without_key().intact());
        CHECK_FALSE(verify().intact());
    }
}

TEST_CASE_METHOD(trail_fixture, "a key_shredded record appended by hand to explain away a replaced data key is caught with the key file",
                 "[audit][shred]") {
    open();
    publish({"alice"}, "1");
    publish({"bob"}, "2");
    log->shred_subject("bob");  // the broker's own shred: authenticated
    REQUIRE(log->flush());
    close();
    // alice's key replaced by hand: the writer makes her a new one at the next publish.
    tamper("DELETE FROM audit_subject_keys WHERE ref = '" + keys->subject_ref("alice") + "'");
    open();
    publish({"alice"}, "3");
    REQUIRE(log->flush());
    close();
    REQUIRE_FALSE(verify().intact());
    const std::string ref = keys->subject_ref("alice");

    SECTION("without authentication") {
        const auto forged = append_shred_by_hand(json{{"subject_ref", ref}, {"key_existed", true}});
        CHECK(verify_without_key().intact());  // all a chain without a key can tell
        const auto rep = verify();
        REQUIRE(rep.problems.size() == 2);
        CHECK_THAT(problems_at(rep, forged), Catch::Contains("key_shredded record carries no authentication"));
        // alice's part sealed under the key that went stays unexplained
        CHECK_THAT(problems_at(rep, 2), Catch::Contains("do not open under their subject's data key"));
        CHECK(rep.shreds_inherited.empty());
        SECTION("and the marker beside the chain raised past it: what the writer stated still holds") {
            tamper("UPDATE audit_meta SET value = " + std::to_string(forged + 1) + " WHERE key = 'shreds_authenticated_from'");
            const auto raised = verify();
            CHECK(raised.shreds_inherited.empty());
            CHECK_THAT(problems_at(raised, forged), Catch::Contains("key_shredded record carries no authentication"));
            CHECK_THAT(problems_at(raised, 1), Catch::Contains("changed by hand"));  // the first writer_started says 1
        }
    }
    SECTION("with a MAC the key file did not make") {
        const auto forged = append_shred_by_hand(
            json{{"subject_ref", ref}, {"key_existed", true}, {"shred_mac", keys->shred_mac(4, ref, true)}});
        const auto rep = verify();
        REQUIRE(rep.problems.size() == 2);
        CHECK_THAT(problems_at(rep, forged), Catch::Contains("not authenticated by this key file"));
        CHECK_THAT(problems_at(rep, 2), Catch::Contains("do not open under their subject's data key"));
    }
    SECTION("in the form retention leaves, its content already removed") {
        gdpr::stored_record forged;
        forged.at_ms = now_ms() - 2 * DAY_MS;
        forged.kind = "key_shredded";
        forged.expires_ms = now_ms() - DAY_MS;
        append_by_hand(forged, gdpr::chain_hash{});
        const auto rep = verify();
        CHECK_THAT(problems_at(rep, 2), Catch::Contains("do not open under their subject's data key"));
        CHECK(rep.envelopes_unexplained == 0);
    }
    SECTION("the broker's own record, copied to the end, does not authenticate there") {
        std::string bob_detail;
        {
            gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
            gdpr::sqlite_statement q(db.handle(), "SELECT detail FROM audit_records WHERE kind = 'key_shredded'");
            REQUIRE(q.step());
            bob_detail = q.text(0);
        }
        const auto forged = append_shred_by_hand(json::parse(bob_detail));
        CHECK_THAT(problems_at(verify(), forged), Catch::Contains("not authenticated by this key file"));
    }
}

TEST_CASE_METHOD(trail_fixture, "a shred that found no data key where data was sealed tells of a key deleted by hand",
                 "[audit][shred]") {
    open();
    publish({"alice"}, "1");
    log->shred_subject("carol");  // never had data: no key, nothing to explain
    log->shred_subject("bob");
    log->shred_subject("bob");  // again: the first took the key
    REQUIRE(log->flush());
    close();
    CHECK(verify().intact());
    tamper("DELETE FROM audit_subject_keys WHERE ref = '" + keys->subject_ref("alice") + "'");
    open();
    log->shred_subject("alice");  // an erasure afterwards finds no key to shred
    REQUIRE(log->flush());
    close();
    const auto rep = verify();
    INFO(rep.problems.size());
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].seq > 2);
    CHECK_THAT(rep.problems[0].what, Catch::Contains("says the subject had no data key, yet records 2..2"));
    CHECK(verify_without_key().intact());  // without the key file, a shred's word is all there is
}

TEST_CASE_METHOD(trail_fixture, "a shred explains only the data sealed before it, not a key deleted after the subject came back",
                 "[audit][shred]") {
    open();
    publish({"alice"}, "1");
    log->shred_subject("alice");
    publish({"alice"}, "2");  // under her new key
    REQUIRE(log->flush());
    close();
    CHECK(verify().intact());
    tamper("DELETE FROM audit_subject_keys WHERE ref = '" + keys->subject_ref("alice") + "'");
    const auto rep = verify_without_key();
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].seq == 4);  // her first part after the shred
    CHECK_THAT(rep.problems[0].what, Catch::Contains("data key of 1 subject(s)"));
}

TEST_CASE_METHOD(trail_fixture, "the boundary of authenticated key_shredded records is restored from the trail's statements",
                 "[audit][shred][retention]") {
    options.default_retention_days = 1;
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 3; ++i) publish({"alice"}, "old", old, 7);
    publish({"bob"}, "kept", 0, 30);
    REQUIRE(log->flush());
    log->sweep(now_ms() + 2 * DAY_MS);  // anchors the chain: a retention record states it, and the boundary
    REQUIRE(log->flush());
    close();
    REQUIRE(scalar("SELECT count(*) FROM audit_anchor") == 1);
    // Passed off as an upgrade from version 3, which would excuse every key_shredded record so far.
    tamper("DELETE FROM audit_meta WHERE key = 'shreds_authenticated_from';"
           "UPDATE audit_meta SET value = 3 WHERE key = 'schema_version';");
    open();
    CHECK_THAT(log->take_problems().at(0), Catch::Contains("removed by hand"));
    close();
    CHECK(scalar("SELECT value FROM audit_meta WHERE key = 'shreds_authenticated_from'") == 1);
    // Raised instead: the same.
    tamper("UPDATE audit_meta SET value = 1000 WHERE key = 'shreds_authenticated_from'");
    std::string problems;
    for (const auto& p : verify_without_key(now_ms() + 2 * DAY_MS).problems) problems += p.what;
    CHECK_THAT(problems, Catch::Contains("changed by hand"));
    open();
    CHECK_THAT(log->take_problems().at(0), Catch::Contains("raised by hand"));
    close();
    CHECK(scalar("SELECT value FROM audit_meta WHERE key = 'shreds_authenticated_from'") == 1);
}

TEST_CASE_METHOD(trail_fixture, "a statement of the boundary past its own record is no writer's and is passed over",
                 "[audit][shred]") {
    open();
    publish({"alice"}, "1");
    REQUIRE(log->flush());
    close();
    // A version 3 trail, into which a statement is planted before its first start as version 4.
    as_version_3();
    gdpr::stored_record planted;
    planted.at_ms = now_ms();
    planted.kind = "writer_started";
    planted.expires_ms = now_ms() + 365 * DAY_MS;
    planted.detail = json{{"shreds_authenticated_from", 1'000'000'000'000LL}}.dump();
    const auto planted_seq = append_by_hand(planted);
    open();
    CHECK(log->take_problems().empty());
    close();
    CHECK(scalar("SELECT value FROM audit_meta WHERE key = 'shreds_authenticated_from'") == planted_seq + 1);
    const auto forged = append_shred_by_hand(json{{"subject_ref", keys->subject_ref("alice")}, {"key_existed", true}});
    CHECK_THAT(problems_at(verify(), forged), Catch::Contains("carries no authentication"));
}

TEST_CASE_METHOD(trail_fixture, "an upgrade whose start stopped before its first record keeps its boundary, one past the trail does not",
                 "[audit][shred]") {
    open();
    publish({"alice"}, "1");
    const auto alice_shred = log->shred_subject("alice");
    REQUIRE(log->flush());
    close();
    as_version_3();
    const std::int64_t last = scalar("SELECT max(seq) FROM audit_records");
    // As the upgrading start commits it, before its writer_started record is written.
    tamper("UPDATE audit_meta SET value = 4 WHERE key = 'schema_version';"
           "INSERT INTO audit_meta(key, value) VALUES ('shreds_authenticated_from', " + std::to_string(last + 1) + ")");
    auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.shreds_inherited == std::vector<std::int64_t>{alice_shred});
    // Past the next record to be written, it is no writer's: verify holds every record to it, and
    // the next start resets it.
    tamper("UPDATE audit_meta SET value = " + std::to_string(last + 100) + " WHERE key = 'shreds_authenticated_from'");
    CHECK_THAT(problems_at(verify(), alice_shred), Catch::Contains("carries no authentication"));
    open();
    CHECK_THAT(log->take_problems().at(0), Catch::Contains("which the trail has not reached"));
    close();
    CHECK(scalar("SELECT value FROM audit_meta WHERE key = 'shreds_authenticated_from'") == 1);
    CHECK_THAT(problems_at(verify(), alice_shred), Catch::Contains("carries no authentication"));
}

TEST_CASE_METHOD(trail_fixture, "key_shredded records of a trail an older version wrote are noted, and later ones authenticated",
                 "[audit][shred]") {
    open();
    publish({"alice"}, "1");
    const auto alice_shred = log->shred_subject("alice");
    publish({"bob"}, "2");
    REQUIRE(log->flush());
    close();
    as_version_3();
    auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.shreds_inherited == std::vector<std::int64_t>{alice_shred});

    open();  // upgrades the trail
    CHECK(log->take_problems().empty());
    publish({"bob"}, "3");
    const auto bob_shred = log->shred_subject("bob");
    REQUIRE(log->flush());
    close();
    CHECK(scalar("SELECT value FROM audit_meta WHERE key = 'schema_version'") == gdpr::audit_log::SCHEMA_VERSION);
    // From the upgrading start's writer_started record on, which says so.
    const std::int64_t upgraded_at = scalar("SELECT max(seq) FROM audit_records WHERE kind = 'writer_started'");
    CHECK(upgraded_at > alice_shred);
    CHECK(scalar("SELECT value FROM audit_meta WHERE key = 'shreds_authenticated_from'") == upgraded_at);
    CHECK(scalar("SELECT json_extract(detail, '$.shreds_authenticated_from') FROM audit_records WHERE seq = " +
                 std::to_string(upgraded_at)) == upgraded_at);
    rep = verify();
    CHECK(rep.intact());
    CHECK(rep.shreds_inherited == std::vector<std::int64_t>{alice_shred});  // bob's is the broker's, authenticated
    CHECK(bob_shred > alice_shred);
    SECTION("one appended by hand now, without a MAC, is no older writer's") {
        const auto forged = append_shred_by_hand(json{{"subject_ref", keys->subject_ref("carol")}, {"key_existed", false}});
        CHECK_THAT(problems_at(verify(), forged), Catch::Contains("carries no authentication"));
    }
    SECTION("with the marker beside the chain removed or raised, the trail's own statements hold") {
        const bool raise = GENERATE(false, true);
        tamper(raise ? "UPDATE audit_meta SET value = 1000 WHERE key = 'shreds_authenticated_from'"
                     : "DELETE FROM audit_meta WHERE key = 'shreds_authenticated_from'");
        const auto tampered = verify();
        CHECK_THAT(problems_at(tampered, upgraded_at), Catch::Contains("changed by hand"));
        CHECK(tampered.shreds_inherited == std::vector<std::int64_t>{alice_shred});
        open();
        CHECK_THAT(log->take_problems().at(0), Catch::Contains(raise ? "raised by hand" : "removed by hand"));
        close();
        CHECK(scalar("SELECT value FROM audit_meta WHERE key = 'shreds_authenticated_from'") == upgraded_at);
        const auto restored = verify();
        CHECK(restored.intact());
        CHECK(restored.shreds_inherited == std::vector<std::int64_t>{alice_shred});
    }
    SECTION("with no statement left in a version 4 trail, every record is held to authentication") {
        tamper("UPDATE audit_records SET detail = json_remove(detail, '$.shreds_authenticated_from')"
               " WHERE kind IN ('writer_started', 'retention')");
        rechain();
        CHECK_THAT(problems_at(verify(), alice_shred), Catch::Contains("carries no authentication"));
    }
}

TEST_CASE_METHOD(trail_fixture, "a key_shredded record is kept as long as any record written before it", "[audit][shred][retention]") {
    options.default_retention_days = 1;
    open();
    publish({"alice"}, "1", 0, 30);
    publish({"bob"}, "2", 0, 10);
    SECTION("written before") { REQUIRE(log->flush()); }
    SECTION("in the same batch") {}
    const auto shred = log->shred_subject("alice");
    REQUIRE(log->flush());
    // 30 days, or 31 when found by the hour of expiry of records written before (rounded up).
    const auto kept_days = scalar("SELECT (expires_ms - at_ms) / " + std::to_string(DAY_MS) + " FROM audit_records WHERE seq = " +
                                  std::to_string(shred));
    CHECK(kept_days >= 30);
    CHECK(kept_days <= 31);
    log->sweep(now_ms() + 11 * DAY_MS);
    REQUIRE(log->flush());
    // Later shreds are kept as long, not a day longer each (a shred is no record they explain).
    std::int64_t later_shred = 0;
    for (const auto* subject : {"bob", "carol", "dave"}) {
        later_shred = log->shred_subject(subject);
        REQUIRE(log->flush());
    }
    close();
    CHECK(live(shred));
    CHECK(verify(now_ms() + 11 * DAY_MS).intact());
    const auto expiry_of = [&](std::int64_t seq) {
        return scalar("SELECT expires_ms FROM audit_records WHERE seq = " + std::to_string(seq));
    };
    CHECK(expiry_of(later_shred) - expiry_of(shred) < DAY_MS);
}

TEST_CASE_METHOD(trail_fixture, "a trail that does not keep the latest expiry reads it from its records, shreds left out",
                 "[audit][shred][retention]") {
    options.default_retention_days = 1;
    open();
    publish({"alice"}, "1", 0, 30);
    const auto first = log->shred_subject("alice");
    REQUIRE(log->flush());
    close();
    // Kept by no earlier version, with a shred kept far longer than the records before it.
    tamper("DELETE FROM audit_meta WHERE key = 'latest_record_expiry_ms';"
           "UPDATE audit_records SET expires_ms = at_ms + 100 * " + std::to_string(DAY_MS) + " WHERE seq = " +
           std::to_string(first) +
           ";INSERT INTO audit_expiry(days, bucket, first_seq, last_seq) SELECT 100, expires_ms / 3600000, seq, seq"
           " FROM audit_records WHERE seq = " + std::to_string(first));
    rechain();
    open();
    const auto next = log->shred_subject("bob");
    REQUIRE(log->flush());
    close();
    const auto kept_days = scalar("SELECT (expires_ms - at_ms) / " + std::to_string(DAY_MS) +
                                  " FROM audit_records WHERE seq = " + std::to_string(next));
    CHECK(kept_days >= 30);
    CHECK(kept_days <= 31);
}

TEST_CASE_METHOD(trail_fixture, "a shred whose record retention emptied explains only the sealed parts before it",
                 "[audit][shred]") {
    const std::int64_t later = alice_part_behind_an_emptied_older_shred();
    publish({"alice"}, "1b", 0, 30);  // under her new key
    publish({"bob"}, "2", 0, 30);
    REQUIRE(log->flush());
    close();
    auto rep = verify(later);
    CHECK(rep.intact());
    CHECK(rep.envelopes_unexplained == 1);  // alice's first part: her emptied shred may explain it
    // bob's key replaced by hand after that shred: no emptied shred can explain his part.
    tamper("DELETE FROM audit_subject_keys WHERE ref = '" + keys->subject_ref("bob") + "'");
    open();
    publish({"bob"}, "3", 0, 30);
    REQUIRE(log->flush());
    close();
    rep = verify(later);
    REQUIRE_FALSE(rep.intact());
    CHECK_THAT(rep.problems[0].what, Catch::Contains("1 sealed part(s) from here on do not open"));
    // bob's key row gone altogether: his data was sealed after the emptied shred, which cannot explain it.
    tamper("DELETE FROM audit_subject_keys WHERE ref = '" + keys->subject_ref("bob") + "'");
    rep = verify_without_key(later);
    CHECK(rep.keys_unaccounted == 0);
    REQUIRE_FALSE(rep.intact());
    CHECK_THAT(rep.problems[0].what, Catch::Contains("data key of 1 subject(s)"));
}

TEST_CASE_METHOD(trail_fixture, "a shred that finds no key after an older writer's shred that retention emptied is honest",
                 "[audit][shred]") {
    const std::int64_t later = alice_part_behind_an_emptied_older_shred();
    log->shred_subject("alice");  // erased again: there is no key left to find
    REQUIRE(log->flush());
    close();
    auto rep = verify(later);
    CHECK(rep.intact());
    // Parts sealed after the emptied shred were under a key the writer made: one found missing
    // by a later shred was deleted by hand.
    open();
    publish({"alice"}, "2", 0, 30);
    REQUIRE(log->flush());
    close();
    tamper("DELETE FROM audit_subject_keys WHERE ref = '" + keys->subject_ref("alice") + "'");
    open();
    log->shred_subject("alice");
    REQUIRE(log->flush());
    close();
    rep = verify(later);
    REQUIRE_FALSE(rep.intact());
    CHECK_THAT(rep.problems.back().what, Catch::Contains("says the subject had no data key"));
}

TEST_CASE_METHOD(trail_fixture, "records written after a shred in the same batch use the subject's new key", "[audit][shred]") {
    open();
    publish({"alice"}, "before");
    log->shred_subject("alice");
    publish({"alice"}, "after");
    publish({"alice", "bob"}, "shared");
    REQUIRE(log->flush());
    const json alice = export_of("alice");
    REQUIRE(alice["records"].size() == 2);
    CHECK(alice["records"][0]["data"]["payload"]["speed"] == "after");
    CHECK(alice["records"][1]["data"]["payload"]["speed"] == "shared");
    CHECK(alice["unreadable_records"] == 1);
    CHECK(verify().intact());
    close();
}

TEST_CASE_METHOD(trail_fixture, "a batch of many chunks is sealed, chained and shredded in order", "[audit][shred]") {
    // More than three transactions' worth in one batch, so chunks are sealed ahead while the
    // previous one is inserted, with a shred in the middle that must not be planned ahead.
    options.queue_limit = 100000;
    options.flush_period = std::chrono::milliseconds(60000);
    options.transaction_records = 500;
    open();
    constexpr int N = 35000, SHRED_AT = 21000;
    for (int i = 0; i < N; ++i) {
        if (i == SHRED_AT) log->shred_subject("s7");
        publish({"s" + std::to_string(i % 50)}, std::to_string(i));
    }
    REQUIRE(log->flush());
    CHECK(log->stats().batches * 3 * options.transaction_records <= N);  // batches did span many chunks
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.complete());
    CHECK(rep.records == N + 2);  // writer_started and key_shredded
    const json s7 = export_of("s7");
    CHECK(s7["unreadable_records"] == SHRED_AT / 50);
    REQUIRE(s7["records"].size() == (N - SHRED_AT) / 50);
    CHECK(s7["records"][0]["data"]["payload"]["speed"] == std::to_string(SHRED_AT + 7));
    const json s8 = export_of("s8");
    REQUIRE(s8["records"].size() == N / 50);
    for (std::size_t k = 0; k < s8["records"].size(); ++k)
        CHECK(s8["records"][k]["data"]["payload"]["speed"] == std::to_string(8 + 50 * static_cast<int>(k)));
    close();
}

TEST_CASE_METHOD(trail_fixture, "retention removes expired content and leaves a verifiable chain", "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 5; ++i) publish({"alice"}, "old", old, 7);      // expired
    publish({"bob"}, "kept", old, 30);                                  // not yet
    for (int i = 0; i < 5; ++i) publish({"alice"}, "old2", old, 7);     // expired, after a live one
    REQUIRE(log->flush());
    // GDPR Art. 5(1)(e): content kept three days past its retention is noted until swept.
    const auto unswept = verify();
    CHECK(unswept.intact());
    CHECK(unswept.overdue == 10);
    CHECK(unswept.first_overdue_seq == 2);
    // writer_started (seq 1) has the default retention of 365 days: sweep as if two years passed
    // for the first part, then now.
    log->sweep(now_ms());
    REQUIRE(log->flush());
    auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.tombstones == 10);
    CHECK(rep.overdue == 0);
    CHECK(export_of("alice")["records"].empty());
    CHECK(export_of("bob")["records"].size() == 1);

    SECTION("compaction anchors the chain once the head of the trail has expired") {
        log->sweep(now_ms() + 400 * DAY_MS);
        REQUIRE(log->flush());
        close();
        rep = verify(now_ms() + 400 * DAY_MS);
        CHECK(rep.intact());
        REQUIRE(rep.anchor_seq);
        CHECK(rep.anchor_confirmed);
        CHECK(rep.first_seq == *rep.anchor_seq + 1);
        CHECK(rep.overdue == 0);
        open();  // its writer_started record states the anchor now
        publish({"carol"}, "new", now_ms() + 400 * DAY_MS, 7);
        REQUIRE(log->flush());
        close();
        // Long after, with no sweep since: every live record is overdue but the one that states
        // the anchor, which keeps its content until a newer one states it.
        const auto later = verify(now_ms() + 2000 * DAY_MS);
        CHECK(later.intact());
        CHECK(later.records - later.tombstones > 1);
        CHECK(later.overdue == later.records - later.tombstones - 1);
    }
    SECTION("content removed by hand before its retention ended is reported") {
        close();
        // Tombstone a live, unexpired record exactly as the sweeper would: only its expiry gives it away.
        gdpr::sqlite_db db(path);
        gdpr::stored_record r;
        {
            gdpr::sqlite_statement q(db.handle(), std::string("SELECT ") + gdpr::AUDIT_RECORD_COLUMNS +
                                                  " FROM audit_records WHERE digest IS NULL AND kind = 'publish' AND expires_ms > ?");
            q.bind(1, now_ms());
            REQUIRE(q.step());
            r = gdpr::read_record_columns(q);
        }
        const auto d = gdpr::content_digest(r);
        gdpr::sqlite_statement u(db.handle(), "UPDATE audit_records SET digest = ?, session = NULL, client_id = NULL, schema = NULL,"
                                              " detail = NULL, payload = NULL, sealed = NULL WHERE seq = ?");
        u.bind_blob(1, gdpr::as_bytes(d)).bind(2, r.seq).run();
        rep = verify();
        REQUIRE(rep.problems.size() == 1);
        CHECK(rep.problems[0].seq == r.seq);
        CHECK_THAT(rep.problems[0].what, Catch::Contains("before its retention period ended"));
    }
    SECTION("rows removed from the start with a forged anchor are reported, also after a restart") {
        log->sweep(now_ms() + 400 * DAY_MS);
        REQUIRE(log->flush());
        close();
        open();  // its writer_started record states the anchor again
        publish({"bob"}, "new");
        REQUIRE(log->flush());
        close();
        const auto honest = verify(now_ms() + 400 * DAY_MS);
        REQUIRE(honest.anchor_seq);
        const std::int64_t anchor = *honest.anchor_seq;
        std::string hash;
        {
            gdpr::sqlite_db db(path);
            gdpr::sqlite_statement q(db.handle(), "SELECT hash FROM audit_records WHERE seq = ?");
            q.bind(1, anchor + 1);
            REQUIRE(q.step());
            hash = q.blob(0);
            gdpr::sqlite_statement d(db.handle(), "DELETE FROM audit_records WHERE seq = ?");
            d.bind(1, anchor + 1).run();
            gdpr::sqlite_statement a(db.handle(), "UPDATE audit_anchor SET seq = ?, hash = ?");
            a.bind(1, anchor + 1).bind_blob(2, hash).run();
        }
        rep = verify(now_ms() + 400 * DAY_MS);
        REQUIRE_FALSE(rep.intact());
        CHECK_THAT(rep.problems[0].what, Catch::Contains("anchor"));
        // A restart must not vouch for the forged anchor: the writer puts back the one the trail
        // stated, says so, and verify names the row removed.
        open();
        const auto problems = log->take_problems();
        REQUIRE(problems.size() == 1);
        CHECK_THAT(problems[0], Catch::Contains("not the one the trail last stated"));
        REQUIRE(log->flush());
        close();
        rep = verify(now_ms() + 400 * DAY_MS);
        REQUIRE(rep.anchor_seq);
        CHECK(*rep.anchor_seq == anchor);
        CHECK(rep.anchor_confirmed);
        REQUIRE(rep.problems.size() == 1);
        CHECK(rep.problems[0].seq == anchor + 1);
        CHECK_THAT(rep.problems[0].what, Catch::Contains("missing (deleted)"));
    }
    SECTION("the record that states the anchor removed with the rows: the anchor is kept, never vouched for") {
        log->sweep(now_ms() + 400 * DAY_MS);
        REQUIRE(log->flush());
        publish({"bob"}, "new");
        REQUIRE(log->flush());
        close();
        const std::int64_t anchor = *verify(now_ms() + 400 * DAY_MS).anchor_seq;
        // The retention record right after the anchor goes, and the anchor is forged from it.
        const std::string removed = std::to_string(anchor + 1);
        tamper("UPDATE audit_anchor SET seq = " + removed + ", hash = (SELECT hash FROM audit_records WHERE seq = " + removed + ")");
        tamper("DELETE FROM audit_records WHERE seq = " + removed);
        open();
        CHECK_FALSE(log->take_problems().empty());
        REQUIRE(log->flush());
        close();
        rep = verify(now_ms() + 400 * DAY_MS);
        REQUIRE(rep.anchor_seq);
        // Stated since only as disputed: reported with or without the key, never authenticated.
        REQUIRE_FALSE(rep.problems.empty());
        CHECK_THAT(rep.problems[0].what, Catch::Contains("not authenticated by the audit key file"));
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        const auto keyed = gdpr::verify_audit_trail(db, {}, 20, now_ms() + 400 * DAY_MS, keys.get());
        REQUIRE(keyed.anchor_authenticated);
        CHECK_FALSE(*keyed.anchor_authenticated);
    }
}

TEST_CASE_METHOD(trail_fixture, "an anchor written by hand into a trail that never stated one is removed at the next start",
                 "[audit][retention]") {
    open();
    for (int i = 0; i < 5; ++i) publish({"alice"}, std::to_string(i));
    REQUIRE(log->flush());
    close();
    std::string hash;
    {
        gdpr::sqlite_db db(path);
        gdpr::sqlite_statement q(db.handle(), "SELECT hash FROM audit_records WHERE seq = 3");
        REQUIRE(q.step());
        hash = q.blob(0);
        db.exec("DELETE FROM audit_records WHERE seq <= 3");
        gdpr::sqlite_statement a(db.handle(), "INSERT INTO audit_anchor(id, seq, hash, at_ms) VALUES (1, 3, ?, 0)");
        a.bind_blob(1, hash).run();
    }
    CHECK_FALSE(verify().intact());
    open();
    CHECK_THAT(log->take_problems().at(0), Catch::Contains("stated by no record"));
    REQUIRE(log->flush());
    close();
    // Kept, but stated only as disputed: verify reports it, and the key file does not vouch for it.
    const auto rep = verify();
    REQUIRE(rep.anchor_seq);
    CHECK(*rep.anchor_seq == 3);
    REQUIRE_FALSE(rep.problems.empty());
    CHECK_THAT(rep.problems[0].what, Catch::Contains("not authenticated by the audit key file"));
    gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
    const auto keyed = gdpr::verify_audit_trail(db, {}, 20, 0, keys.get());
    REQUIRE(keyed.anchor_authenticated);
    CHECK_FALSE(*keyed.anchor_authenticated);
}

TEST_CASE_METHOD(trail_fixture, "records removed from the start behind a forged statement of the anchor are caught with the key file",
                 "[audit][retention]") {
    open();
    for (int i = 0; i < 5; ++i) publish({"alice"}, std::to_string(i));  // seq 2..6, none expired
    REQUIRE(log->flush());
    close();
    {
        // Remove seq 1..3, anchor the chain at 3 and append a retention record that states that
        // anchor, correctly chained: without a key, nothing in the file tells it from a sweep.
        gdpr::sqlite_db db(path);
        std::string hash3;
        {
            gdpr::sqlite_statement q(db.handle(), "SELECT hash FROM audit_records WHERE seq = 3");
            REQUIRE(q.step());
            hash3 = q.blob(0);
        }
        db.exec("DELETE FROM audit_records WHERE seq <= 3");
        gdpr::sqlite_statement a(db.handle(), "INSERT INTO audit_anchor(id, seq, hash, at_ms) VALUES (1, 3, ?, 0)");
        a.bind_blob(1, hash3).run();
        gdpr::stored_record forged;
        forged.at_ms = now_ms();
        forged.kind = "retention";
        forged.expires_ms = now_ms() + 365 * DAY_MS;
        forged.detail = json{{"tombstoned", 0}, {"swept_at_ms", now_ms()}, {"anchor_seq", 3}, {"anchor_hash", gdpr::to_hex(hash3)}}.dump();
        REQUIRE(append_by_hand(forged) == 7);
        db.exec("UPDATE audit_meta SET value = 7 WHERE key = 'anchor_statement_seq'");
    }
    const auto unkeyed = verify_without_key();
    CHECK(unkeyed.intact());  // what a chain without a key can tell
    CHECK(unkeyed.anchor_confirmed);
    gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
    const auto keyed = gdpr::verify_audit_trail(db, {}, 20, 0, keys.get());
    REQUIRE_FALSE(keyed.intact());
    CHECK(keyed.problems[0].seq == 7);
    CHECK_THAT(keyed.problems[0].what, Catch::Contains("carries no authentication"));
    REQUIRE(keyed.anchor_authenticated);
    CHECK_FALSE(*keyed.anchor_authenticated);
    SECTION("the broker does not vouch for it at its next start: it says so, and verify reports it without the key too") {
        open();
        CHECK_THAT(log->take_problems().at(0), Catch::Contains("not authenticated by the audit key file"));
        REQUIRE(log->flush());
        close();
        const auto after = verify();
        REQUIRE_FALSE(after.intact());
        CHECK_THAT(after.problems[0].what, Catch::Contains("not authenticated by the audit key file"));
        // Nor does a sweep that moves the anchor on from it vouch for the new one, now or after a restart.
        const std::int64_t later = now_ms() + 400 * DAY_MS;
        open();
        log->sweep(later);
        REQUIRE(log->flush());
        close();
        gdpr::sqlite_db moved(path, gdpr::sqlite_db::read_only);
        const auto swept = gdpr::verify_audit_trail(moved, {}, 20, later, keys.get());
        REQUIRE(swept.anchor_seq);
        CHECK(*swept.anchor_seq > 3);
        REQUIRE(swept.anchor_authenticated);
        CHECK_FALSE(*swept.anchor_authenticated);
        open();
        CHECK_THAT(log->take_problems().at(0), Catch::Contains("not authenticated by the audit key file"));
        close();
    }
    SECTION("in a trail an earlier version wrote, statements carry no authentication: taken once, then restated") {
        tamper("DELETE FROM audit_meta WHERE key = 'anchor_statements_authenticated'");
        open();
        CHECK(log->take_problems().empty());
        REQUIRE(log->flush());
        close();
        gdpr::sqlite_db again(path, gdpr::sqlite_db::read_only);
        const auto restated = gdpr::verify_audit_trail(again, {}, 20, 0, keys.get());
        CHECK(restated.intact());
        REQUIRE(restated.anchor_authenticated);
        CHECK(*restated.anchor_authenticated);
        // The chain says so: verify notes every start that took such a statement.
        CHECK(restated.anchor_inherited == std::vector<std::int64_t>{8});
    }
}

TEST_CASE_METHOD(trail_fixture, "anchors the broker states are authenticated, also one an earlier version stated",
                 "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 3; ++i) publish({"alice"}, "old", old, 7);
    publish({"bob"}, "kept");
    REQUIRE(log->flush());
    log->sweep(now_ms() + 400 * DAY_MS);
    REQUIRE(log->flush());
    close();
    auto keyed = [&] {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        return gdpr::verify_audit_trail(db, {}, 20, now_ms() + 400 * DAY_MS, keys.get());
    };
    auto rep = keyed();
    REQUIRE(rep.anchor_seq);
    CHECK(rep.intact());
    REQUIRE(rep.anchor_authenticated);
    CHECK(*rep.anchor_authenticated);
    // Another key file is refused rather than reported as a forgery.
    {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        const gdpr::audit_keys other(std::string(32, 'o'));
        CHECK_THROWS_WITH(gdpr::verify_audit_trail(db, {}, 20, 0, &other), Catch::Contains("not the one"));
    }
    // The next start restates it, authenticated too.
    open();
    CHECK(log->take_problems().empty());
    REQUIRE(log->flush());
    close();
    rep = keyed();
    CHECK(rep.intact());
    REQUIRE(rep.anchor_authenticated);
    CHECK(*rep.anchor_authenticated);
}

TEST_CASE_METHOD(trail_fixture, "the sweeper does not move the anchor over rows removed by hand", "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 20; ++i) publish({}, "x", old, 1);
    REQUIRE(log->flush());
    close();
    tamper("DELETE FROM audit_records WHERE seq BETWEEN 8 AND 10");
    open();
    const std::int64_t later = now_ms() + 400 * DAY_MS;
    log->sweep(later);
    REQUIRE(log->flush());
    close();
    const auto rep = verify(later);
    REQUIRE(rep.anchor_seq);
    CHECK(*rep.anchor_seq == 7);  // up to the hole, not past it
    CHECK(rep.anchor_confirmed);
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].seq == 8);
    CHECK_THAT(rep.problems[0].what, Catch::Contains("records 8..10 are missing"));
}

TEST_CASE_METHOD(trail_fixture, "a large sweep runs in steps, and each step that moves the anchor is a retention record",
                 "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 12000; ++i) publish({}, "x", old, 1);
    REQUIRE(log->flush());
    const std::int64_t later = now_ms() + 400 * DAY_MS;  // writer_started (365 days) expires too
    log->sweep(later);
    REQUIRE(log->flush());
    close();
    const auto rep = verify(later);
    CHECK(rep.intact());
    REQUIRE(rep.anchor_seq);
    CHECK(rep.anchor_confirmed);
    CHECK(*rep.anchor_seq == 12001);
    CHECK(rep.tombstones == 0);
    CHECK(count_kind("retention") == 3);  // anchors 5000, 10000, 12001: at most 5000 rows go per step
}

TEST_CASE_METHOD(trail_fixture, "a tombstone given content again by hand is reported, whichever column holds it",
                 "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    publish({"alice"}, "old", old, 7);
    publish({"alice"}, "new");
    REQUIRE(log->flush());
    log->sweep(now_ms());
    REQUIRE(log->flush());
    close();
    REQUIRE(verify().intact());
    REQUIRE(verify().tombstones == 1);
    for (const char* column : {"schema = 'Erika Mustermann +49 170 1234567'", "session = 42", "client_id = 'car-1'"}) {
        INFO(column);
        tamper(std::string("UPDATE audit_records SET ") + column + " WHERE digest IS NOT NULL");
        const auto rep = verify();
        REQUIRE_FALSE(rep.intact());
        CHECK_THAT(rep.problems[0].what, Catch::Contains("tombstone still holds content"));
        tamper("UPDATE audit_records SET schema = NULL, session = NULL, client_id = NULL WHERE digest IS NOT NULL");
        REQUIRE(verify().intact());
    }
}

TEST_CASE_METHOD(trail_fixture, "record numbers no writer gives are reported by verify and refused by the writer", "[audit]") {
    open();
    for (int i = 0; i < 3; ++i) publish({"alice"}, std::to_string(i));
    REQUIRE(log->flush());
    close();
    const std::string largest = std::to_string(std::numeric_limits<std::int64_t>::max());
    SECTION("the last record") {
        tamper("UPDATE audit_records SET seq = " + largest + " WHERE seq = (SELECT MAX(seq) FROM audit_records)");
        const auto rep = verify();
        REQUIRE_FALSE(rep.intact());
        CHECK_THAT(rep.problems[0].what, Catch::Contains("out of range"));
        CHECK_THROWS_WITH(open(), Catch::Contains("edited by hand"));
    }
    SECTION("the anchor") {
        tamper("INSERT OR REPLACE INTO audit_anchor(id, seq, hash, at_ms) VALUES (1, " + largest + ", zeroblob(32), 0)");
        const auto rep = verify();
        REQUIRE_FALSE(rep.intact());
        CHECK_THAT(rep.problems[0].what, Catch::Contains("no trail can reach"));
        // The rows after an impossible anchor are still checked from the start.
        CHECK(rep.records == 4);
    }
    SECTION("the nonce epoch") {
        tamper("UPDATE audit_meta SET value = -5 WHERE key = 'nonce_epoch'");
        CHECK_THROWS_WITH(open(), Catch::Contains("nonce epoch is negative"));
    }
}

TEST_CASE_METHOD(trail_fixture, "records cut off the end are reported, and numbering goes on after them", "[audit]") {
    open();
    for (int i = 0; i < 10; ++i) publish({"alice"}, std::to_string(i));
    REQUIRE(log->flush());
    close();
    tamper("DELETE FROM audit_records WHERE seq > 8");
    auto rep = verify();
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].seq == 9);
    CHECK_THAT(rep.problems[0].what, Catch::Contains("end of the trail"));
    open();
    CHECK_FALSE(log->take_problems().empty());
    REQUIRE(log->flush());
    close();
    rep = verify();
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].seq == 9);
    CHECK_THAT(rep.problems[0].what, Catch::Contains("missing"));
}

TEST_CASE_METHOD(trail_fixture, "a copy of the trail started again seals under nonces of its own", "[audit]") {
    open();
    publish({"alice"}, "1");
    REQUIRE(log->flush());
    close();
    namespace fs = std::filesystem;
    const std::string backup = path + ".backup";
    fs::copy_file(path, backup);
    REQUIRE_FALSE(fs::exists(path + "-wal"));  // closed: everything is in the file itself
    // The first envelope a start seals, for alice, whose data key the copy holds too.
    const auto first_nonce = [&] {
        open();
        const std::int64_t seq = publish({"alice"}, "2");
        REQUIRE(log->flush());
        close();
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(db.handle(), "SELECT sealed FROM audit_records WHERE seq = ?");
        q.bind(1, seq);
        REQUIRE(q.step());
        std::string nonce;
        REQUIRE(gdpr::for_each_envelope(q.blob(0), [&](const gdpr::envelope_view& e) {
            nonce = std::string(e.seal.substr(0, gdpr::gcm_sealer::NONCE_BYTES));
        }));
        return nonce;
    };
    const std::string later = first_nonce();
    fs::copy_file(backup, path, fs::copy_options::overwrite_existing);  // the backup restored
    const std::string restored = first_nonce();
    CHECK(later.substr(0, 4) == restored.substr(0, 4));  // the same epoch: the copy never saw the later start
    CHECK(later != restored);
}

TEST_CASE_METHOD(trail_fixture, "a different master key file is refused", "[audit][config]") {
    open();
    close();
    keys = std::make_shared<gdpr::audit_keys>(std::string(32, 'z'));
    CHECK_THROWS_WITH(open(), Catch::Contains("different audit key file"));
}

TEST_CASE_METHOD(trail_fixture, "a writer that cannot write keeps its records and refuses publishes once full", "[audit][overflow]") {
    options.queue_limit = 16;
    open();
    REQUIRE(log->flush());
    {
        const auto blocker = hold_write_lock();
        for (int i = 0; i < 40; ++i) publish({"alice"}, std::to_string(i));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (log->can_record_publish() && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        CHECK_FALSE(log->can_record_publish());
        CHECK(log->stats().failing);
        const auto problems = log->take_problems();
        REQUIRE_FALSE(problems.empty());
        CHECK_THAT(problems[0], Catch::Contains("cannot write the audit trail"));
        blocker->exec("ROLLBACK");
    }
    // The writer retries with backoff; once it gets through, nothing is missing.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!log->flush() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    REQUIRE(log->flush());
    CHECK(log->can_record_publish());
    CHECK(log->stats().dropped == 0);
    close();
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.records == 41);
}

TEST_CASE_METHOD(trail_fixture, "stopping a writer that cannot write gives up after the grace period and counts what is lost",
                 "[audit][overflow]") {
    options.queue_limit = 16;
    open();
    REQUIRE(log->flush());
    const auto blocker = hold_write_lock();
    for (int i = 0; i < 40; ++i) publish({"alice"}, std::to_string(i));
    wait_until_failing();
    for (int i = 0; i < 5; ++i) publish({"alice"}, "late");  // queued behind the failing batch
    auto stopped = std::async(std::launch::async, [&] { return log->stop(std::chrono::milliseconds(300)); });
    const bool returned = stopped.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
    blocker->exec("ROLLBACK");  // lets a writer that would never give up finish, so the test ends
    REQUIRE(returned);
    CHECK(stopped.get() == 45);
    const auto problems = log->take_problems();
    CHECK(std::any_of(problems.begin(), problems.end(), [](const std::string& p) {
        return p.find("stopped with 45 audit records unwritten, which are lost") != std::string::npos;
    }));
    close();
    CHECK(verify().intact());
}

TEST_CASE_METHOD(trail_fixture, "stopping a writer that can write again within the grace period loses nothing",
                 "[audit][overflow]") {
    open();
    REQUIRE(log->flush());
    auto blocker = hold_write_lock();
    for (int i = 0; i < 10; ++i) publish({"alice"}, std::to_string(i));
    wait_until_failing();
    auto stopped = std::async(std::launch::async, [&] { return log->stop(std::chrono::seconds(30)); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    blocker->exec("ROLLBACK");
    blocker.reset();
    CHECK(stopped.get() == 0);
    close();
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.records == 11);
}

TEST_CASE_METHOD(trail_fixture, "the drop policy counts what it drops and marks a gap", "[audit][overflow]") {
    options.overflow = gdpr::overflow_policy::drop;
    options.queue_limit = 8;
    options.flush_period = std::chrono::milliseconds(500);
    open();
    std::uint64_t dropped = 0;
    for (int i = 0; i < 200; ++i)
        if (publish({}, "x") == 0) ++dropped;
    REQUIRE(log->flush());
    if (publish({}, "after") == 0) ++dropped;
    REQUIRE(log->flush());
    REQUIRE(dropped > 0);
    CHECK(log->stats().dropped == dropped);
    CHECK_FALSE(log->take_problems().empty());
    close();
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK_FALSE(rep.complete());
    std::uint64_t declared = 0;
    for (const auto& g : rep.gaps) declared += g.second;
    CHECK(declared == dropped);
    // A gap record edited to say something else: reported by seq, verification goes on.
    REQUIRE_FALSE(rep.gaps.empty());
    const std::int64_t gap = rep.gaps.front().first;
    tamper("UPDATE audit_records SET detail = '{\"dropped\":\"none\"}' WHERE seq = " + std::to_string(gap));
    tamper("UPDATE audit_records SET detail = '{\"anchor_seq\":\"x\",\"anchor_hash\":1}' WHERE seq = 1");
    gdpr::verify_report edited;
    REQUIRE_NOTHROW(edited = verify());
    REQUIRE(edited.problems.size() == 2);
    CHECK(edited.problems[0].seq == 1);
    CHECK(edited.problems[1].seq == gap);
}

TEST_CASE_METHOD(trail_fixture, "the block policy loses nothing when the queue is small", "[audit][overflow]") {
    options.queue_limit = 4;
    open();
    for (int i = 0; i < 500; ++i) REQUIRE(publish({"alice"}, std::to_string(i)) > 0);
    REQUIRE(log->flush());
    CHECK(log->stats().dropped == 0);
    close();
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.complete());
    CHECK(rep.records == 501);
}

TEST_CASE("an audit key file must be private and long enough", "[audit][config]") {
    test_support::temp_dir dir;
    const auto path = dir.write("audit.key", std::string(32, 'x'));
    ::chmod(path.c_str(), 0644);
    CHECK_THROWS_WITH(gdpr::audit_keys::from_file("audit_key_file", path), Catch::Contains("audit_key_file") && Catch::Contains("0644"));
    ::chmod(path.c_str(), 0600);
    CHECK_NOTHROW(gdpr::audit_keys::from_file("audit_key_file", path));
    const auto short_key = dir.write("short.key", "abc");
    ::chmod(short_key.c_str(), 0600);
    CHECK_THROWS_AS(gdpr::audit_keys::from_file("audit_key_file", short_key), gdpr::config_error);
    CHECK_THROWS_AS(gdpr::audit_keys::from_file("audit_key_file", (dir.path() / "missing").string()), gdpr::config_error);
}

TEST_CASE("a data key wrapped for one subject does not open for another", "[audit]") {
    gdpr::audit_keys keys(std::string(40, 'm'));
    const auto k = keys.new_data_key();
    const auto wrapped = keys.wrap(k, keys.subject_ref("alice"));
    CHECK(keys.unwrap(wrapped, keys.subject_ref("alice")) == k);
    CHECK_THROWS(keys.unwrap(wrapped, keys.subject_ref("bob")));
    gdpr::audit_keys other(std::string(40, 'n'));
    CHECK_THROWS(other.unwrap(wrapped, keys.subject_ref("alice")));
    CHECK(keys.subject_ref("alice") != other.subject_ref("alice"));
}

TEST_CASE("record details quote strings as JSON, escapes included", "[audit][recorder]") {
    static const char with_nul[] = "nul\0and\x01\x1f";
    const std::vector<std::string> samples = {
        "", "fleet/acme/vehicle/v42/telemetry", "quote\" and backslash\\", "line\nbreak\rtab\t",
        std::string(with_nul, sizeof with_nul - 1), "\xc3\xa9t\xc3\xa9 \xe2\x82\xac", "\"", "\\\\\\", "end\x7f"};
    for (const auto& s : samples) {
        std::string out = "[";
        gdpr::append_json_string(out, s);
        out += "]";
        INFO(out);
        const json parsed = json::parse(out);
        CHECK(parsed[0].get<std::string>() == s);
    }
    std::string plain;
    gdpr::append_json_string(plain, "a/b");
    CHECK(plain == "\"a/b\"");
    std::string control;
    gdpr::append_json_string(control, std::string("\x01", 1));
    CHECK(control == "\"\\u0001\"");
}

TEST_CASE("a process killed with SIGKILL during a retention sweep leaves a trail that verifies and sweeps on",
          "[audit][retention][crash]") {
    // The sweep runs in steps on the writer thread; whenever the process dies, what was committed
    // must verify, no unexpired record may be gone, and the next sweep must finish the job.
    for (const int delay_ms : {0, 60, 100}) {  // before the first step, and (on this machine) mid-sweep
        INFO("killed " << delay_ms << " ms into the sweep");
        trail_fixture t;
        const std::int64_t old = now_ms() - 10 * DAY_MS;
        const std::int64_t later = now_ms() + 400 * DAY_MS;
        constexpr int EXPIRED = 30000, KEPT = 50;
        int ready[2];
        REQUIRE(::pipe(ready) == 0);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            ::close(ready[0]);
            t.open();
            for (int i = 0; i < EXPIRED; ++i) t.publish({}, "x", old, 1);
            for (int i = 0; i < KEPT; ++i) t.publish({}, "kept", old, 36500);
            if (!t.log->flush()) ::_exit(2);
            const char go = 'g';
            if (::write(ready[1], &go, 1) != 1) ::_exit(3);
            t.log->sweep(later);
            t.log->flush();
            std::this_thread::sleep_for(std::chrono::seconds(30));  // killed before this ends
            ::_exit(0);
        }
        ::close(ready[1]);
        char go = 0;
        REQUIRE(::read(ready[0], &go, 1) == 1);
        ::close(ready[0]);
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        ::kill(child, SIGKILL);
        int status = 0;
        ::waitpid(child, &status, 0);
        REQUIRE(WIFSIGNALED(status));

        auto rep = t.verify(later);
        INFO((rep.problems.empty() ? std::string() : rep.problems[0].what));
        CHECK(rep.intact());
        CHECK(rep.last_seq >= EXPIRED + KEPT + 1);  // every committed record is still counted for

        t.open();  // the broker restarted: the next sweep completes the interrupted one
        t.log->sweep(later);
        REQUIRE(t.log->flush());
        t.close();
        rep = t.verify(later);
        CHECK(rep.intact());
        CHECK(rep.anchor_confirmed);
        CHECK(t.count_kind("retention") >= 1);
        gdpr::sqlite_db db(t.path, gdpr::sqlite_db::read_only);
        gdpr::sqlite_statement q(db.handle(), "SELECT count(*) FROM audit_records WHERE kind = 'publish'");
        q.step();
        CHECK(q.integer(0) == KEPT);  // exactly the unexpired records remain
    }
}

TEST_CASE_METHOD(trail_fixture, "records the writer has finished with come back blank, their personal part wiped",
                 "[audit]") {
    open();
    CHECK(log->blank_record().personal.capacity() < 64);  // nothing written yet: a new record
    const std::string secret = "SECRET-SPEED-" + std::string(100, 'x');
    for (int i = 0; i < 50; ++i) publish({"alice"}, secret);
    REQUIRE(log->flush());
    int reused = 0;
    for (int i = 0; i < 50; ++i) {
        gdpr::audit_record r = log->blank_record();
        CHECK(r.at_ms == 0);
        CHECK(r.client_id.empty());
        CHECK(r.schema.empty());
        CHECK(r.detail.empty());
        CHECK(r.personal.empty());
        CHECK(r.subjects.empty());
        CHECK(r.retention_days == 0);
        CHECK_FALSE(r.has_payload);
        if (r.personal.capacity() < secret.size()) continue;
        ++reused;
        // GDPR Art. 32: the memory that held the clear text holds none of it now.
        const std::string_view memory(r.personal.data(), r.personal.capacity());
        CHECK(memory.find("SECRET-SPEED") == std::string_view::npos);
        // A reused record is appended like any other.
        r.kind = gdpr::audit_kind::delivery;
        r.at_ms = now_ms();
        r.client_id = "dashboard";
        r.detail = R"({"reused":true})";
        CHECK(log->append(std::move(r)) > 0);
    }
    CHECK(reused >= 10);  // the writer may have taken the 50 in a few batches; the largest is kept
    REQUIRE(log->flush());
    close();
    CHECK(verify().intact());
    CHECK(count_kind("delivery") == 50);
}

TEST_CASE_METHOD(trail_fixture, "the newest record that states the anchor keeps its content until a newer one states it",
                 "[audit][retention]") {
    // Otherwise a crash between a sweep step that removed it and the sweep's retention record
    // would leave an anchor that the trail does not state.
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 10; ++i) publish({}, "x", old, 1);
    REQUIRE(log->flush());
    const std::int64_t later = now_ms() + 400 * DAY_MS;  // writer_started (365 days) expires too
    log->sweep(later);
    REQUIRE(log->flush());
    REQUIRE(count_kind("retention") == 1);

    const std::int64_t much_later = now_ms() + 800 * DAY_MS;  // the retention record has expired too
    log->sweep(much_later);
    REQUIRE(log->flush());
    close();
    auto rep = verify(much_later);
    CHECK(rep.intact());
    REQUIRE(rep.anchor_seq);
    CHECK(*rep.anchor_seq == 11);
    CHECK(rep.tombstones == 0);            // the statement kept its content
    CHECK(count_kind("retention") == 1);   // and nothing else was swept

    open();  // writer_started states the anchor now: the old statement may go
    log->sweep(much_later);
    REQUIRE(log->flush());
    close();
    rep = verify(much_later);
    CHECK(rep.intact());
    CHECK(rep.anchor_confirmed);
    // Past the old retention record, then past writer_started once the sweep's own record stated
    // the anchor: both had expired.
    CHECK(*rep.anchor_seq == 13);
}

TEST_CASE_METHOD(trail_fixture, "overlapping sweeps move the anchor once per step and leave it stated", "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 12000; ++i) publish({}, "x", old, 1);
    REQUIRE(log->flush());
    const std::int64_t later = now_ms() + 400 * DAY_MS;
    log->sweep(later);
    log->sweep(later + DAY_MS);  // asked for while the first is still running
    REQUIRE(log->flush());
    close();
    const auto rep = verify(later + DAY_MS);
    CHECK(rep.intact());
    REQUIRE(rep.anchor_seq);
    CHECK(rep.anchor_confirmed);
    CHECK(*rep.anchor_seq == 12001);
    CHECK(rep.tombstones == 0);
    // Three anchor steps, and at most one more record for what the second sweep tombstoned
    // before the first moved the anchor.
    CHECK(count_kind("retention") >= 3);
    CHECK(count_kind("retention") <= 4);
}

namespace {
constexpr std::int64_t HOUR_MS = 3'600'000;

} // namespace

TEST_CASE_METHOD(trail_fixture, "records of different retention periods written together each expire on time",
                 "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 6000; ++i) {
        publish({"alice"}, "short", old, 2);
        publish({"bob"}, "long", old, 30);
    }
    REQUIRE(log->flush());
    log->sweep(now_ms());
    REQUIRE(log->flush());
    auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.tombstones == 6000);  // in steps of at most 5,000: the 2-day ones, across the 30-day ones
    CHECK(count_kind("retention") == 1);
    CHECK(export_of("alice")["records"].empty());
    CHECK(export_of("bob")["records"].size() == 6000);
    CHECK(scalar("SELECT count(*) FROM audit_records WHERE digest IS NOT NULL AND kind = 'publish' AND seq % 2 = 1") == 0);

    log->sweep(old + 31 * DAY_MS);
    REQUIRE(log->flush());
    close();
    rep = verify(old + 31 * DAY_MS);
    CHECK(rep.intact());
    CHECK(rep.tombstones == 12000);
    // Only writer_started and the retention records (365 days) are left to expire.
    CHECK(scalar("SELECT count(*) FROM audit_expiry WHERE days <> 365") == 0);
}

TEST_CASE_METHOD(trail_fixture, "a sweep in the middle of an hour removes what expired and leaves the rest of that hour",
                 "[audit][retention]") {
    open();
    const std::int64_t hour = (now_ms() / HOUR_MS - 48) * HOUR_MS;  // a whole hour, two days ago
    const std::int64_t early = publish({"alice"}, "early", hour + 10 * 60'000 - DAY_MS, 1);  // expires at :10
    const std::int64_t late = publish({"alice"}, "late", hour + 50 * 60'000 - DAY_MS, 1);    // expires at :50
    REQUIRE(log->flush());
    log->sweep(hour + 30 * 60'000);
    REQUIRE(log->flush());
    CHECK(tombstoned(early));
    CHECK(live(late));
    CHECK(export_of("alice")["records"].size() == 1);
    // The next sweep of that hour starts at its first record still live.
    CHECK(scalar("SELECT first_seq FROM audit_expiry WHERE days = 1") == late);

    log->sweep(hour + HOUR_MS);
    REQUIRE(log->flush());
    CHECK(export_of("alice")["records"].empty());
    CHECK(scalar("SELECT count(*) FROM audit_expiry WHERE days = 1") == 0);  // the hour is done with
    close();
    const auto rep = verify(hour + HOUR_MS);
    CHECK(rep.intact());
    CHECK(rep.tombstones == 2);
}

TEST_CASE_METHOD(trail_fixture, "records written while the clock went back are all removed once their hour of expiry has passed",
                 "[audit][retention]") {
    open();
    const std::int64_t hour = (now_ms() / HOUR_MS - 48) * HOUR_MS;
    const std::int64_t at = hour - DAY_MS;  // one-day retention: expiry = at + one day
    std::vector<std::int64_t> seqs;
    for (int minute : {40, 20, 5, 45, 10})  // written in this order: the clock jumped back twice
        seqs.push_back(publish({"alice"}, std::to_string(minute), at + minute * 60'000, 1));
    publish({"bob"}, "other hour", at + HOUR_MS + 60'000, 1);
    REQUIRE(log->flush());
    // Mid-hour, nothing is removed before its time; what comes after a record still live may wait.
    log->sweep(hour + 30 * 60'000);
    REQUIRE(log->flush());
    CHECK(scalar("SELECT count(*) FROM audit_records WHERE kind = 'publish' AND digest IS NOT NULL AND expires_ms > " +
                           std::to_string(hour + 30 * 60'000)) == 0);
    // Once the hour has passed, every record of it goes, in whatever order it was written.
    log->sweep(hour + HOUR_MS);
    REQUIRE(log->flush());
    for (auto seq : seqs)
        CHECK(tombstoned(seq));
    CHECK(export_of("alice")["records"].empty());
    CHECK(export_of("bob")["records"].size() == 1);
    close();
    const auto rep = verify(hour + HOUR_MS);
    CHECK(rep.intact());
    CHECK(rep.tombstones == 5);
}

TEST_CASE_METHOD(trail_fixture, "a version 1 trail is upgraded on open and sweeps as before", "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    for (int i = 0; i < 20; ++i) publish({"alice"}, "old", old, 7);
    publish({"bob"}, "kept", old, 30);
    REQUIRE(log->flush());
    close();
    // The layout version 1 had: an index entry per live record instead of the expiry groups.
    tamper("DROP TABLE audit_expiry;"
           "CREATE INDEX audit_records_expiry ON audit_records(expires_ms) WHERE digest IS NULL;"
           "UPDATE audit_meta SET value = 1 WHERE key = 'schema_version';");

    open();
    CHECK(scalar("SELECT value FROM audit_meta WHERE key = 'schema_version'") == gdpr::audit_log::SCHEMA_VERSION);
    CHECK(scalar("SELECT count(*) FROM sqlite_master WHERE name = 'audit_records_expiry'") == 0);
    log->sweep(now_ms());
    REQUIRE(log->flush());
    close();
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.tombstones == 20);
    CHECK(export_of("alice")["records"].empty());
    CHECK(export_of("bob")["records"].size() == 1);
}

TEST_CASE_METHOD(trail_fixture, "a trail of a newer version is refused with its version named", "[audit]") {
    open();
    close();
    tamper("UPDATE audit_meta SET value = 5 WHERE key = 'schema_version'");
    CHECK_THROWS_WITH(open(), Catch::Contains("version 5") && Catch::Contains("reads version 4"));
}

TEST_CASE_METHOD(trail_fixture, "an expired statement passed over in the middle of its hour is removed once a newer record states the anchor",
                 "[audit][retention]") {
    options.default_retention_days = 1;  // the trail's own records expire with the publishes
    open();
    for (int i = 0; i < 10; ++i) publish({}, "x", now_ms() - 10 * DAY_MS, 1);
    REQUIRE(log->flush());
    log->sweep(now_ms() + 2 * DAY_MS);  // everything so far goes; its retention record states the anchor
    REQUIRE(log->flush());
    const std::int64_t statement = scalar("SELECT max(seq) FROM audit_records WHERE kind = 'retention'");
    const std::int64_t stated_at = scalar("SELECT at_ms FROM audit_records WHERE seq = " + std::to_string(statement));
    const std::int64_t expires = stated_at + DAY_MS;
    const std::int64_t hour_end = (expires / HOUR_MS + 1) * HOUR_MS;
    REQUIRE(hour_end - expires >= 2);
    // Same retention, same hour of expiry as the statement: one expires with it, one later.
    const std::int64_t with_it = publish({}, "with", stated_at, 1);
    const std::int64_t after_it = publish({}, "after", hour_end - 1 - DAY_MS, 1);
    REQUIRE(log->flush());

    log->sweep(expires);  // mid-hour: the statement is still the newest; with_it goes
    REQUIRE(log->flush());
    CHECK(live(statement));
    CHECK_FALSE(live(with_it));
    CHECK(live(after_it));
    const std::string held_keys = "SELECT count(*) FROM audit_meta WHERE key = 'held:" + std::to_string(statement) + "'";
    CHECK(scalar(held_keys) == 1);

    close();  // it is remembered across a restart
    open();
    log->sweep(hour_end + HOUR_MS);
    REQUIRE(log->flush());
    CHECK_FALSE(live(statement));
    CHECK_FALSE(live(after_it));
    CHECK(scalar("SELECT count(*) FROM audit_meta WHERE key LIKE 'held:%'") == 0);
    close();
    const auto rep = verify(hour_end + HOUR_MS);
    CHECK(rep.intact());
    REQUIRE(rep.anchor_seq);
    CHECK(*rep.anchor_seq >= after_it);  // the anchor went past all three
}

TEST_CASE_METHOD(trail_fixture, "a sweep goes on in steps through an hour of expiry that spans more live rows than a step reads",
                 "[audit][retention]") {
    open();
    const std::int64_t old = now_ms() - 10 * DAY_MS;
    // Two records of a short retention period, far apart among records kept for longer: their
    // group's range holds more live rows than one sweep step reads (50,000).
    const std::int64_t first = publish({}, "short", old, 2);
    for (int i = 0; i < 52'000; ++i) publish({}, "long", old, 30);
    const std::int64_t last = publish({}, "short", old + 1, 2);
    REQUIRE(log->flush());
    log->sweep(now_ms());
    REQUIRE(log->flush());
    CHECK(tombstoned(first));
    CHECK(tombstoned(last));
    CHECK(scalar("SELECT count(*) FROM audit_records WHERE digest IS NOT NULL") == 2);
    CHECK(scalar("SELECT count(*) FROM audit_expiry WHERE days = 2") == 0);
    CHECK(count_kind("retention") == 1);  // one sweep, however many steps
    close();
    const auto rep = verify();
    CHECK(rep.intact());
    CHECK(rep.tombstones == 2);
}

TEST_CASE_METHOD(trail_fixture, "an export lists holders the data map wrote under an earlier name",
                 "[audit][export]") {
    open();
    close();
    {
        auto map = gdpr::data_map::open(path, "NORMAL", [this](std::string_view subject) { return keys->subject_ref(subject); });
        int payload = 0;
        map->published({"alice"}, "car-1", "fleet/car-1/telemetry", false, &payload);
        map->wait_idle();
    }
    {
        // Then written with no key file: named by the id. (A broker started with a key file renames
        // such rows at start; gdprctl may read the file before that.)
        auto map = gdpr::data_map::open(path);
        int payload = 0;
        map->published({"alice"}, "car-1", "fleet/car-1/telemetry", false, &payload);
        map->delivered("dashboard", "fleet/car-1/telemetry", &payload);
        map->wait_idle();
    }
    CHECK(export_of("alice")["holders"]["recipients"].empty());  // under the audit key's reference alone
    gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
    gdpr::export_options by_id;
    by_id.data_map_by_id = true;
    const json alice = json::parse(gdpr::export_subject(db, *keys, "alice", now_ms(), by_id));
    INFO(alice.dump(2));
    REQUIRE(alice["holders"]["publishers"].size() == 1);  // car-1 under both names, listed once
    CHECK(alice["holders"]["publishers"][0]["client_id"] == "car-1");
    REQUIRE(alice["holders"]["recipients"].size() == 1);
    CHECK(alice["holders"]["recipients"][0]["client_id"] == "dashboard");
    // Names given beside it add to the reference, never replace it.
    gdpr::export_options named;
    named.data_map_names = {"alice"};
    CHECK(json::parse(gdpr::export_subject(db, *keys, "alice", now_ms(), named))["holders"]["publishers"].size() == 1);
    // A subject whose id is alice's reference is not given alice's holders.
    const json posing = json::parse(gdpr::export_subject(db, *keys, keys->subject_ref("alice"), now_ms(), by_id));
    CHECK(posing["holders"]["publishers"].empty());
    CHECK(posing["holders"]["recipients"].empty());
}

TEST_CASE_METHOD(trail_fixture, "an export lists the holders the data map knows, with sealed retained topics opened",
                 "[audit][export]") {
    open();
    const auto p1 = publish({"alice"}, "61");
    delivery(p1, "dashboard");
    REQUIRE(log->flush());
    close();
    const std::string secret(32, 's');
    {
        // As the plugin opens it: subjects named by the trail's reference, topics naming a subject sealed.
        auto map = gdpr::data_map::open(
            path, "NORMAL", [this](std::string_view subject) { return keys->subject_ref(subject); },
            [](std::string_view topic) { return topic.find("alice") == std::string_view::npos; },
            std::make_unique<gdpr::topic_sealer>(secret, "audit_key_file"));
        int payload = 0;
        map->published({"alice"}, "car-1", "fleet/car-1/telemetry", true, &payload);
        map->delivered("dashboard", "fleet/car-1/telemetry", &payload);
        map->published({"alice"}, "phone-1", "people/alice/location", true, &payload);
        map->forget_last_publish();
        // A retained message delivered later: no publish record ties it to alice, the data map does.
        map->delivered("late-viewer", "fleet/car-1/telemetry", nullptr);
        map->published({"bob"}, "car-2", "fleet/car-2/telemetry", false, &payload);
        // Recipients of a message naming alice only by pseudonym (the dashboard also got her id).
        map->names_by_pseudonym(true);
        const gdpr::forwarded_message hidden{R"({"driver_id":"0f3a9c"})"};
        int pseudonymised = 0;
        map->published({"alice"}, "car-1", "fleet/car-1/trip", false, &pseudonymised, true, &hidden);
        map->delivered("pseudo-viewer", "fleet/car-1/trip", &pseudonymised);
        map->delivered("pseudo-viewer-2", "fleet/car-1/trip", &pseudonymised);
        map->delivered("dashboard", "fleet/car-1/trip", &pseudonymised);
        map->delivered("car-1", "fleet/car-1/trip", &pseudonymised);  // it published her data: knows the id
        int with_id = 0;  // pseudo-viewer-2 then gets her id: both rows, listed once
        map->published({"alice"}, "car-1", "fleet/car-1/trip", false, &with_id);
        map->delivered("pseudo-viewer-2", "fleet/car-1/trip", &with_id);
        map->wait_idle();
    }
    const json alice = export_of("alice");
    INFO(alice.dump(2));
    CHECK(alice["recipients"].size() == 1);  // the trail ties only the live delivery to a publish
    const auto client_ids = [](const json& list) {
        std::vector<std::string> out;
        for (const auto& h : list) out.push_back(h.value("client_id", h.value("topic", "")));
        return out;
    };
    CHECK(client_ids(alice["holders"]["publishers"]) == std::vector<std::string>{"car-1", "phone-1"});
    CHECK(client_ids(alice["holders"]["recipients"]) ==
          std::vector<std::string>{"car-1", "dashboard", "late-viewer", "pseudo-viewer", "pseudo-viewer-2"});
    CHECK(alice["holders"]["recipients"][0]["first_seen_ms"].get<std::int64_t>() > 0);
    CHECK_FALSE(alice["holders"]["recipients"][0].contains("by_pseudonym"));  // car-1 published her id
    CHECK_FALSE(alice["holders"]["recipients"][1].contains("by_pseudonym"));  // the dashboard got her id too
    CHECK_FALSE(alice["holders"]["recipients"][2].contains("by_pseudonym"));
    CHECK(alice["holders"]["recipients"][3]["by_pseudonym"] == true);
    CHECK(alice["holders"]["recipients"][3]["first_seen_ms"].get<std::int64_t>() > 0);
    CHECK_FALSE(alice["holders"]["recipients"][4].contains("by_pseudonym"));
    // pseudo-viewer-2 received her pseudonym first: a recipient since then.
    {
        gdpr::sqlite_db raw(path);
        raw.exec("UPDATE data_map SET first_seen_ms = 5 WHERE holder = 'pseudo-viewer-2' AND role = 'pseudonymous_recipient'");
    }
    CHECK(export_of("alice")["holders"]["recipients"][4]["first_seen_ms"] == 5);
    // Without a key, or with one that did not seal it, the topic naming alice is only counted.
    CHECK(client_ids(alice["holders"]["retained_topics"]) == std::vector<std::string>{"fleet/car-1/telemetry"});
    CHECK(alice["holders"]["sealed_retained_topics"] == 1);
    const auto export_opening_with = [&](const std::string& key, const std::string& label) {
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        gdpr::topic_sealer opener(key, label);
        gdpr::export_options with_opener;
        with_opener.topic_opener = &opener;
        return json::parse(gdpr::export_subject(db, *keys, "alice", now_ms(), with_opener));
    };
    for (const auto& wrong : {export_opening_with(std::string(32, 'x'), "audit_key_file"),
                              export_opening_with(secret, "pseudonym_key_file")}) {
        CHECK(client_ids(wrong["holders"]["retained_topics"]) == std::vector<std::string>{"fleet/car-1/telemetry"});
        CHECK(wrong["holders"]["sealed_retained_topics"] == 1);
    }
    const json opened = export_opening_with(secret, "audit_key_file");
    CHECK(client_ids(opened["holders"]["retained_topics"]) ==
          std::vector<std::string>{"fleet/car-1/telemetry", "people/alice/location"});
    CHECK_FALSE(opened["holders"].contains("sealed_retained_topics"));
    CHECK(client_ids(export_of("bob")["holders"]["publishers"]) == std::vector<std::string>{"car-2"});
    CHECK(export_of("carol")["holders"]["publishers"].empty());
}
