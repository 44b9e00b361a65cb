// The data map, erase topics and the erasure state machine, on a real SQLite file, with the
// broker's side (sending, retained messages, consent) recorded by the test.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "gdpr/data_map.hpp"
#include "gdpr/erasure.hpp"
#include "gdpr/pseudonymiser.hpp"
#include "gdpr/sqlite.hpp"
#include "test_support.hpp"

using gdpr::data_map;
using gdpr::erase_topics;
using gdpr::erasure_manager;
using gdpr::erasure_request;
using gdpr::target_state;
using gdpr::topic_sealer;
using json = nlohmann::json;

namespace {


// What the manager asked the broker to do.
struct broker_side {
    std::vector<std::pair<std::string, json>> sent;  // client id, command
    std::vector<std::string> cleared;
    std::vector<std::string> consent_removed;
    std::vector<std::string> shredded;
    std::vector<std::pair<std::string, std::string>> alerts;
    std::vector<std::string> steps;
    std::map<std::string, bool> connected;  // unknown clients count as connected
    bool hold_shreds = false;                // the audit writer has not committed the shred yet
    std::vector<std::function<void()>> held_shreds;

    gdpr::erasure_effects effects() {
        gdpr::erasure_effects fx;
        fx.subject_ref = test_support::keyed_ref;  // a stand-in for the audit trail's reference
        fx.pseudonym = [](const std::string& s) { return "pseudo-" + s; };
        fx.is_connected = [this](const std::string& c) {
            auto it = connected.find(c);
            return it == connected.end() || it->second;
        };
        fx.send = [this](const std::string& c, const std::string& topic, const std::string& payload) {
            CHECK(topic == "gdpr/erase/" + c);
            sent.emplace_back(c, json::parse(payload));
        };
        fx.clear_retained = [this](const std::string& t) { cleared.push_back(t); };
        fx.remove_consent = [this](const std::string& s, const std::string&,
                                   std::function<void(const std::string&, std::int64_t, std::int64_t)> done) {
            // Removed once: a second removal (after a restart) finds nothing left.
            const bool again = std::find(consent_removed.begin(), consent_removed.end(), s) != consent_removed.end();
            consent_removed.push_back(s);
            done("", again ? 0 : 3, again ? 0 : 1);
        };
        fx.shred_key = [this](const std::string& s, std::function<void()> durable) {
            shredded.push_back(s);
            if (hold_shreds) held_shreds.push_back(std::move(durable));
            else durable();
            return true;
        };
        fx.loggable_topic = [](const std::string& t) { return t.find("driver-") != std::string::npos ? "<subject>" : t; };
        fx.record = [this](std::string_view step, const std::string&, const std::string& detail) {
            CHECK(detail.find("driver-1") == std::string::npos);  // the trail never names the subject
            steps.emplace_back(step);
        };
        fx.alert = [this](std::string_view kind, const std::string& text) { alerts.emplace_back(kind, text); };
        return fx;
    }
    std::size_t sent_to(const std::string& c) const {
        std::size_t n = 0;
        for (const auto& s : sent) n += s.first == c;
        return n;
    }
};

gdpr::erasure_options fast_options() {
    gdpr::erasure_options o;
    o.deadline_ms = 60'000;
    o.first_retry_ms = 1'000;
    o.max_retry_ms = 8'000;
    o.rate_limit_ms = 3'600'000;
    return o;
}

// Runs background completions until `done` holds (the manager's and the map's workers).
template <class Pred>
void settle(erasure_manager& m, data_map& map, Pred done) {
    for (int i = 0; i < 500 && !done(); ++i) {
        m.wait_idle();
        map.wait_idle();
        m.drain();
        map.drain();
        if (!done()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

const erasure_request* start_request(erasure_manager& m, data_map& map, const std::string& id, const std::string& subject,
                                     std::int64_t now, std::string* error = nullptr) {
    const erasure_request* result = nullptr;
    bool answered = false;
    m.request(id, subject, "username:ops", now, [&](const erasure_request* r, const std::string& e) {
        result = r;
        answered = true;
        if (error) *error = e;
    });
    settle(m, map, [&] { return answered; });
    REQUIRE(answered);
    return result;
}

constexpr std::int64_t T0 = 1'700'000'000'000;

// A database, a data map in which `publishers` sent driver-1's data, and a manager on both.
struct erasure_world {
    test_support::temp_dir dir;
    std::string db = (dir.path() / "gdpr.db").string();
    std::unique_ptr<data_map> map = data_map::open(db);
    broker_side broker;
    std::unique_ptr<erasure_manager> m;
    int payload = 0;

    explicit erasure_world(const std::vector<std::string>& publishers, gdpr::erasure_options options = fast_options()) {
        for (const auto& c : publishers) map->published({"driver-1"}, c, "t/1", false, &payload);
        m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), options, *map, broker.effects());
    }
    erasure_world(const erasure_world&) = delete;
    erasure_world& operator=(const erasure_world&) = delete;
};

// The first column of the first row `sql` gives in the database at `db` (a count, say).
std::int64_t scalar_in(const std::string& db, const std::string& sql) {
    gdpr::sqlite_db raw(db);
    gdpr::sqlite_statement q(raw.handle(), sql);
    REQUIRE(q.step());
    return q.integer(0);
}

// A data map as version 1 or 2 wrote it (the same table; its role check knows three roles), with
// `rows` (SQL values) in it.
void write_early_data_map(const std::string& db, int version, const std::string& rows) {
    gdpr::sqlite_db raw(db);
    raw.exec("CREATE TABLE data_map (subject_ref TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('publisher', "
             "'recipient', 'retained')), holder TEXT NOT NULL, first_seen_ms INTEGER NOT NULL, "
             "PRIMARY KEY (subject_ref, role, holder)) WITHOUT ROWID;"
             "CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL);"
             "INSERT INTO schema_version VALUES ('data_map', " + std::to_string(version) + ");"
             "INSERT INTO data_map VALUES " + rows + ";");
}

std::string ack(const std::string& id, const std::string& status) {
    return json{{"requestId", id}, {"status", status}}.dump();
}

} // namespace

TEST_CASE("erase topics come from a template with the client id as one whole level", "[erasure]") {
    erase_topics t("gdpr/erase/%c");
    CHECK(t.command_topic("dev-1") == "gdpr/erase/dev-1");
    CHECK(t.ack_topic("dev-1") == "gdpr/erase/dev-1/ack");
    CHECK(t.command_topic("a/b").empty());
    CHECK(t.command_topic("a+").empty());
    CHECK(t.command_topic("").empty());
    auto cmd = t.parse("gdpr/erase/dev-1");
    REQUIRE(cmd);
    CHECK(cmd->client_id == "dev-1");
    CHECK_FALSE(cmd->ack);
    auto a = t.parse("gdpr/erase/dev-1/ack");
    REQUIRE(a);
    CHECK(a->client_id == "dev-1");
    CHECK(a->ack);
    CHECK_FALSE(t.parse("gdpr/erase/"));
    CHECK_FALSE(t.parse("gdpr/erase/a/b/ack"));
    CHECK_FALSE(t.parse("gdpr/other/dev-1"));

    erase_topics middle("fleet/%c/erase");
    CHECK(middle.command_topic("v9") == "fleet/v9/erase");
    REQUIRE(middle.parse("fleet/v9/erase/ack"));
    CHECK(middle.parse("fleet/v9/erase/ack")->ack);
    CHECK_FALSE(middle.parse("fleet/v9/telemetry"));
    CHECK(middle.space() == std::vector<std::string>{"fleet/+/erase", "fleet/+/erase/ack"});

    CHECK_THROWS_WITH(erase_topics("gdpr/erase"), Catch::Contains("exactly once"));
    CHECK_THROWS_WITH(erase_topics("gdpr/erase-%c"), Catch::Contains("whole level"));
    CHECK_THROWS_WITH(erase_topics("gdpr/%c/%c"), Catch::Contains("exactly once"));
    CHECK_THROWS_WITH(erase_topics("gdpr/+/%c"), Catch::Contains("wildcards"));
    CHECK_THROWS_WITH(erase_topics("%c"), Catch::Contains("a level besides"));
    CHECK_THROWS_WITH(erase_topics("$CONTROL/gdpr/erase/%c"), Catch::Contains("$CONTROL/"));
    CHECK_THROWS_WITH(erase_topics("$CONTROL/erase/%c"), Catch::Contains("$CONTROL/"));
    CHECK_NOTHROW(erase_topics("%c/erase"));
}

TEST_CASE("the data map learns publishers, recipients and retained topics, and survives a reopen", "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto ref = test_support::keyed_ref;
    {
        auto map = data_map::open(db, "NORMAL", ref);
        int payload = 0;
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &payload);
        map->delivered("dashboard", "fleet/van-1/telemetry", &payload);
        map->delivered("dashboard", "fleet/van-1/telemetry", &payload);  // known holders are not written again
        map->delivered("logger", "fleet/van-1/telemetry", &payload);
        int other = 0;
        map->delivered("stranger", "fleet/van-1/telemetry", &other);  // not the last publish's payload
        map->published({"driver-1", "driver-2"}, "van-2", "fleet/van-2/status", true, &other);
        map->forget_last_publish();
        map->delivered("late", "fleet/van-2/status", nullptr);  // retained on subscribe: the topic's subjects
        const auto h = map->holdings("driver-1");
        CHECK(h.publishers == std::vector<std::string>{"van-1", "van-2"});
        CHECK(h.recipients == std::vector<std::string>{"dashboard", "late", "logger"});
        CHECK(h.retained_topics == std::vector<std::string>{"fleet/van-2/status"});
        CHECK(map->holdings("driver-2").recipients == std::vector<std::string>{"late"});
        CHECK(map->holdings("nobody").empty());
        map->wait_idle();
    }
    {
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT count(*) FROM data_map WHERE subject_ref = 'driver-1'");
        REQUIRE(q.step());
        CHECK(q.integer(0) == 0);  // stored under the reference, not the id
    }
    auto map = data_map::open(db, "NORMAL", ref);
    auto h = map->holdings("driver-1");
    CHECK(h.publishers == std::vector<std::string>{"van-1", "van-2"});
    CHECK(h.recipients == std::vector<std::string>{"dashboard", "late", "logger"});
    CHECK(h.retained_topics == std::vector<std::string>{"fleet/van-2/status"});

    // An empty retained publish clears the topic: it holds nobody's data any more.
    map->retained_replaced("fleet/van-2/status");
    CHECK(map->holdings("driver-1").retained_topics.empty());
    map->forget_subject("driver-1");
    CHECK(map->holdings("driver-1").empty());
    CHECK_FALSE(map->holdings("driver-2").empty());
    map->wait_idle();
    map.reset();
    map = data_map::open(db, "NORMAL", ref);
    CHECK(map->holdings("driver-1").empty());
    CHECK(map->holdings("driver-2").publishers == std::vector<std::string>{"van-2"});
    CHECK(map->holdings("driver-2").retained_topics.empty());
}

TEST_CASE("holders written under an earlier name are found and erased once a key file names subjects anew",
          "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const gdpr::pseudonymiser ps(std::string(32, 'p')), audit(std::string(32, 'a'));
    auto by_pseudonym = [&ps](std::string_view s) { return "p:" + ps.pseudonym(s); };
    {
        // First without any key file: subjects named by their id.
        auto map = data_map::open(db);
        int payload = 0;
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &payload);
        map->delivered("dashboard", "fleet/van-1/telemetry", &payload);
        map->wait_idle();
    }
    {
        // Then with a pseudonymisation key.
        auto map = data_map::open(db, "NORMAL", by_pseudonym);
        // The holders written by id now stand under the name in use: the file keeps no id.
        CHECK(map->renamed_from_id() == 1);
        CHECK(map->loaded_by_pseudonym() == 1);
        CHECK(map->names_of("driver-1") == std::vector<std::string>{by_pseudonym("driver-1")});
        CHECK(map->holdings("driver-1").publishers == std::vector<std::string>{"van-1"});
        CHECK(map->holdings("driver-1").recipients == std::vector<std::string>{"dashboard"});
        CHECK(map->unknown_among({"driver-1", "driver-2"}) == 1);  // driver-1 is not new
        int payload = 0;
        map->published({"driver-1"}, "van-1b", "fleet/van-1b/telemetry", false, &payload);
        map->published({"driver-2"}, "van-2", "fleet/van-2/telemetry", false, &payload);
        map->wait_idle();
    }
    // Now with an audit key, naming subjects by another reference: the earlier names are given.
    auto map = data_map::open(db, "NORMAL", [&audit](std::string_view s) { return audit.pseudonym(s); });
    CHECK(map->renamed_from_id() == 0);
    CHECK(map->loaded_by_pseudonym() == 2);
    CHECK(map->holdings("driver-1").publishers.empty());  // before the earlier names are known
    map->also_named(by_pseudonym);
    CHECK(map->names_of("driver-1") == std::vector<std::string>{audit.pseudonym("driver-1"), by_pseudonym("driver-1")});
    // A name of a keyed name's form is never looked up as an id: it could be another subject's.
    const std::string driver_2_name = by_pseudonym("driver-2");
    CHECK(map->names_of(driver_2_name).size() == 2);
    CHECK(map->holdings(driver_2_name).empty());
    int payload = 0;
    map->published({"driver-2"}, "van-2b", "fleet/van-2b/telemetry", false, &payload);
    const std::string driver_2_ref = audit.pseudonym("driver-2");
    CHECK(map->holdings(driver_2_ref).empty());
    map->forget_subject(driver_2_ref);  // an erasure of an id that is driver-2's reference
    CHECK(map->holdings("driver-2").publishers == std::vector<std::string>{"van-2", "van-2b"});
    map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &payload);
    map->delivered("logger", "fleet/van-1/telemetry", &payload);
    auto h = map->holdings("driver-1");
    CHECK(h.publishers == std::vector<std::string>{"van-1", "van-1b"});  // van-1 once
    CHECK(h.recipients == std::vector<std::string>{"dashboard", "logger"});
    map->forget_subject("driver-1");
    CHECK(map->holdings("driver-1").empty());
    CHECK(map->holdings("driver-2").publishers == std::vector<std::string>{"van-2", "van-2b"});
    map->wait_idle();
    map.reset();
    // Gone on disk under every name; another subject untouched, and moved to the name in use when
    // it published again.
    gdpr::sqlite_db raw(db);
    gdpr::sqlite_statement q(raw.handle(), "SELECT count(*) FROM data_map WHERE subject_ref IN (?1, ?2, 'driver-1')");
    q.bind(1, audit.pseudonym("driver-1")).bind(2, by_pseudonym("driver-1"));
    REQUIRE(q.step());
    CHECK(q.integer(0) == 0);
    auto rows_of = [&raw](const std::string& name) {
        gdpr::sqlite_statement other(raw.handle(), "SELECT count(*) FROM data_map WHERE subject_ref = ?1");
        other.bind(1, name);
        REQUIRE(other.step());
        return other.integer(0);
    };
    CHECK(rows_of(driver_2_name) == 0);
    CHECK(rows_of(driver_2_ref) == 2);
    CHECK(gdpr::is_keyed_subject_name(driver_2_ref));
    CHECK(gdpr::is_keyed_subject_name(driver_2_name));
    CHECK_FALSE(gdpr::is_keyed_subject_name("driver-2"));
    CHECK_FALSE(gdpr::is_keyed_subject_name("p:driver-2"));
    CHECK_FALSE(gdpr::is_keyed_subject_name(std::string(32, 'A')));  // keyed names are lower case
}

TEST_CASE("subjects stored by id before a key file are renamed at open, their subject-naming topics sealed",
          "[erasure][datamap][crypto]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::string vitals = "health/wearable/u-42/vitals";
    auto in_clear = [](std::string_view topic) { return topic.rfind("health/", 0) != 0; };
    auto sealer = [] { return std::make_unique<topic_sealer>(std::string(32, 's'), "audit_key_file"); };
    // Every row, as (subject_ref, role, holder, first_seen_ms).
    auto rows = [&] {
        std::vector<std::tuple<std::string, std::string, std::string, std::int64_t>> out;
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(),
                                 "SELECT subject_ref, role, holder, first_seen_ms FROM data_map ORDER BY role, holder");
        while (q.step()) out.emplace_back(q.text(0), q.text(1), q.text(2), q.integer(3));
        return out;
    };
    const std::string keyed_form_id(32, 'c');  // cannot be told from a keyed name: left alone
    {
        auto map = data_map::open(db);  // no key file: subjects and topics in clear
        int payload = 0;
        map->published({"u-42"}, "band-42", vitals, true, &payload);
        map->delivered("doctor", vitals, &payload);
        map->published({"u-42", keyed_form_id}, "band-42", "fleet/band-42/status", true, &payload);
        map->wait_idle();
    }
    const auto before = rows();
    REQUIRE(before.size() == 6);
    std::int64_t first_seen_doctor = 0;
    for (const auto& [ref, role, holder, at] : before)
        if (holder == "doctor") first_seen_doctor = at;
    REQUIRE(first_seen_doctor > 0);

    {
        auto map = data_map::open(db, "NORMAL", test_support::keyed_ref, in_clear, sealer());
        CHECK(map->renamed_from_id() == 1);
        const auto h = map->holdings("u-42");
        CHECK(h.publishers == std::vector<std::string>{"band-42"});
        CHECK(h.recipients == std::vector<std::string>{"doctor"});
        CHECK(h.retained_topics == std::vector<std::string>{"fleet/band-42/status", vitals});
        CHECK(map->unknown_among({"u-42"}) == 0);  // not a new subject
        map->forget_last_publish();
        map->delivered("nurse", vitals, nullptr);  // a later recipient of the retained message
        map->wait_idle();
    }
    const std::string ref = test_support::keyed_ref("u-42");
    bool doctor_kept = false, vitals_sealed = false, nurse_under_ref = false;
    for (const auto& [name, role, holder, at] : rows()) {
        CHECK(name != "u-42");
        CHECK(holder.find("u-42") == std::string::npos);  // the topic that names the subject is sealed
        if (holder == "doctor") doctor_kept = name == ref && at == first_seen_doctor;
        if (role == "retained" && topic_sealer::is_sealed(holder)) vitals_sealed = name == ref;
        if (holder == "nurse") nurse_under_ref = name == ref;
    }
    CHECK(doctor_kept);
    CHECK(vitals_sealed);
    CHECK(nurse_under_ref);
    // The id of a keyed name's form keeps its rows as they were.
    auto count_rows = [&](std::string_view where) {
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT count(*) FROM data_map WHERE subject_ref " + std::string(where) + " ?1");
        q.bind(1, keyed_form_id);
        REQUIRE(q.step());
        return q.integer(0);
    };
    CHECK(count_rows("=") == 2);

    // Renamed once: the next start finds nothing to rename, and an erasure reaches every row.
    auto map = data_map::open(db, "NORMAL", test_support::keyed_ref, in_clear, sealer());
    CHECK(map->renamed_from_id() == 0);
    CHECK(map->holdings("u-42").recipients == std::vector<std::string>{"doctor", "nurse"});
    map->forget_subject("u-42");
    map->wait_idle();
    CHECK(count_rows("<>") == 0);
}

TEST_CASE("a retained topic stored in clear that names a subject by the rules in use is sealed at open",
          "[erasure][datamap][crypto]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::string vitals = "health/u-9/vitals";
    auto sealer = [] { return std::make_unique<topic_sealer>(std::string(32, 's'), "audit_key_file"); };
    auto retained = [&] {
        std::vector<std::pair<std::string, std::int64_t>> out;
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT holder, first_seen_ms FROM data_map WHERE role = 'retained'");
        while (q.step()) out.emplace_back(q.text(0), q.integer(1));
        return out;
    };
    {
        // No schema named a subject in this topic yet: stored in clear.
        auto map = data_map::open(db, "NORMAL", test_support::keyed_ref, [](std::string_view) { return true; }, sealer());
        int payload = 0;
        map->published({"u-9"}, "band-9", vitals, true, &payload);
        map->wait_idle();
    }
    const auto before = retained();
    REQUIRE(before.size() == 1);
    REQUIRE(before[0].first == vitals);
    auto names_subject = [](std::string_view topic) { return topic.rfind("health/", 0) != 0; };
    auto map = data_map::open(db, "NORMAL", test_support::keyed_ref, names_subject, sealer());
    const auto after = retained();
    REQUIRE(after.size() == 1);
    CHECK(topic_sealer::is_sealed(after[0].first));
    CHECK(after[0].second == before[0].second);
    CHECK(map->holdings("u-9").retained_topics == std::vector<std::string>{vitals});
    // Without a sealer it cannot be sealed: it stays, so that an erasure still clears it.
    map.reset();
    {
        gdpr::sqlite_db raw(db);
        raw.exec("DELETE FROM data_map");
    }
    {
        auto clear = data_map::open(db, "NORMAL", test_support::keyed_ref, [](std::string_view) { return true; }, sealer());
        int payload = 0;
        clear->published({"u-9"}, "band-9", vitals, true, &payload);
        clear->wait_idle();
    }
    CHECK(data_map::open(db, "NORMAL", test_support::keyed_ref, names_subject)->holdings("u-9").retained_topics ==
          std::vector<std::string>{vitals});
    CHECK(retained().at(0).first == vitals);
}

TEST_CASE("a holder known by id and by reference keeps its earliest first sighting when the id is renamed",
          "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    {
        auto map = data_map::open(db);
        int payload = 0;
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &payload);
        map->wait_idle();
    }
    std::int64_t by_id_ms = 0;
    {
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT first_seen_ms FROM data_map WHERE subject_ref = 'driver-1'");
        REQUIRE(q.step());
        by_id_ms = q.integer(0);
        // The same holder under the reference, seen later (a key file removed and added again).
        gdpr::sqlite_statement later(raw.handle(), "INSERT INTO data_map VALUES (?1, 'publisher', 'van-1', ?2)");
        later.bind(1, test_support::keyed_ref("driver-1")).bind(2, by_id_ms + 3'600'000);
        later.run();
    }
    data_map::open(db, "NORMAL", test_support::keyed_ref)->wait_idle();
    gdpr::sqlite_db raw(db);
    gdpr::sqlite_statement q(raw.handle(), "SELECT subject_ref, first_seen_ms FROM data_map");
    REQUIRE(q.step());
    CHECK(q.text(0) == test_support::keyed_ref("driver-1"));
    CHECK(q.integer(1) == by_id_ms);
    CHECK_FALSE(q.step());
}

TEST_CASE("retained topics sealed under the key that named subjects before are opened, and deleted with their topic",
          "[erasure][datamap][crypto]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::string pseudonym_key(32, 'p'), audit_key(32, 'a');
    auto sealed_everywhere = [](std::string_view) { return false; };
    const gdpr::pseudonymiser ps(pseudonym_key);
    auto by_pseudonym = [&ps](std::string_view s) { return "p:" + ps.pseudonym(s); };
    {
        auto map = data_map::open(db, "NORMAL", by_pseudonym, sealed_everywhere,
                                  std::make_unique<topic_sealer>(pseudonym_key, "pseudonym_key_file"));
        int payload = 0;
        map->published({"u-1"}, "band-1", "health/u-1/vitals", true, &payload);
        map->published({"u-1"}, "band-1", "health/u-1/steps", true, &payload);
        map->wait_idle();
    }
    auto reopen = [&](bool with_earlier) {
        return data_map::open(db, "NORMAL", test_support::keyed_ref, sealed_everywhere,
                              std::make_unique<topic_sealer>(audit_key, "audit_key_file"),
                              with_earlier ? std::make_unique<topic_sealer>(pseudonym_key, "pseudonym_key_file") : nullptr);
    };
    CHECK(reopen(false)->unreadable_topics() == 2);
    auto map = reopen(true);
    CHECK(map->unreadable_topics() == 0);
    map->also_named(by_pseudonym);
    CHECK(map->holdings("u-1").retained_topics == std::vector<std::string>{"health/u-1/steps", "health/u-1/vitals"});
    // A topic replaced by a message without the subject's data: its row goes, whichever key sealed it.
    map->retained_replaced("health/u-1/steps");
    map->wait_idle();
    map.reset();
    map = reopen(true);
    map->also_named(by_pseudonym);
    CHECK(map->holdings("u-1").retained_topics == std::vector<std::string>{"health/u-1/vitals"});
}

TEST_CASE("a subject known under its pseudonym moves to the audit key's name when it publishes again",
          "[erasure][datamap][crypto]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::string pseudonym_key(32, 'p'), audit_key(32, 'a');
    const gdpr::pseudonymiser ps(pseudonym_key), audit(audit_key);
    auto by_pseudonym = [&ps](std::string_view s) { return "p:" + ps.pseudonym(s); };
    auto by_audit_key = [&audit](std::string_view s) { return audit.pseudonym(s); };
    auto in_clear = [](std::string_view topic) { return topic.rfind("health/", 0) != 0; };
    const std::string vitals = "health/u-1/vitals";
    {
        auto map = data_map::open(db, "NORMAL", by_pseudonym, in_clear, std::make_unique<topic_sealer>(pseudonym_key, "pseudonym_key_file"));
        int payload = 0;
        map->published({"u-1"}, "band-1", vitals, true, &payload);
        map->delivered("doctor", vitals, &payload);
        map->published({"u-2"}, "band-2", "health/u-2/vitals", true, &payload);
        map->wait_idle();
    }
    {
        // An audit key without the earlier name: u-2 is written under its new name alone.
        auto map = data_map::open(db, "NORMAL", by_audit_key, in_clear, std::make_unique<topic_sealer>(audit_key, "audit_key_file"));
        int payload = 0;
        map->published({"u-2"}, "band-2b", "health/u-2/vitals", true, &payload);
        map->wait_idle();
    }
    auto reopen = [&](bool with_earlier) {
        auto map = data_map::open(db, "NORMAL", by_audit_key, in_clear, std::make_unique<topic_sealer>(audit_key, "audit_key_file"),
                                  with_earlier ? std::make_unique<topic_sealer>(pseudonym_key, "pseudonym_key_file") : nullptr);
        if (with_earlier) map->also_named(by_pseudonym);
        return map;
    };
    auto names_on_disk = [&] {
        std::multiset<std::string> out;
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT subject_ref FROM data_map");
        while (q.step()) out.insert(q.text(0));
        return out;
    };
    {
        auto map = reopen(true);
        CHECK(map->loaded_by_pseudonym() == 2);
        CHECK(map->unknown_among({"u-1", "u-2", "u-3"}) == 1);  // only u-3 is new
        map->forget_last_publish();
        map->delivered("nurse", vitals, nullptr);  // the retained message, before u-1 publishes again
        int payload = 0;
        map->published({"u-1"}, "band-1b", "health/u-1/steps", false, &payload);
        map->published({"u-2"}, "band-2c", "health/u-2/vitals", false, &payload);  // known under both names
        const auto h1 = map->holdings("u-1");
        CHECK(h1.publishers == std::vector<std::string>{"band-1", "band-1b"});
        CHECK(h1.recipients == std::vector<std::string>{"doctor", "nurse"});
        CHECK(h1.retained_topics == std::vector<std::string>{vitals});
        CHECK(map->holdings("u-2").publishers == std::vector<std::string>{"band-2", "band-2b", "band-2c"});
        // Both names held the same retained topic: one entry holds it once.
        CHECK(map->holdings("u-2").retained_topics == std::vector<std::string>{"health/u-2/vitals"});
        map->forget_last_publish();
        map->delivered("courier", "health/u-2/vitals", nullptr);
        CHECK(map->holdings("u-2").recipients == std::vector<std::string>{"courier"});
        CHECK(map->subjects() == 2);
        // The retained message still counts once for its subject, under the one name.
        map->forget_last_publish();
        map->delivered("porter", vitals, nullptr);
        CHECK(map->holdings("u-1").recipients == std::vector<std::string>{"doctor", "nurse", "porter"});
        map->wait_idle();
    }
    const auto names = names_on_disk();
    CHECK(names.count(by_pseudonym("u-1")) == 0);
    CHECK(names.count(by_pseudonym("u-2")) == 0);
    CHECK(names.count(by_audit_key("u-1")) == 6);  // band-1, band-1b, doctor, nurse, porter, the topic
    CHECK(names.count(by_audit_key("u-2")) == 5);  // band-2, band-2b, band-2c, courier, the topic
    // The topic is sealed anew under the audit key: the pseudonymisation key is no longer needed.
    auto map = reopen(false);
    CHECK(map->unreadable_topics() == 0);
    CHECK(map->loaded_by_pseudonym() == 0);
    CHECK(map->holdings("u-1").retained_topics == std::vector<std::string>{vitals});
    map->retained_replaced(vitals);
    CHECK(map->holdings("u-1").retained_topics.empty());
}

TEST_CASE("a topic sealer gives the same stored form for the same topic and opens only its own seals",
          "[erasure][datamap][crypto]") {
    const std::string secret(32, 'k');
    topic_sealer sealer(secret, "audit_key_file");
    const std::string topic = "health/wearable/u-42/vitals";
    const std::string stored = sealer.seal(topic);
    CHECK(topic_sealer::is_sealed(stored));
    CHECK_FALSE(topic_sealer::is_sealed(topic));
    CHECK(stored.find("752d3432") == std::string::npos);  // "u-42" in hex: the topic is enciphered
    CHECK(sealer.seal(topic) == stored);  // deterministic: a row can be deleted by its topic
    CHECK(sealer.seal("health/wearable/u-43/vitals") != stored);
    std::string opened;
    REQUIRE(sealer.open(stored, opened));
    CHECK(opened == topic);

    // Another key file, or the same one in another role, gives other keys.
    topic_sealer other_role(secret, "pseudonym_key_file");
    topic_sealer other_key(std::string(32, 'j'), "audit_key_file");
    CHECK(other_role.seal(topic) != stored);
    CHECK_FALSE(other_role.open(stored, opened));
    CHECK_FALSE(other_key.open(stored, opened));
    // Edited, cut short, not hex, not a seal at all: refused.
    std::string edited = stored;
    edited.back() = edited.back() == '0' ? '1' : '0';
    CHECK_FALSE(sealer.open(edited, opened));
    CHECK_FALSE(sealer.open(stored.substr(0, stored.size() - 2), opened));
    std::string not_hex = stored;
    not_hex.replace(not_hex.size() - 2, 2, "zz");
    CHECK_FALSE(sealer.open(not_hex, opened));
    CHECK_FALSE(sealer.open(topic, opened));
    CHECK_THROWS_AS(topic_sealer(std::string(31, 'k'), "audit_key_file"), std::invalid_argument);
}

TEST_CASE("a retained topic that names its subject is stored sealed, survives a reopen and is removed when replaced",
          "[erasure][datamap][crypto]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto ref = test_support::keyed_ref;
    // As the plugin decides: a topic with a subject level may not be stored in clear.
    auto in_clear = [](std::string_view topic) { return topic.rfind("health/", 0) != 0; };
    auto sealer = [] { return std::make_unique<topic_sealer>(std::string(32, 's'), "audit_key_file"); };
    const std::string vitals = "health/wearable/u-42/vitals";
    auto retained_rows = [&] {
        std::vector<std::string> holders;
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT holder FROM data_map WHERE role = 'retained' ORDER BY holder");
        while (q.step()) holders.push_back(q.text(0));
        return holders;
    };
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
        int payload = 0;
        map->published({"u-42"}, "band-42", vitals, true, &payload);
        map->published({"u-42"}, "band-42", "fleet/band-42/status", true, &payload);
        map->wait_idle();
    }
    auto rows = retained_rows();
    REQUIRE(rows.size() == 2);
    CHECK(rows[1] == "fleet/band-42/status");
    CHECK(topic_sealer::is_sealed(rows[0]));
    CHECK(rows[0].find("u-42") == std::string::npos);
    {
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement v(raw.handle(), "SELECT version FROM schema_version WHERE component = 'data_map'");
        REQUIRE(v.step());
        CHECK(v.integer(0) == data_map::SCHEMA_VERSION);
    }

    // After a restart an erasure still finds the topic, to clear what the broker retains there.
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
        CHECK(map->unreadable_topics() == 0);
        CHECK(map->holdings("u-42").retained_topics == std::vector<std::string>{"fleet/band-42/status", vitals});
        // Deliveries of the retained message are attributed to the subject.
        map->delivered("late", vitals, nullptr);
        CHECK(map->holdings("u-42").recipients == std::vector<std::string>{"late"});
        // Replaced (or cleared): the sealed row goes, found by its stored form.
        map->retained_replaced(vitals);
        map->wait_idle();
    }
    CHECK(retained_rows() == std::vector<std::string>{"fleet/band-42/status"});

    // Under another key the seal cannot be opened: counted, never taken for a topic.
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
        int payload = 0;
        map->published({"u-42"}, "band-42", vitals, true, &payload);
        map->wait_idle();
    }
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear,
                                  std::make_unique<topic_sealer>(std::string(32, 'x'), "audit_key_file"));
        CHECK(map->unreadable_topics() == 1);
        CHECK(map->holdings("u-42").retained_topics == std::vector<std::string>{"fleet/band-42/status"});
    }
    // Without a sealer such a topic is not written at all (kept in memory).
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear);
        CHECK(map->unreadable_topics() == 1);
        int payload = 0;
        map->published({"u-7"}, "band-7", "health/wearable/u-7/vitals", true, &payload);
        CHECK(map->holdings("u-7").retained_topics == std::vector<std::string>{"health/wearable/u-7/vitals"});
        map->wait_idle();
    }
    CHECK(retained_rows().size() == 2);
    // Erasing the subject removes its sealed rows with the rest.
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
        map->forget_subject("u-42");
        map->wait_idle();
    }
    CHECK(retained_rows().empty());
}

TEST_CASE("a retained topic's row goes when the topic is replaced, whichever form an earlier run stored it in",
          "[erasure][datamap][crypto]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto ref = test_support::keyed_ref;
    auto never_in_clear = [](std::string_view) { return false; };
    auto sealer = [] { return std::make_unique<topic_sealer>(std::string(32, 's'), "audit_key_file"); };
    auto rows = [&] {
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT count(*) FROM data_map WHERE role = 'retained'");
        q.step();
        return q.integer(0);
    };
    int payload = 0;
    // Written in clear (no key file then), replaced once a key file seals such topics.
    {
        auto map = data_map::open(db, "NORMAL", ref);
        map->published({"u-1"}, "band-1", "health/wearable/u-1/vitals", true, &payload);
        map->wait_idle();
    }
    REQUIRE(rows() == 1);
    {
        auto map = data_map::open(db, "NORMAL", ref, never_in_clear, sealer());
        map->retained_replaced("health/wearable/u-1/vitals");
        map->wait_idle();
    }
    CHECK(rows() == 0);
    // Written sealed, replaced after a schema change made the topic storable in clear.
    {
        auto map = data_map::open(db, "NORMAL", ref, never_in_clear, sealer());
        map->published({"u-2"}, "band-2", "health/wearable/u-2/vitals", true, &payload);
        map->wait_idle();
    }
    REQUIRE(rows() == 1);
    {
        auto map = data_map::open(db, "NORMAL", ref, nullptr, sealer());
        REQUIRE(map->holdings("u-2").retained_topics.size() == 1);
        map->retained_replaced("health/wearable/u-2/vitals");
        map->wait_idle();
    }
    CHECK(rows() == 0);
}

TEST_CASE("a retained topic an erasure cleared is noted until the broker has saved it, sealed when it names a subject",
          "[erasure][datamap][crypto]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto ref = test_support::keyed_ref;
    auto in_clear = [](std::string_view topic) { return topic.rfind("health/", 0) != 0; };
    auto sealer = [] { return std::make_unique<topic_sealer>(std::string(32, 's'), "audit_key_file"); };
    const std::string vitals = "health/wearable/u-42/vitals", status = "fleet/band-42/status";
    auto rows = [&](const char* sql) {
        std::vector<std::string> out;
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), sql);
        while (q.step()) out.push_back(q.text(0));
        return out;
    };
    const char* const notes = "SELECT holder FROM data_map_cleared_retained ORDER BY holder";
    auto sorted = [](std::vector<std::string> v) {
        std::sort(v.begin(), v.end());
        return v;
    };
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
        int payload = 0;
        // One retained message holding two subjects: clearing it for one clears it for both.
        map->published({"u-42", "u-43"}, "band-42", vitals, true, &payload);
        map->published({"u-42"}, "band-42", status, true, &payload);
        map->wait_idle();
        REQUIRE(rows("SELECT holder FROM data_map WHERE role = 'retained'").size() == 3);
        map->retained_cleared(vitals);
        map->retained_cleared(status);
        CHECK(map->holdings("u-43").retained_topics.empty());
        CHECK(map->holdings("u-42").retained_topics.empty());
        map->wait_idle();
    }
    CHECK(rows("SELECT holder FROM data_map WHERE role = 'retained'").empty());
    auto noted = rows(notes);
    REQUIRE(noted.size() == 2);
    // A sealed form sorts first (its marker byte).
    CHECK(noted[1] == status);
    CHECK(topic_sealer::is_sealed(noted[0]));
    CHECK(noted[0].find("u-42") == std::string::npos);

    // The broker stopped without saving: the next run reads the topics to clear again.
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
        CHECK(sorted(map->clears_unsaved()) == std::vector<std::string>{status, vitals});
        CHECK(map->unreadable_clears() == 0);
    }
    // Under another key the sealed note cannot be opened: it is kept when the others go.
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear,
                                  std::make_unique<topic_sealer>(std::string(32, 'x'), "audit_key_file"));
        CHECK(map->clears_unsaved() == std::vector<std::string>{status});
        CHECK(map->unreadable_clears() == 1);
        map->clears_saved();
        CHECK(map->clears_unsaved().empty());
        map->wait_idle();
    }
    CHECK(rows(notes) == std::vector<std::string>{noted[0]});
    // Cleared again, then saved: the notes read and the notes made go.
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
        CHECK(map->clears_unsaved() == std::vector<std::string>{vitals});
        map->retained_cleared(vitals);
        map->retained_cleared("fleet/band-7/status");
        map->wait_idle();
        CHECK(rows(notes).size() == 2);
        map->clears_saved();
        map->wait_idle();
    }
    CHECK(rows(notes).empty());
    auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
    CHECK(map->clears_unsaved().empty());
}

TEST_CASE("a message shows a subject's id when its topic or payload holds it, or the payload holds an escape",
          "[erasure][datamap]") {
    test_support::temp_dir dir;
    auto map = data_map::open((dir.path() / "gdpr.db").string());
    map->names_by_pseudonym(true);
    // One recipient per message; each is a pseudonymous recipient unless its message shows the id.
    const std::vector<std::tuple<std::string, std::string, std::string>> messages{
        {"in-topic", "fleet/driver-7/telemetry", R"({"speed":5})"},
        {"in-payload", "fleet/van-1/telemetry", R"({"driver_id":"driver-7"})"},
        {"hidden", "fleet/van-1/telemetry", R"({"driver_id":"0f3a","speed":5})"},
        // "\u0064river-7" spells the id without its bytes; any escape counts.
        {"spelled", "fleet/van-1/telemetry", R"({"note":"\u0064river-7"})"},
        {"escaped", "fleet/van-1/telemetry", R"({"note":"a\"b"})"},
    };
    std::vector<int> identities(messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const auto& [reader, topic, payload] = messages[i];
        const gdpr::forwarded_message seen{payload};
        map->published({"driver-7"}, "van-1", topic, false, &identities[i], true, &seen);
        map->delivered(reader, topic, &identities[i]);
    }
    CHECK(map->holdings("driver-7").pseudonymous_recipients == std::vector<std::string>{"hidden"});
}

TEST_CASE("recipients that received a subject only by pseudonym are told apart, on disk too", "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::string by_pseudonym = R"({"driver_id":"0f3a9c","speed":50})";
    const std::string with_id = R"({"driver_id":"driver-1","speed":50})";
    {
        auto map = data_map::open(db, "NORMAL", test_support::keyed_ref);
        map->names_by_pseudonym(true);
        int p1 = 0, p2 = 0, p3 = 0, p4 = 0, p5 = 0;
        const gdpr::forwarded_message hidden{by_pseudonym};
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &p1, true, &hidden);
        map->delivered("dashboard", "fleet/van-1/telemetry", &p1);
        map->delivered("archive", "fleet/van-1/telemetry", &p1);
        map->delivered("van-2", "fleet/van-1/telemetry", &p1);  // publishes the subject's data itself, below
        // The archive gets the id later: it knows it from then on.
        const gdpr::forwarded_message shown{with_id};
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &p2, true, &shown);
        map->delivered("archive", "fleet/van-1/telemetry", &p2);
        map->delivered("dashboard-2", "fleet/van-1/telemetry", &p2);
        map->published({"driver-1"}, "van-2", "fleet/van-2/telemetry", false, &p3, true, &hidden);
        // A message whose properties the plugin does not read may show the id.
        const gdpr::forwarded_message unread{by_pseudonym, true};
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &p4, true, &unread);
        map->delivered("props-reader", "fleet/van-1/telemetry", &p4);
        // A retained message hiding the id, delivered on subscribe (the broker's pointer to it).
        map->published({"driver-1"}, "van-3", "fleet/van-3/telemetry", true, &p5, true, &hidden);
        map->forget_last_publish();
        map->delivered("late", "fleet/van-3/telemetry", &p5, by_pseudonym);
        // Another message on its topic, not tied to a publish (a QoS 2 release, a queued one, one
        // the broker placed where the retained message was after freeing it): it may show the id.
        int released = 0;
        map->delivered("released-to", "fleet/van-3/telemetry", &released, by_pseudonym);
        map->delivered("queued-to", "fleet/van-3/telemetry", nullptr, by_pseudonym);
        map->delivered("same-address", "fleet/van-3/telemetry", &p5, with_id);
        // A message on its topic with text properties: one like it may sit where the retained
        // message was, with the same payload, so the retained message's deliveries show the id.
        int with_properties = 0;
        map->published({"driver-1"}, "van-3", "fleet/van-3/telemetry", false, &with_properties, true, &unread);
        map->forget_last_publish();
        map->delivered("after-properties", "fleet/van-3/telemetry", &p5, by_pseudonym);
        // Without what recipients get, the id counts as shown.
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &p1);
        map->delivered("unknown-view", "fleet/van-1/telemetry", &p1);

        const auto h = map->holdings("driver-1");
        CHECK(h.recipients == std::vector<std::string>{"after-properties", "archive", "dashboard", "dashboard-2", "late",
                                                       "props-reader", "queued-to", "released-to", "same-address",
                                                       "unknown-view", "van-2"});
        CHECK(h.pseudonymous_recipients == std::vector<std::string>{"dashboard", "late"});
        map->wait_idle();
        CHECK(map->take_write_failures().first == 0);
    }
    // dashboard, late; archive and van-2 from before they knew the id
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map WHERE role = 'pseudonymous_recipient'") == 4);
    auto map = data_map::open(db, "NORMAL", test_support::keyed_ref);
    map->names_by_pseudonym(true);
    CHECK(map->holdings("driver-1").pseudonymous_recipients == std::vector<std::string>{"dashboard", "late"});
    // After a restart the retained message is not known: a late subscriber counts as told the id.
    int p5 = 0;
    map->delivered("later", "fleet/van-3/telemetry", &p5, by_pseudonym);
    CHECK(map->holdings("driver-1").pseudonymous_recipients == std::vector<std::string>{"dashboard", "late"});
    CHECK(map->holdings("driver-1").recipients.size() == 12);

    // A retained message kept beside the one the topic held (replaces false: a will the broker may
    // still refuse): either may be the one retained, and only a delivery of the newer one is known
    // by what it shows.
    int kept = 0, beside = 0;
    const std::string shows_5 = R"({"driver_id":"driver-5"})";
    const gdpr::forwarded_message shown{shows_5}, hidden{by_pseudonym};
    map->published({"driver-5"}, "van-5", "fleet/van-5/telemetry", true, &kept, true, &shown);
    map->published({"driver-5"}, "van-5", "fleet/van-5/telemetry", true, &beside, false, &hidden);
    map->forget_last_publish();
    map->delivered("gets-newer", "fleet/van-5/telemetry", &beside, by_pseudonym);
    map->delivered("gets-older", "fleet/van-5/telemetry", &kept, shows_5);
    CHECK(map->holdings("driver-5").recipients == std::vector<std::string>{"gets-newer", "gets-older"});
    CHECK(map->holdings("driver-5").pseudonymous_recipients == std::vector<std::string>{"gets-newer"});
    int showing = 0;
    const gdpr::forwarded_message shows_6{R"({"driver_id":"driver-6"})"};
    map->published({"driver-6"}, "van-6", "fleet/van-6/telemetry", true, &kept, true, &hidden);
    map->published({"driver-6"}, "van-6", "fleet/van-6/telemetry", true, &showing, false, &shows_6);
    map->forget_last_publish();
    map->delivered("subscriber", "fleet/van-6/telemetry", &showing, R"({"driver_id":"driver-6"})");
    CHECK(map->holdings("driver-6").recipients == std::vector<std::string>{"subscriber"});
    CHECK(map->holdings("driver-6").pseudonymous_recipients.empty());

    // Pseudonyms off: every recipient has received the id.
    auto plain = data_map::open((dir.path() / "plain.db").string());
    int p = 0;
    plain->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &p, true, &hidden);
    plain->delivered("dashboard", "fleet/van-1/telemetry", &p);
    CHECK(plain->holdings("driver-1").recipients == std::vector<std::string>{"dashboard"});
    CHECK(plain->holdings("driver-1").pseudonymous_recipients.empty());
}

TEST_CASE("a version 2 data map is rebuilt to admit pseudonymous recipients, its rows kept", "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    write_early_data_map(db, 2, "('driver-1', 'publisher', 'van-1', 1), ('driver-1', 'recipient', 'dashboard', 7)");
    {
        auto map = data_map::open(db);
        map->names_by_pseudonym(true);
        CHECK(map->holdings("driver-1").publishers == std::vector<std::string>{"van-1"});
        CHECK(map->holdings("driver-1").recipients == std::vector<std::string>{"dashboard"});
        int p = 0;
        const gdpr::forwarded_message hidden{R"({"driver_id":"0f3a9c"})"};
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &p, true, &hidden);
        map->delivered("viewer", "fleet/van-1/telemetry", &p);
        map->wait_idle();
        CHECK(map->take_write_failures().first == 0);
    }
    gdpr::sqlite_db raw(db);
    gdpr::sqlite_statement v(raw.handle(), "SELECT version FROM schema_version WHERE component = 'data_map'");
    REQUIRE(v.step());
    CHECK(v.integer(0) == 3);
    gdpr::sqlite_statement kept(raw.handle(), "SELECT first_seen_ms FROM data_map WHERE holder = 'dashboard'");
    REQUIRE(kept.step());
    CHECK(kept.integer(0) == 7);
    // The old table's check would have refused the row (and INSERT OR IGNORE skipped it unsaid).
    gdpr::sqlite_statement added(raw.handle(), "SELECT role FROM data_map WHERE holder = 'viewer'");
    REQUIRE(added.step());
    CHECK(added.text(0) == "pseudonymous_recipient");

    // A table that admits the role already still has its version raised.
    const auto current_table = (dir.path() / "current-table.db").string();
    data_map::open(current_table)->wait_idle();
    {
        gdpr::sqlite_db lowered(current_table);
        lowered.exec("UPDATE schema_version SET version = 2 WHERE component = 'data_map'");
    }
    data_map::open(current_table)->wait_idle();
    {
        gdpr::sqlite_db raised(current_table);
        gdpr::sqlite_statement version(raised.handle(), "SELECT version FROM schema_version WHERE component = 'data_map'");
        REQUIRE(version.step());
        CHECK(version.integer(0) == 3);
    }

    // The table's definition decides, not the version it claims.
    const auto claims_3 = (dir.path() / "claims-3.db").string();
    write_early_data_map(claims_3, 3, "('driver-1', 'publisher', 'van-1', 1)");
    {
        auto map = data_map::open(claims_3);
        map->names_by_pseudonym(true);
        int p = 0;
        const gdpr::forwarded_message hidden{R"({"driver_id":"0f3a9c"})"};
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &p, true, &hidden);
        map->delivered("viewer", "fleet/van-1/telemetry", &p);
        map->wait_idle();
    }
    CHECK(scalar_in(claims_3, "SELECT count(*) FROM data_map WHERE role = 'pseudonymous_recipient'") == 1);
}

TEST_CASE("a recipient that received the id under one of the subject's names is no pseudonymous recipient",
          "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto earlier = [](std::string_view s) { return "p:" + test_support::keyed_ref("earlier:" + std::string(s)); };
    {
        data_map::open(db)->wait_idle();  // the tables
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement insert(raw.handle(), "INSERT INTO data_map VALUES (?1, ?2, ?3, 1)");
        for (const auto& [name, role, holder] :
             std::vector<std::tuple<std::string, std::string, std::string>>{
                 {earlier("driver-1"), "recipient", "dashboard"},
                 {test_support::keyed_ref("driver-1"), "pseudonymous_recipient", "dashboard"},
                 {test_support::keyed_ref("driver-1"), "pseudonymous_recipient", "panel"},
                 {earlier("driver-1"), "publisher", "van-1"},
                 {test_support::keyed_ref("driver-1"), "pseudonymous_recipient", "van-1"}}) {
            insert.bind(1, name).bind(2, role).bind(3, holder);
            insert.run();
        }
    }
    auto map = data_map::open(db, "NORMAL", test_support::keyed_ref);
    map->also_named(earlier);
    const auto h = map->holdings("driver-1");
    CHECK(h.recipients == std::vector<std::string>{"dashboard", "panel", "van-1"});
    CHECK(h.pseudonymous_recipients == std::vector<std::string>{"panel"});
    CHECK(map->knows_id("driver-1", "dashboard"));
    CHECK(map->knows_id("driver-1", "van-1"));
    CHECK_FALSE(map->knows_id("driver-1", "panel"));
    CHECK_FALSE(map->knows_id("driver-1", "stranger"));
}

TEST_CASE("a version 1 data map is taken over as it is and marked version 3", "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    write_early_data_map(db, 1, "('driver-1', 'publisher', 'van-1', 1), ('driver-1', 'retained', 'fleet/van-1/status', 1)");
    auto map = data_map::open(db);
    CHECK(map->holdings("driver-1").publishers == std::vector<std::string>{"van-1"});
    CHECK(map->holdings("driver-1").retained_topics == std::vector<std::string>{"fleet/van-1/status"});
    gdpr::sqlite_db raw(db);
    gdpr::sqlite_statement v(raw.handle(), "SELECT version FROM schema_version WHERE component = 'data_map'");
    REQUIRE(v.step());
    CHECK(v.integer(0) == 3);
}

TEST_CASE("a data map written by a newer plugin is refused", "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    data_map::open(db)->wait_idle();
    {
        gdpr::sqlite_db raw(db);
        raw.exec("UPDATE schema_version SET version = " + std::to_string(data_map::SCHEMA_VERSION + 1) +
                 " WHERE component = 'data_map'");
    }
    CHECK_THROWS_WITH(data_map::open(db), Catch::Contains("newer version"));
}

TEST_CASE("the data map tells which of a publish's subjects it does not know yet", "[erasure][datamap][quota]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto ref = test_support::keyed_ref;
    {
        auto map = data_map::open(db, "NORMAL", ref);
        CHECK(map->unknown_among({"driver-1", "driver-2"}) == 2);
        int payload = 0;
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &payload);
        CHECK(map->unknown_among({"driver-1", "driver-2"}) == 1);
        CHECK(map->unknown_among({"driver-1"}) == 0);
        CHECK(map->unknown_among({}) == 0);
        map->wait_idle();
    }
    // Known from the file after a restart, by reference only (nothing cached by id yet).
    auto map = data_map::open(db, "NORMAL", ref);
    CHECK(map->unknown_among({"driver-1", "driver-2"}) == 1);
    map->forget_subject("driver-1");  // erased: new again
    CHECK(map->unknown_among({"driver-1"}) == 1);
    auto plain = data_map::open((dir.path() / "plain.db").string());
    int p = 0;
    plain->published({"driver-3"}, "van-3", "fleet/van-3/telemetry", false, &p);
    CHECK(plain->unknown_among({"driver-3", "driver-4"}) == 1);
    map->wait_idle();
    plain->wait_idle();
}

TEST_CASE("a new subject's keyed name is computed once for the allowance check and the publish", "[erasure][datamap][quota]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    int namings = 0;
    auto counted = [&namings](std::string_view s) {
        ++namings;
        return test_support::keyed_ref(s);
    };
    {
        auto map = data_map::open(db, "NORMAL", counted);
        int payload = 0;
        CHECK(map->unknown_among({"driver-1", "driver-2"}) == 2);
        CHECK(namings == 2);
        map->published({"driver-1", "driver-2"}, "van-1", "fleet/van-1/telemetry", false, &payload);
        CHECK(namings == 2);
        CHECK(map->names_of("driver-2") == std::vector<std::string>{test_support::keyed_ref("driver-2")});
        namings = 0;
        // Once published, a subject is known by id: no keyed hash at all.
        CHECK(map->unknown_among({"driver-1"}) == 0);
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &payload);
        CHECK(namings == 0);
        // Erased and seen again without an allowance check first: named anew, under the same name.
        map->forget_subject("driver-1");
        map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", false, &payload);
        CHECK(map->holdings("driver-1").publishers == std::vector<std::string>{"van-1"});
        map->wait_idle();
    }
    // After a restart the file knows the subjects by name only: one keyed hash each, not two.
    namings = 0;
    auto map = data_map::open(db, "NORMAL", counted);
    CHECK(map->unknown_among({"driver-2"}) == 0);
    int payload = 0;
    map->published({"driver-2"}, "van-1", "fleet/van-1/telemetry", false, &payload);
    CHECK(namings == 1);
    CHECK(map->holdings("driver-2").publishers == std::vector<std::string>{"van-1"});
    map->wait_idle();
}

TEST_CASE("an erasure fans out to every holder, is acknowledged, and ends with a receipt", "[erasure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto map = data_map::open(db);
    int p = 0;
    map->published({"driver-1"}, "van-1", "fleet/van-1/telemetry", true, &p);
    map->delivered("dashboard", "fleet/van-1/telemetry", &p);
    map->published({"driver-1"}, "van-2", "fleet/van-2/telemetry", false, &p);
    broker_side broker;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    const std::int64_t t0 = 1'700'000'000'000;

    const auto* r = start_request(*m, *map, "req-1", "driver-1", t0);
    REQUIRE(r);
    REQUIRE(r->targets.size() == 3);
    CHECK(r->targets[0].client_id == "dashboard");
    CHECK(r->targets[0].roles == gdpr::role_recipient);
    CHECK(r->targets[1].roles == gdpr::role_publisher);
    // The plugin's own part runs once the request is durable.
    CHECK(broker.cleared == std::vector<std::string>{"fleet/van-1/telemetry"});
    CHECK(broker.consent_removed == std::vector<std::string>{"driver-1"});
    CHECK(broker.shredded == std::vector<std::string>{"driver-1"});
    CHECK(map->holdings("driver-1").empty());

    m->tick(t0);
    REQUIRE(broker.sent.size() == 3);
    CHECK(broker.sent[0].second["requestId"] == "req-1");
    CHECK(broker.sent[0].second["subject"] == "driver-1");
    CHECK(broker.sent[0].second.contains("deadline"));
    CHECK(broker.sent[0].second["pseudonym"] == "pseudo-driver-1");  // what a recipient holds instead

    CHECK(m->acknowledge("van-1", ack("req-1", "erased"), t0 + 10).empty());
    CHECK(m->acknowledge("van-1", ack("req-1", "erased"), t0 + 11).empty());  // QoS 1 repeat: no change
    CHECK(m->acknowledge("stranger", ack("req-1", "erased"), t0 + 12) == "the client is not a target of the request");
    CHECK(m->acknowledge("van-2", "not json", t0) == "the acknowledgement is not a JSON object");
    CHECK(m->acknowledge("van-2", ack("req-1", "done"), t0).find("must be erased, not_found or failed") != std::string::npos);
    CHECK(m->acknowledge("van-2", ack("nope", "erased"), t0) == "the acknowledgement names an unknown request");
    CHECK(m->acknowledge("van-2", ack("req-1", "not_found"), t0 + 20).empty());
    CHECK(r->state == gdpr::request_state::in_progress);
    CHECK(json::parse(gdpr::receipt_json(*r))["subject"] == "driver-1");  // to operators, while in progress
    CHECK(m->acknowledge("dashboard", ack("req-1", "erased"), t0 + 30).empty());
    CHECK(r->state == gdpr::request_state::completed);
    CHECK(m->in_progress() == 0);

    const auto receipt = json::parse(gdpr::receipt_json(*r));
    CHECK(receipt["state"] == "completed");
    // Finished: the id is gone from memory too (GDPR Art. 5(1)(c)); the reference stays.
    CHECK_FALSE(receipt.contains("subject"));
    CHECK(r->subject.empty());
    CHECK(r->pseudonym.empty());
    CHECK(receipt["subjectRef"] == r->subject_ref);
    CHECK_FALSE(r->subject_ref.empty());
    CHECK(receipt["totals"]["acknowledged"] == 3);
    CHECK(receipt["totals"]["failed"] == 0);
    CHECK(receipt["targets"][1]["state"] == "erased");
    CHECK(receipt["targets"][2]["state"] == "not_found");
    CHECK(receipt["targets"][2]["outcome"] == "acknowledged");
    CHECK(receipt["plugin"]["retainedCleared"].size() == 1);
    CHECK(receipt["plugin"]["keyShredded"] == true);
    CHECK(broker.alerts.empty());
    CHECK(std::find(broker.steps.begin(), broker.steps.end(), "erasure_receipt") != broker.steps.end());
}

TEST_CASE("unanswered commands are retried with backoff, offline targets wait, the deadline ends them", "[erasure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto map = data_map::open(db);
    int p = 0;
    map->published({"driver-1"}, "silent", "t/1", false, &p);
    map->published({"driver-1"}, "offline", "t/2", false, &p);
    map->published({"driver-1"}, "comes-back", "t/3", false, &p);
    broker_side broker;
    broker.connected["offline"] = false;
    broker.connected["comes-back"] = false;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    const std::int64_t t0 = 1'700'000'000'000;
    REQUIRE(start_request(*m, *map, "req-1", "driver-1", t0));

    m->tick(t0);
    CHECK(broker.sent_to("silent") == 1);
    CHECK(broker.sent_to("offline") == 0);
    m->tick(t0 + 999);
    CHECK(broker.sent_to("silent") == 1);
    m->tick(t0 + 1000);  // first retry after 1 s
    CHECK(broker.sent_to("silent") == 2);
    m->tick(t0 + 2999);
    CHECK(broker.sent_to("silent") == 2);
    m->tick(t0 + 3000);  // then 2 s later
    CHECK(broker.sent_to("silent") == 3);
    m->tick(t0 + 7000);  // then 4 s
    CHECK(broker.sent_to("silent") == 4);
    m->tick(t0 + 15000);  // capped at 8 s
    CHECK(broker.sent_to("silent") == 5);
    m->tick(t0 + 23000);
    CHECK(broker.sent_to("silent") == 6);

    // A device that reconnects gets its pending command at once.
    broker.connected["comes-back"] = true;
    m->client_connected("comes-back", t0 + 24000);
    m->tick(t0 + 24000);
    CHECK(broker.sent_to("comes-back") == 1);
    CHECK(m->acknowledge("comes-back", ack("req-1", "erased"), t0 + 24100).empty());

    m->tick(t0 + 60'000);  // the deadline
    const auto* r = m->find("req-1");
    REQUIRE(r);
    CHECK(r->state == gdpr::request_state::completed_with_failures);
    const auto receipt = json::parse(gdpr::receipt_json(*r));
    std::map<std::string, std::string> outcome;
    for (const auto& t : receipt["targets"]) outcome[t["clientId"]] = t["outcome"];
    CHECK(outcome["comes-back"] == "acknowledged");
    CHECK(outcome["silent"] == "failed");
    CHECK(outcome["offline"] == "unreachable");
    CHECK(receipt["totals"]["failed"] == 1);
    CHECK(receipt["totals"]["unreachable"] == 1);
    REQUIRE(broker.alerts.size() >= 2);
    CHECK(broker.alerts[0].first == "erasure_deadline");
    CHECK(broker.alerts.back().first == "erasure_incomplete");
    for (const auto& a : broker.alerts) CHECK(a.second.find("driver-1") == std::string::npos);
}

TEST_CASE("a request id is one request, the rate limit refuses a second erasure, and a restart resumes", "[erasure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::int64_t t0 = 1'700'000'000'000;
    {
        auto map = data_map::open(db);
        int p = 0;
        map->published({"driver-1"}, "van-1", "t/1", false, &p);
        map->published({"driver-1"}, "van-2", "t/2", false, &p);
        broker_side broker;
        auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
        const auto* first = start_request(*m, *map, "req-1", "driver-1", t0);
        REQUIRE(first);
        const auto* again = start_request(*m, *map, "req-1", "driver-1", t0 + 5);
        CHECK(again == first);
        std::string error;
        CHECK_FALSE(start_request(*m, *map, "req-1", "driver-2", t0 + 5, &error));
        CHECK(error.find("already used for another subject") != std::string::npos);
        CHECK_FALSE(start_request(*m, *map, "req-2", "driver-1", t0 + 60'000, &error));
        CHECK(error.find("rate limit") != std::string::npos);
        CHECK(start_request(*m, *map, "req-3", "driver-9", t0 + 5));  // another subject is not limited
        m->tick(t0);
        CHECK(m->acknowledge("van-1", ack("req-1", "erased"), t0 + 10).empty());
        m->wait_idle();
        map->wait_idle();
    }
    // The broker restarts: van-1's answer is kept, van-2 is asked again at once.
    auto map = data_map::open(db);
    broker_side broker;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    const auto* r = m->find("req-1");
    REQUIRE(r);
    CHECK(r->state == gdpr::request_state::in_progress);
    CHECK(m->in_progress() == 1);  // req-3 had no holders and completed
    m->tick(t0 + 20);
    CHECK(broker.sent_to("van-1") == 0);
    CHECK(broker.sent_to("van-2") == 1);
    CHECK(broker.sent[0].second["subject"] == "driver-1");
    CHECK(m->acknowledge("van-2", ack("req-1", "erased"), t0 + 30).empty());
    CHECK(r->state == gdpr::request_state::completed);
    std::string error;
    CHECK_FALSE(start_request(*m, *map, "req-4", "driver-1", t0 + 1000, &error));
    CHECK(error.find("rate limit") != std::string::npos);  // the limit survives the restart
    m->wait_idle();
    m.reset();
    // Finished, the register keeps only the subject's reference.
    gdpr::sqlite_db raw(db);
    gdpr::sqlite_statement q(raw.handle(), "SELECT subject, subject_ref FROM erasure_requests WHERE request_id = 'req-1'");
    REQUIRE(q.step());
    CHECK(q.text(0).empty());
    CHECK(q.text(1) == test_support::keyed_ref("driver-1"));
}

TEST_CASE("a recipient that received a subject only by pseudonym is sent the pseudonym, not the id",
          "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::int64_t t0 = 1'700'000'000'000;
    const std::string topic = "fleet/van-1/telemetry";
    const gdpr::forwarded_message hidden{R"({"driver_id":"0f3a9c","speed":50})"};  // as pseudonymised
    const gdpr::forwarded_message shown{R"({"driver_id":"driver-1","speed":50})"};
    auto command_to = [](const broker_side& b, const std::string& client) {
        for (const auto& [c, cmd] : b.sent)
            if (c == client) return cmd;
        return json();
    };
    {
        auto map = data_map::open(db);
        map->names_by_pseudonym(true);
        int p = 0, q = 0;
        map->published({"driver-1"}, "van-1", topic, false, &p, true, &hidden);
        map->delivered("dashboard", topic, &p);
        map->delivered("panel", topic, &p);
        map->published({"driver-1"}, "van-1", topic, false, &q, true, &shown);
        map->delivered("archive", topic, &q);
        broker_side broker;
        auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
        const auto* r = start_request(*m, *map, "req-1", "driver-1", t0);
        REQUIRE(r);
        REQUIRE(r->targets.size() == 4);
        CHECK(r->targets[0].roles == gdpr::role_recipient);                             // archive
        CHECK(r->targets[1].roles == (gdpr::role_recipient | gdpr::role_pseudonymous));  // dashboard
        CHECK(r->targets[3].roles == gdpr::role_publisher);                             // van-1
        m->tick(t0);
        REQUIRE(broker.sent.size() == 4);
        for (const char* told_id : {"archive", "van-1"}) {
            INFO(told_id);
            CHECK(command_to(broker, told_id)["subject"] == "driver-1");
            CHECK(command_to(broker, told_id)["pseudonym"] == "pseudo-driver-1");
        }
        for (const char* by_pseudonym : {"dashboard", "panel"}) {
            INFO(by_pseudonym);
            CHECK_FALSE(command_to(broker, by_pseudonym).contains("subject"));
            CHECK(command_to(broker, by_pseudonym)["pseudonym"] == "pseudo-driver-1");
            CHECK(command_to(broker, by_pseudonym)["requestId"] == "req-1");
        }
        const auto receipt = json::parse(gdpr::receipt_json(*r));
        CHECK(receipt == gdpr::receipt_document(*r));
        CHECK(receipt["targets"][1]["subjectNamedBy"] == "pseudonym");
        CHECK(receipt["targets"][1]["roles"] == json::array({"recipient"}));
        CHECK_FALSE(receipt["targets"][0].contains("subjectNamedBy"));
        CHECK(m->acknowledge("van-1", ack("req-1", "erased"), t0 + 10).empty());
        CHECK(m->acknowledge("archive", ack("req-1", "erased"), t0 + 10).empty());
        // The dashboard receives the id after the request: its next command names it.
        int later = 0;
        map->published({"driver-1"}, "van-1", topic, false, &later, true, &shown);
        map->delivered("dashboard", topic, &later);
        broker.sent.clear();
        m->tick(t0 + 1'000);  // the first retry
        REQUIRE(broker.sent_to("dashboard") == 1);
        CHECK(command_to(broker, "dashboard")["subject"] == "driver-1");
        REQUIRE(broker.sent_to("panel") == 1);
        CHECK_FALSE(command_to(broker, "panel").contains("subject"));
        CHECK_FALSE(json::parse(gdpr::receipt_json(*r))["targets"][1].contains("subjectNamedBy"));
        m->wait_idle();
        map->wait_idle();
    }
    // After a restart, the panel is still named by pseudonym and the dashboard now by id.
    auto map = data_map::open(db);
    map->names_by_pseudonym(true);
    broker_side broker;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    m->tick(t0 + 1'020);
    CHECK(broker.sent_to("archive") == 0);
    REQUIRE(broker.sent_to("panel") == 1);
    CHECK_FALSE(command_to(broker, "panel").contains("subject"));
    REQUIRE(broker.sent_to("dashboard") == 1);
    CHECK(command_to(broker, "dashboard")["subject"] == "driver-1");
    const auto* r = m->find("req-1");
    REQUIRE(r);
    CHECK_FALSE(json::parse(gdpr::receipt_json(*r))["targets"][1].contains("subjectNamedBy"));

    // With no pseudonym to name it by (the key file taken away), the panel is told the id.
    m->wait_idle();
    m.reset();
    broker_side without_key;
    auto fx = without_key.effects();
    fx.pseudonym = nullptr;
    m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, std::move(fx));
    REQUIRE(m->find("req-1"));
    CHECK(m->find("req-1")->targets[1].roles == gdpr::role_recipient);  // the dashboard, as the register kept it
    CHECK(m->find("req-1")->targets[2].roles == (gdpr::role_recipient | gdpr::role_pseudonymous));  // the panel
    m->tick(t0 + 1'030);
    REQUIRE(without_key.sent_to("panel") == 1);
    CHECK(command_to(without_key, "panel")["subject"] == "driver-1");
    CHECK_FALSE(command_to(without_key, "panel").contains("pseudonym"));
}

TEST_CASE("requests made before a key file named subjects take the subject's reference at the next start",
          "[erasure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::int64_t t0 = 1'700'000'000'000;
    const std::string keyed_form_id(32, 'c');
    {
        auto map = data_map::open(db);
        broker_side broker;
        auto fx = broker.effects();
        fx.subject_ref = nullptr;  // no key file: the register names the subject by id
        fx.record = nullptr;       // and there is no audit trail
        auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, std::move(fx));
        REQUIRE(start_request(*m, *map, "before-key", "driver-1", t0));
        REQUIRE(start_request(*m, *map, "keyed-form", keyed_form_id, t0));
        m->tick(t0);
        m->wait_idle();
    }
    auto names = [&] {
        std::map<std::string, std::string> out;
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT request_id, subject, subject_ref FROM erasure_requests");
        while (q.step()) out[q.text(0)] = q.text(1) + "|" + q.text(2);
        return out;
    };
    REQUIRE(names()["before-key"] == "|driver-1");  // finished: only the name is kept, here the id itself
    auto map = data_map::open(db, "NORMAL", test_support::keyed_ref);
    broker_side broker;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    CHECK(m->requests_renamed() == 1);
    const std::string ref = test_support::keyed_ref("driver-1");
    CHECK(names()["before-key"] == "|" + ref);
    CHECK(names()["keyed-form"] == "|" + keyed_form_id);  // cannot be told from a reference: left
    REQUIRE(m->find("before-key"));
    CHECK(m->find("before-key")->subject_ref == ref);
    // The same request asked again is answered as itself, and the subject's rate limit still holds.
    CHECK(start_request(*m, *map, "before-key", "driver-1", t0 + 5) == m->find("before-key"));
    std::string error;
    CHECK_FALSE(start_request(*m, *map, "again", "driver-1", t0 + 60'000, &error));
    CHECK(error.find("rate limit") != std::string::npos);
}

TEST_CASE("once an audit key names subjects, a request in progress under a pseudonym takes the new name and finishes",
          "[erasure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::int64_t t0 = 1'700'000'000'000;
    const gdpr::pseudonymiser ps(std::string(32, 'p')), audit(std::string(32, 'a'));
    auto by_pseudonym = [&ps](std::string_view s) { return "p:" + ps.pseudonym(s); };
    auto by_audit_key = [&audit](std::string_view s) { return audit.pseudonym(s); };
    {
        auto map = data_map::open(db, "NORMAL", by_pseudonym);
        int p = 0;
        map->published({"driver-1"}, "van-1", "t/1", false, &p);
        map->published({"driver-1"}, "van-2", "t/2", false, &p);
        broker_side broker;
        auto fx = broker.effects();
        fx.subject_ref = by_pseudonym;
        auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, std::move(fx));
        REQUIRE(start_request(*m, *map, "in-progress", "driver-1", t0));
        REQUIRE(start_request(*m, *map, "done-before", "driver-7", t0));  // no holders: finished at once
        m->tick(t0);
        CHECK(m->acknowledge("van-1", ack("in-progress", "erased"), t0 + 10).empty());
        m->wait_idle();
        map->wait_idle();
    }
    auto row = [&](const std::string& id) {
        gdpr::sqlite_db raw(db);
        gdpr::sqlite_statement q(raw.handle(), "SELECT subject, subject_ref FROM erasure_requests WHERE request_id = ?1");
        q.bind(1, id);
        REQUIRE(q.step());
        return std::make_pair(q.text(0), q.text(1));
    };
    REQUIRE(row("done-before") == std::make_pair(std::string(), by_pseudonym("driver-7")));
    auto map = data_map::open(db, "NORMAL", by_audit_key);  // the register does not depend on the map's names
    broker_side broker;
    auto fx = broker.effects();
    fx.subject_ref = by_audit_key;
    fx.earlier_subject_refs.push_back(by_pseudonym);
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, std::move(fx));
    CHECK(m->requests_renamed() == 1);
    CHECK(row("in-progress") == std::make_pair(std::string("driver-1"), by_audit_key("driver-1")));
    CHECK(row("done-before").second == by_pseudonym("driver-7"));  // its id is gone: it keeps the earlier name
    // Both are still themselves, and the rate limit still holds, under either name.
    CHECK(start_request(*m, *map, "in-progress", "driver-1", t0 + 20) == m->find("in-progress"));
    CHECK(start_request(*m, *map, "done-before", "driver-7", t0 + 20) == m->find("done-before"));
    std::string error;
    CHECK_FALSE(start_request(*m, *map, "again", "driver-7", t0 + 60'000, &error));
    CHECK(error.find("rate limit") != std::string::npos);
    CHECK_FALSE(start_request(*m, *map, "done-before", "driver-8", t0 + 20, &error));
    CHECK(error.find("already used for another subject") != std::string::npos);
    m->tick(t0 + 30);
    CHECK(broker.sent_to("van-1") == 0);
    CHECK(broker.sent_to("van-2") == 1);
    CHECK(m->acknowledge("van-2", ack("in-progress", "erased"), t0 + 40).empty());
    CHECK(m->find("in-progress")->state == gdpr::request_state::completed);
    m->wait_idle();
    CHECK(row("in-progress") == std::make_pair(std::string(), by_audit_key("driver-1")));
}

TEST_CASE("a holder added to a request whose first write failed is written when the request is saved again",
          "[erasure][failure]") {
    erasure_world w({"van-1"});
    auto& m = w.m;
    {
        gdpr::sqlite_db db(w.db);
        db.exec("CREATE TRIGGER fail_late BEFORE INSERT ON erasure_targets WHEN NEW.client_id = 'late-van' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    }
    bool answered = false;
    m->request("req-1", "driver-1", "username:ops", T0, [&](const erasure_request*, const std::string&) { answered = true; });
    // Publishes the subject's data while the request is being written: a holder the request takes on afterwards.
    w.map->published({"driver-1"}, "late-van", "t/2", false, &w.payload);
    settle(*m, *w.map, [&] { return answered; });
    REQUIRE(answered);
    REQUIRE(m->find("req-1")->targets.size() == 2);
    w.map->wait_idle();  // the late holder's write fails, on the data map's connection with its forgetting
    w.map->drain();
    m->wait_idle();
    m->drain();
    REQUIRE_FALSE(w.broker.alerts.empty());
    CHECK(w.broker.alerts.back().first == "erasure_register");
    // Still failing: saved again every RESAVE_DELAY_MS, alerted at most once a minute.
    const auto alerts = w.broker.alerts.size();
    for (int i = 1; i <= 3; ++i) {
        m->tick(T0 + i * gdpr::erasure_manager::RESAVE_DELAY_MS);
        m->wait_idle();
        m->drain();
    }
    CHECK(w.broker.alerts.size() == alerts);
    {
        gdpr::sqlite_db db(w.db);
        db.exec("DROP TRIGGER fail_late");
    }
    m->tick(T0 + 4 * gdpr::erasure_manager::RESAVE_DELAY_MS);
    m->wait_idle();
    w.map->wait_idle();
    gdpr::sqlite_db db(w.db);
    gdpr::sqlite_statement q(db.handle(), "SELECT roles FROM erasure_targets WHERE request_id = 'req-1' AND client_id = 'late-van'");
    REQUIRE(q.step());  // on disk: a restart would still tell it
    CHECK(q.integer(0) != 0);
    CHECK(scalar_in(w.db, "SELECT count(*) FROM data_map") == 0);  // the data map forgot the subject all the same
}

TEST_CASE("the holders a request takes from the data map are written with its forgetting them, in one transaction",
          "[erasure][failure]") {
    erasure_world w({"van-1"});
    auto& m = w.m;
    {
        // The data map's deletion fails: the holder it gave the request is not written either.
        gdpr::sqlite_db db(w.db);
        db.exec("CREATE TRIGGER keep_map BEFORE DELETE ON data_map BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    }
    bool answered = false;
    m->request("req-1", "driver-1", "username:ops", T0, [&](const erasure_request*, const std::string&) { answered = true; });
    w.map->published({"driver-1"}, "late-van", "t/2", false, &w.payload);
    settle(*m, *w.map, [&] { return answered; });
    REQUIRE(answered);
    w.map->wait_idle();
    w.map->drain();  // failed: the register saves again in its own time, the map forgets again
    m->wait_idle();
    CHECK(scalar_in(w.db, "SELECT count(*) FROM erasure_targets WHERE client_id = 'late-van'") == 0);  // rolled back
    CHECK(scalar_in(w.db, "SELECT count(*) FROM data_map") == 2);  // with the deletion
    CHECK(w.map->take_forget_failures().first >= 1);  // tried again at once by a wait_idle, if drained before
    // Holders noted after the subject was forgotten, a new one and one that comes back (its row
    // still on disk), stay on disk after the second try.
    int later = 0;
    w.map->published({"driver-1"}, "later-van", "t/3", false, &later);
    w.map->published({"driver-1"}, "van-1", "t/1", false, &later);
    w.map->flush();
    {
        gdpr::sqlite_db db(w.db);
        db.exec("DROP TRIGGER keep_map");
    }
    w.map->wait_idle();  // tried again at once
    w.map->drain();
    CHECK(w.map->take_forget_failures().first == 0);
    gdpr::sqlite_db db(w.db);
    gdpr::sqlite_statement left(db.handle(), "SELECT holder FROM data_map ORDER BY holder");
    REQUIRE(left.step());
    CHECK(left.text(0) == "later-van");
    REQUIRE(left.step());
    CHECK(left.text(0) == "van-1");
    CHECK_FALSE(left.step());
    CHECK(scalar_in(w.db, "SELECT count(*) FROM erasure_targets WHERE client_id = 'late-van'") == 1);  // the second try
}

TEST_CASE("forgetting a subject removes its rows whatever their time, even one ahead of the clock", "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto map = data_map::open(db);
    int p = 0;
    map->published({"driver-1"}, "van-1", "t/1", false, &p);
    map->wait_idle();
    {
        gdpr::sqlite_db raw(db);  // noted before the clock was set back
        raw.exec("UPDATE data_map SET first_seen_ms = 9000000000000");
    }
    map->forget_subject("driver-1");
    map->wait_idle();
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map") == 0);
}

TEST_CASE("a failed forgetting is tried again at a flush once its delay has passed", "[erasure][failure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto map = data_map::open(db);
    map->forget_retry_delay(std::chrono::milliseconds(1000));
    int p = 0;
    map->published({"driver-1"}, "van-1", "t/1", false, &p);
    map->wait_idle();
    map->drain();
    {
        gdpr::sqlite_db raw(db);
        raw.exec("CREATE TRIGGER keep_map BEFORE DELETE ON data_map BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    }
    map->forget_subject("driver-1");
    while (map->drain() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const auto [failed, error] = map->take_forget_failures();
    CHECK(failed == 1);
    CHECK_THAT(error, Catch::Contains("injected failure"));
    {
        gdpr::sqlite_db raw(db);
        raw.exec("DROP TRIGGER keep_map");
    }
    auto rows = [&] { return scalar_in(db, "SELECT count(*) FROM data_map"); };
    map->flush();  // before the delay: nothing is tried
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(rows() == 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    map->flush();
    for (int i = 0; i < 500 && rows() == 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(rows() == 0);
}

// A data map in which `subject`'s retained message on `topic` was cleared, and the job noting the
// clear failed (trigger no_note, still in place): it waits to be tried again (60 s, or wait_idle).
std::unique_ptr<data_map> map_whose_clear_failed(const std::string& db, const std::string& topic,
                                                 const std::string& subject) {
    auto map = data_map::open(db);
    map->forget_retry_delay(std::chrono::seconds(60));
    int p = 0;
    map->published({subject}, "band-1", topic, true, &p);
    map->wait_idle();
    map->drain();
    {
        gdpr::sqlite_db raw(db);
        raw.exec("CREATE TRIGGER no_note BEFORE INSERT ON data_map_cleared_retained "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    }
    map->retained_cleared(topic);
    for (int i = 0; i < 5000 && map->drain() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const auto [failed, error] = map->take_forget_failures();
    CHECK(failed == 1);
    CHECK_THAT(error, Catch::Contains("injected failure"));
    return map;
}

TEST_CASE("a clear whose note could not be written is tried again, and a retained message set since keeps its row",
          "[erasure][failure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::string topic = "fleet/band-1/status";
    auto map = map_whose_clear_failed(db, topic, "u-1");
    int p = 0;
    // Neither half landed: the topic's row is still on disk, and no note.
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained") == 0);
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map WHERE role = 'retained' AND subject_ref = 'u-1'") == 1);
    map->published({"u-2"}, "band-2", topic, true, &p);  // set again meanwhile, for another subject
    map->flush();  // its row is written before the clear is tried again
    for (int i = 0; i < 500 && scalar_in(db, "SELECT count(*) FROM data_map WHERE subject_ref = 'u-2'") == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(scalar_in(db, "SELECT count(*) FROM data_map WHERE role = 'retained' AND subject_ref = 'u-2'") == 1);
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained") == 0);  // not yet due
    {
        gdpr::sqlite_db raw(db);
        raw.exec("DROP TRIGGER no_note");
    }
    map->wait_idle();  // tries again at once
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained") == 1);
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map WHERE role = 'retained' AND subject_ref = 'u-1'") == 0);
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map WHERE role = 'retained' AND subject_ref = 'u-2'") == 1);
    CHECK(map->holdings("u-2").retained_topics == std::vector<std::string>{topic});
}

TEST_CASE("a note still to be tried again when the broker has saved is not written, its topic's rows still go",
          "[erasure][failure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto map = map_whose_clear_failed(db, "fleet/band-1/status", "u-1");
    {
        gdpr::sqlite_db raw(db);
        raw.exec("DROP TRIGGER no_note");
    }
    map->clears_saved();  // a clean stop: the broker saved the topic cleared
    map->wait_idle();
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained") == 0);
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map WHERE role = 'retained'") == 0);
}

TEST_CASE("forgetting a subject notes its retained topics still on disk as cleared, in the same transaction",
          "[erasure][datamap]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto map = data_map::open(db);
    int p = 0;
    map->published({"u-1"}, "band-1", "fleet/band-1/status", true, &p);
    map->published({"u-1"}, "band-1", "fleet/band-1/telemetry", false, &p);
    map->wait_idle();
    map->forget_subject("u-1");
    map->wait_idle();
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map") == 0);
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained WHERE holder = 'fleet/band-1/status'") == 1);
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained") == 1);
}

TEST_CASE("a note of a cleared topic written in clear is sealed once a key file seals such topics",
          "[erasure][datamap][crypto]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto ref = test_support::keyed_ref;
    auto in_clear = [](std::string_view topic) { return topic.rfind("health/", 0) != 0; };
    auto sealer = [] { return std::make_unique<topic_sealer>(std::string(32, 's'), "audit_key_file"); };
    const std::string vitals = "health/wearable/u-5/vitals";
    {
        auto map = data_map::open(db, "NORMAL", ref);  // no key file: stored in clear
        map->retained_cleared(vitals);
        map->wait_idle();
    }
    REQUIRE(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained WHERE holder = '" + vitals + "'") == 1);
    {
        auto map = data_map::open(db, "NORMAL", ref, in_clear, sealer());
        CHECK(map->clears_unsaved() == std::vector<std::string>{vitals});
        CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained WHERE holder = '" + vitals + "'") == 0);
        CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained") == 1);
        map->clears_saved();
        map->wait_idle();
    }
    CHECK(scalar_in(db, "SELECT count(*) FROM data_map_cleared_retained") == 0);
}

TEST_CASE("a request resumed after its own part finished still clears a retained topic the data map holds for it",
          "[erasure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::int64_t t0 = 1'700'000'000'000;
    {
        auto map = data_map::open(db);
        int p = 0;
        map->published({"driver-1"}, "van-1", "t/1", false, &p);
        broker_side broker;
        auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
        const auto* r = start_request(*m, *map, "req-1", "driver-1", t0);
        REQUIRE(r);
        settle(*m, *map, [&] { return r->local.done(); });
        REQUIRE(r->local.done());
        // Set after the map forgot the subject, on disk before the restart.
        map->published({"driver-1"}, "van-2", "fleet/driver-1/status", true, &p);
        m->wait_idle();
        map->wait_idle();
    }
    auto map = data_map::open(db);
    broker_side broker;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    m->tick(t0 + 10);
    CHECK(broker.cleared == std::vector<std::string>{"fleet/driver-1/status"});
    CHECK(broker.consent_removed.empty());  // the request's own part is not done again
    map->wait_idle();
    CHECK(map->clears_unsaved().empty());  // read at open; the clear just made is noted on disk
    gdpr::sqlite_db raw(db);
    gdpr::sqlite_statement q(raw.handle(), "SELECT holder FROM data_map_cleared_retained");
    REQUIRE(q.step());
    CHECK(q.text(0) == "fleet/driver-1/status");
}

TEST_CASE("a device that reports failure is failed at once and alerted", "[erasure]") {
    erasure_world w({"van-1"});
    auto& m = w.m;
    auto& broker = w.broker;
    const std::int64_t t0 = T0;
    REQUIRE(start_request(*m, *w.map, "req-1", "driver-1", t0));
    m->tick(t0);
    CHECK(m->acknowledge("van-1", json{{"requestId", "req-1"}, {"status", "failed"}, {"detail", "flash is read-only"}}.dump(),
                         t0 + 5)
              .empty());
    const auto* r = m->find("req-1");
    CHECK(r->state == gdpr::request_state::completed_with_failures);
    CHECK(r->targets[0].detail == "flash is read-only");
    REQUIRE_FALSE(broker.alerts.empty());
    CHECK(broker.alerts[0].first == "erasure_target_failed");
}

TEST_CASE("the receipt says the key is shredded only once it is gone, and holders seen meanwhile become targets",
          "[erasure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    auto map = data_map::open(db);
    int p = 0;
    map->published({"driver-1"}, "van-1", "t/1", false, &p);
    broker_side broker;
    broker.hold_shreds = true;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    const std::int64_t t0 = 1'700'000'000'000;
    bool answered = false;
    m->request("req-1", "driver-1", "username:ops", t0, [&](const erasure_request*, const std::string&) { answered = true; });
    // A publish and a retained message arrive while the request is being recorded.
    map->published({"driver-1"}, "van-2", "fleet/driver-1/status", true, &p);
    settle(*m, *map, [&] { return answered; });
    const auto* r = m->find("req-1");
    REQUIRE(r);
    REQUIRE(r->targets.size() == 2);
    CHECK(r->targets[1].client_id == "van-2");
    CHECK(broker.cleared == std::vector<std::string>{"fleet/driver-1/status"});
    CHECK(r->local.retained_cleared == std::vector<std::string>{"<subject>"});  // never the subject-naming topic
    m->tick(t0);
    CHECK(m->acknowledge("van-1", ack("req-1", "erased"), t0 + 1).empty());
    CHECK(m->acknowledge("van-2", ack("req-1", "erased"), t0 + 2).empty());
    CHECK(r->state == gdpr::request_state::in_progress);  // the key is not gone yet
    CHECK_FALSE(r->local.key_shredded);
    REQUIRE(broker.held_shreds.size() == 1);
    broker.held_shreds[0]();
    CHECK(r->local.key_shredded);
    CHECK(r->state == gdpr::request_state::completed);
}

TEST_CASE("a device's failure text is kept as printable ASCII, whatever bytes it sent", "[erasure]") {
    erasure_world w({"van-1"});
    auto& m = w.m;
    const std::int64_t t0 = T0;
    REQUIRE(start_request(*m, *w.map, "req-1", "driver-1", t0));
    m->tick(t0);
    // Valid JSON whose detail is 300 bytes of multi-byte text: cut anywhere, it would not be UTF-8.
    std::string detail;
    for (int i = 0; i < 150; ++i) detail += "\u00e9";
    const std::string payload = R"({"requestId":"req-1","status":"failed","detail":")" + detail + "\"}";
    CHECK(m->acknowledge("van-1", payload, t0 + 1).empty());
    const auto* r = m->find("req-1");
    CHECK(r->state == gdpr::request_state::completed_with_failures);
    CHECK(r->targets[0].detail.size() == 200);
    CHECK(r->targets[0].detail.find_first_not_of('?') == std::string::npos);
    CHECK_NOTHROW(json::parse(gdpr::receipt_json(*r)));
    CHECK(m->list(10).size() == 1);
}

TEST_CASE("a delivery is attributed to the last publish only on its topic and payload", "[erasure][datamap]") {
    test_support::temp_dir dir;
    auto map = data_map::open((dir.path() / "gdpr.db").string());
    int payload = 0;
    map->published({"driver-1"}, "van-1", "fleet/a", false, &payload);
    map->delivered("alerts-reader", "$CONTROL/gdpr/v1/alerts", &payload);  // the same address reused elsewhere
    map->delivered("sub", "fleet/a", &payload);
    CHECK(map->holdings("driver-1").recipients == std::vector<std::string>{"sub"});
}

TEST_CASE("a fan-out to a large fleet is paced to the configured commands per second", "[erasure]") {
    std::vector<std::string> fleet;
    for (int i = 0; i < 1000; ++i) fleet.push_back("van-" + std::to_string(i));
    auto options = fast_options();
    options.send_rate_per_s = 100;
    erasure_world w(fleet, options);
    auto& m = w.m;
    auto& broker = w.broker;
    const std::int64_t t0 = T0;
    REQUIRE(start_request(*m, *w.map, "req-1", "driver-1", t0));
    m->tick(t0);
    CHECK(broker.sent.size() <= 11);  // at most a tenth of a second's worth at once
    for (std::int64_t ms = 10; ms <= 2000; ms += 10) m->tick(t0 + ms);
    CHECK(broker.sent.size() >= 190);
    CHECK(broker.sent.size() <= 212);  // two seconds at 100 per second
}

TEST_CASE("a wall clock set back or forward moves retries and deadlines with it, and a restart keeps the deadline",
          "[erasure][clock]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::int64_t hour = 3'600'000;
    {
        auto map = data_map::open(db);
        int p = 0;
        map->published({"driver-1"}, "silent", "t/1", false, &p);
        broker_side broker;
        auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
        REQUIRE(start_request(*m, *map, "req-1", "driver-1", T0));
        m->tick(T0);
        REQUIRE(broker.sent_to("silent") == 1);

        // Set back an hour: the retry due 1 s after the first command is not an hour away.
        const std::int64_t back = T0 - hour;
        m->clock_set(-hour);
        m->tick(back + 1000);
        CHECK(broker.sent_to("silent") == 2);
        // Set forward two hours: the deadline (60 s after the request, 59 s of it left) is not passed.
        const std::int64_t ahead = back + 1000 + 2 * hour;
        m->clock_set(2 * hour);
        m->tick(ahead + 1);
        const auto* r = m->find("req-1");
        REQUIRE(r);
        CHECK(r->state == gdpr::request_state::in_progress);
        CHECK(r->deadline_ms == T0 + hour + 60'000);
        // The rate limit counts elapsed time too: an hour's limit, one second of it gone.
        std::string error;
        CHECK_FALSE(start_request(*m, *map, "req-2", "driver-1", ahead + 1000, &error));
        CHECK(error.find("rate limit") != std::string::npos);
        m->wait_idle();
        map->wait_idle();
    }
    // The new deadline was written: a restart under the clock as it is now keeps the time left.
    auto map = data_map::open(db);
    broker_side broker;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    const auto* r = m->find("req-1");
    REQUIRE(r);
    CHECK(r->deadline_ms == T0 + hour + 60'000);
    m->tick(T0 + hour + 59'000);
    CHECK(r->state == gdpr::request_state::in_progress);
    m->tick(T0 + hour + 60'000);
    CHECK(r->state == gdpr::request_state::completed_with_failures);
}

TEST_CASE("a clock step leaves deadlines and rate limits set by an earlier run, and what is due stays due",
          "[erasure][clock]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    const std::int64_t hour = 3'600'000;
    {
        auto map = data_map::open(db);
        int p = 0;
        map->published({"driver-1"}, "van-1", "t/1", false, &p);
        broker_side broker;
        auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
        REQUIRE(start_request(*m, *map, "req-1", "driver-1", T0));
        m->wait_idle();
        map->wait_idle();
    }
    auto map = data_map::open(db);
    int p = 0;
    map->published({"driver-2"}, "van-2", "t/2", false, &p);
    broker_side broker;
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    // The restarted broker read a clock an hour behind, and NTP sets it right (or the other way).
    m->clock_set(hour);
    m->clock_set(-2 * hour);
    const auto* r = m->find("req-1");
    REQUIRE(r);
    CHECK(r->deadline_ms == T0 + 60'000);
    std::string error;
    CHECK_FALSE(start_request(*m, *map, "req-2", "driver-1", T0 + 1000, &error));
    CHECK(error.find("next is accepted from") != std::string::npos);
    // The resumed command is due at once, whatever the clock did meanwhile.
    m->tick(T0 - 2 * hour);
    CHECK(broker.sent_to("van-1") == 1);

    // A request still being written when the clock is set back sends its commands at once too.
    bool answered = false;
    m->request("req-3", "driver-2", "username:ops", T0, [&](const erasure_request*, const std::string&) { answered = true; });
    m->clock_set(-hour);
    settle(*m, *map, [&] { return answered; });
    REQUIRE(answered);
    m->tick(T0 - hour + 5);
    CHECK(broker.sent_to("van-2") == 1);
    const auto* r3 = m->find("req-3");
    REQUIRE(r3);
    CHECK(r3->deadline_ms == T0 - hour + 60'000);
}

TEST_CASE("a restart between the removal of consent and the shred keeps the receipt's counts", "[erasure]") {
    test_support::temp_dir dir;
    const auto db = (dir.path() / "gdpr.db").string();
    broker_side broker;  // the consent store outlives the restart: the second removal finds nothing
    broker.hold_shreds = true;
    {
        auto map = data_map::open(db);
        int p = 0;
        map->published({"driver-1"}, "van-1", "t/1", false, &p);
        auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
        const auto* r = start_request(*m, *map, "req-1", "driver-1", T0);
        REQUIRE(r);
        CHECK(r->local.consent_events_removed == 3);
        REQUIRE(broker.held_shreds.size() == 1);  // the broker stops before the shred is written
        broker.held_shreds.clear();
        m->wait_idle();
        map->wait_idle();
    }
    broker.hold_shreds = false;
    auto map = data_map::open(db);
    auto m = erasure_manager::open(db, erase_topics("gdpr/erase/%c"), fast_options(), *map, broker.effects());
    m->tick(T0 + 10);  // resumes the plugin's own part
    settle(*m, *map, [&] { return m->find("req-1") && m->find("req-1")->local.done(); });
    const auto* r = m->find("req-1");
    REQUIRE(r);
    REQUIRE(r->local.done());
    CHECK(broker.consent_removed.size() == 2);
    CHECK(r->local.consent_events_removed == 3);
    CHECK(r->local.bindings_removed == 1);
    CHECK(r->local.key_shredded);
}

TEST_CASE("a device that reconnects just after its command went out gets it again a moment later, not at the next retry",
          "[erasure]") {
    auto options = fast_options();
    options.first_retry_ms = 10'000;
    erasure_world w({"van-1"}, options);
    REQUIRE(start_request(*w.m, *w.map, "req-1", "driver-1", T0));
    w.m->tick(T0);
    REQUIRE(w.broker.sent_to("van-1") == 1);
    // The command may have gone to the connection that just ended.
    w.m->client_connected("van-1", T0 + 200);
    w.m->tick(T0 + 200);
    w.m->tick(T0 + 999);
    CHECK(w.broker.sent_to("van-1") == 1);  // still on its way, perhaps
    w.m->tick(T0 + 1000);
    CHECK(w.broker.sent_to("van-1") == 2);
    w.m->tick(T0 + 5000);
    CHECK(w.broker.sent_to("van-1") == 2);  // then the retry schedule again
}
