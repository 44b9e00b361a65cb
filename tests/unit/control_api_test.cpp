#include <catch2/catch.hpp>

#include <set>

#include <nlohmann/json.hpp>

#include "gdpr/audit_log.hpp"
#include "gdpr/control_api.hpp"
#include "test_support.hpp"

using json = nlohmann::json;

namespace {

struct api_fixture {
    test_support::temp_dir dir;
    gdpr::purpose_registry reg = [] {
        gdpr::purpose_registry r;
        r.add({"ops", gdpr::lawful_basis::contract, ""});
        r.add({"analytics", gdpr::lawful_basis::consent, ""});
        return r;
    }();
    std::unique_ptr<gdpr::consent_store> store = gdpr::consent_store::open((dir.path() / "gdpr.db").string(), reg);
    gdpr::classifier engine{gdpr::schema_set{}, gdpr::unmatched_policy::pass, nullptr};
    std::vector<std::string> log_lines;
    gdpr::logger log{[this](gdpr::log_level, std::string_view l) { log_lines.emplace_back(l); }};
    gdpr::control_api api{engine, *store, reg, gdpr::named_clients{{"dpo"}, {"op-1"}, {"ops.example.org"}}, log};
    std::vector<gdpr::control_api::command_outcomes> outcomes;  // one per reply, beside it

    // The outcomes handed beside a reply say what the reply says, command by command.
    static void check_outcomes(const json& reply, const gdpr::control_api::command_outcomes& o) {
        REQUIRE(o.size() == reply["responses"].size());
        for (std::size_t i = 0; i < o.size(); ++i) {
            CHECK(o[i].first == reply["responses"][i]["command"]);
            CHECK(o[i].second == !reply["responses"][i].contains("error"));
        }
    }

    // Sends one control message and returns the parsed response once every command is answered.
    json call(const gdpr::requester& who, const std::string& payload) {
        std::vector<std::string> replies;
        api.handle(who, payload, [&](const std::string& r, const gdpr::control_api::command_outcomes& o) {
            replies.push_back(r);
            outcomes.push_back(o);
        });
        // Commands run one after another: each durable change lets the next one start.
        for (int round = 0; round < 1000 && replies.empty(); ++round) {
            store->wait_idle();
            store->drain();
        }
        REQUIRE(replies.size() == 1);
        CHECK(replies[0].find('\n') == std::string::npos);  // compact, the export inside it too
        const json reply = json::parse(replies[0]);
        check_outcomes(reply, outcomes.back());
        return reply;
    }
    json call_as_operator(const std::string& payload) { return call(gdpr::requester{"op-1", "", ""}, payload); }
};

} // namespace

TEST_CASE("operators are recognised by certificate CN, username or client id", "[control]") {
    gdpr::named_clients ops{{"dpo"}, {"op-1"}, {"ops.example.org"}};
    CHECK(ops.identify({"x", "", "ops.example.org"}) == "cn:ops.example.org");
    CHECK(ops.identify({"x", "dpo", ""}) == "username:dpo");
    CHECK(ops.identify({"op-1", "", ""}) == "client:op-1");
    CHECK(ops.identify({"op-2", "someone", "other"}).empty());
    CHECK(ops.identify({"", "", ""}).empty());
}

TEST_CASE_METHOD(api_fixture, "setConsent and getConsent round trip with correlation data", "[control][consent]") {
    auto r = call_as_operator(R"({"commands":[{"command":"setConsent","subject":"D-1","purpose":"analytics","granted":true,
        "evidence":"form#9","correlationData":"abc"},{"command":"getConsent","subject":"D-1","correlationData":7}]})");
    REQUIRE(r["responses"].size() == 2);
    CHECK(r["responses"][0]["command"] == "setConsent");
    CHECK(r["responses"][0]["correlationData"] == "abc");
    CHECK_FALSE(r["responses"][0].contains("error"));
    CHECK(r["responses"][0]["data"]["granted"] == true);
    const auto& got = r["responses"][1];
    CHECK(got["correlationData"] == 7);
    CHECK(got["data"]["granted"] == json::array({"analytics"}));
    REQUIRE(got["data"]["history"].size() == 1);
    CHECK(got["data"]["history"][0]["operator"] == "client:op-1");
    CHECK(got["data"]["history"][0]["evidence"] == "form#9");
    CHECK(store->granted_mask("D-1") == 1);
    for (const auto& line : log_lines) CHECK(line.find("D-1") == std::string::npos);  // no subject ids in logs
}

TEST_CASE_METHOD(api_fixture, "each command fails on its own with a precise error", "[control]") {
    auto r = call_as_operator(R"({"commands":[
        {"command":"setConsent","purpose":"analytics","granted":true},
        {"command":"setConsent","subject":"D-1","purpose":"analytics","granted":"yes"},
        {"command":"setConsent","subject":"D-1","purpose":"selling","granted":true},
        {"command":"setConsent","subject":"D-1","purpose":"ops","granted":true},
        {"command":"setConsent","subject":"","purpose":"analytics","granted":true},
        {"command":"setConsent","subject":"D-1","purpose":"analytics","granted":true,"colour":"red"},
        {"command":"launchRockets"},
        {"nocommand":1},
        42,
        {"command":"bindDevice","clientId":"s-1","subject":"A"},
        {"command":"bindDevice","clientId":"s-1","subject":"A"},
        {"command":"unbindDevice","clientId":"s-9","subject":"A"},
        {"command":"listBindings"}
    ]})");
    const auto& rs = r["responses"];
    REQUIRE(rs.size() == 13);
    CHECK(rs[0]["error"] == "missing required argument \"subject\"");
    CHECK(rs[1]["error"] == "argument \"granted\" must be true or false");
    CHECK(rs[2]["error"] == "unknown purpose \"selling\"");
    CHECK(rs[3]["error"] == "purpose \"ops\" rests on contract, not consent: it needs no consent record");
    CHECK(rs[4]["error"] == "argument \"subject\" must not be empty");
    CHECK(rs[5]["error"] == "unknown argument \"colour\"");
    CHECK(rs[6]["error"].get<std::string>().find("unknown command \"launchRockets\"") == 0);
    CHECK(rs[7]["error"] == "missing \"command\" (a string)");
    CHECK(rs[8]["error"] == "a command must be a JSON object");
    CHECK_FALSE(rs[9].contains("error"));
    CHECK(rs[10]["error"] == "the device is already bound to this subject");
    CHECK(rs[11]["error"] == "the device is not bound to this subject");
    REQUIRE(rs[12]["data"]["bindings"].size() == 1);
    CHECK(rs[12]["data"]["bindings"][0]["clientId"] == "s-1");
    CHECK(store->granted_mask("D-1") == 0);
}

TEST_CASE_METHOD(api_fixture, "malformed control messages get one error response", "[control]") {
    CHECK(call_as_operator("{not json")["responses"][0]["error"].get<std::string>().find("not valid JSON") !=
          std::string::npos);
    CHECK(call_as_operator(R"({"commands":[]})")["responses"][0]["error"].get<std::string>().find("non-empty") !=
          std::string::npos);
    // Found by fuzzing: a number beyond a double's range made the JSON library throw past the parser.
    CHECK(call_as_operator(R"({"commands":[{"command":"getStats","correlationData":1e999}]})")["responses"][0]["error"]
              .get<std::string>() == "control message holds a number out of range");
    CHECK(call_as_operator(R"([1])")["responses"][0]["error"].get<std::string>().find("\"commands\"") != std::string::npos);
    CHECK(call_as_operator(std::string(gdpr::control_api::MAX_PAYLOAD + 1, ' '))["responses"][0]["error"]
              .get<std::string>()
              .find("larger than") != std::string::npos);
}

TEST_CASE_METHOD(api_fixture, "commands past the answer's size limit are not run but answered with an error",
                 "[control][hostile]") {
    api.limit_answer_bytes(300);
    std::string commands;
    for (int i = 0; i < 5; ++i)
        commands += std::string(i ? "," : "") + R"({"command":"getStats","correlationData":)" + std::to_string(i) + "}";
    const json r = call_as_operator(R"({"commands":[)" + commands + "]}");
    REQUIRE(r["responses"].size() == 5);
    CHECK_FALSE(r["responses"][0].contains("error"));  // one answer alone may exceed the limit
    REQUIRE(r["responses"][0]["data"].dump().size() > 300);
    for (int i = 1; i < 5; ++i) {
        INFO(i);
        CHECK(r["responses"][i]["command"] == "getStats");
        CHECK(r["responses"][i]["correlationData"] == i);
        CHECK_THAT(r["responses"][i]["error"].get<std::string>(), Catch::Contains("not run"));
    }
}

TEST_CASE_METHOD(api_fixture, "hostile control messages are refused before they can hurt", "[control][hostile]") {
    const std::string deep = R"({"commands":[{"command":"getStats","correlationData":)" + std::string(100000, '[') +
                             std::string(100000, ']') + "}]}";
    auto r = call(gdpr::requester{"anyone", "", ""}, deep);
    CHECK(r["responses"][0]["error"] == "control message is nested deeper than 16 levels");
    r = call_as_operator(R"({"commands":[{"command":"getStats","correlationData":{"a":[1]}},
                                          {"command":"getStats","correlationData":")" + std::string(300, 'x') + R"("}]})");
    CHECK(r["responses"][0]["error"] == "\"correlationData\" must be a string of at most 256 bytes or an integer");
    CHECK_FALSE(r["responses"][0].contains("correlationData"));
    CHECK(r["responses"][1]["error"] == "\"correlationData\" must be a string of at most 256 bytes or an integer");
    // Echoed as sent, or refused: a fraction or an integer beyond 64 bits would come back changed.
    r = call_as_operator(R"({"commands":[{"command":"getStats","correlationData":18446744073709551615},
                                          {"command":"getStats","correlationData":-9223372036854775808},
                                          {"command":"getStats","correlationData":123456789012345678901234},
                                          {"command":"getStats","correlationData":0.1}]})");
    CHECK(r["responses"][0]["correlationData"].dump() == "18446744073709551615");
    CHECK(r["responses"][1]["correlationData"].dump() == "-9223372036854775808");
    CHECK(r["responses"][2]["error"] == "\"correlationData\" must be a string of at most 256 bytes or an integer");
    CHECK(r["responses"][3]["error"] == "\"correlationData\" must be a string of at most 256 bytes or an integer");
    // A client id with control characters cannot forge log lines.
    call(gdpr::requester{"evil\ngdpr: consent granted", "", ""}, R"({"commands":[{"command":"getStats"}]})");
    CHECK(log_lines.back().find("'evil?gdpr: consent granted'") != std::string::npos);
}

TEST_CASE_METHOD(api_fixture, "non-operators get an error for every command and change nothing", "[control]") {
    auto r = call(gdpr::requester{"device-7", "device-7", ""},
                  R"({"commands":[{"command":"setConsent","subject":"D-1","purpose":"analytics","granted":true,"correlationData":"x"},
                                  {"command":"getStats"}]})");
    REQUIRE(r["responses"].size() == 2);
    for (const auto& resp : r["responses"])
        CHECK(resp["error"].get<std::string>().find("not authorised") == 0);
    CHECK(r["responses"][0]["correlationData"] == "x");
    CHECK(store->granted_mask("D-1") == 0);
    CHECK(api.refused_requests() == 1);
    REQUIRE_FALSE(log_lines.empty());
    CHECK(log_lines.back().find("refused 2 control command(s) from client 'device-7': not an operator") != std::string::npos);
}

TEST_CASE_METHOD(api_fixture, "getStats reports counters", "[control]") {
    auto r = call_as_operator(R"({"commands":[{"command":"getStats"}]})");
    const auto& d = r["responses"][0]["data"];
    CHECK(d["messages"] == 0);
    CHECK(d["fieldsDropped"].contains("noConsent"));
    CHECK(d["refusals"].contains("controlRequests"));
    CHECK(d["subjectsWithConsent"] == 0);
}

TEST_CASE("timestamps are RFC 3339 UTC with milliseconds", "[control]") {
    CHECK(gdpr::format_utc_ms(0) == "1970-01-01T00:00:00.000Z");
    CHECK(gdpr::format_utc_ms(1795452459123) == "2026-11-23T16:47:39.123Z");
}

namespace {

// exportSubject reads the audit trail in the same database as the consent records.
struct export_fixture : api_fixture {
    std::shared_ptr<gdpr::audit_keys> keys = std::make_shared<gdpr::audit_keys>(std::string(32, 'k'));
    std::unique_ptr<gdpr::audit_log> trail = [this] {
        gdpr::audit_options o;
        o.path = (dir.path() / "gdpr.db").string();
        return gdpr::audit_log::open(o, keys);
    }();
    std::unique_ptr<gdpr::storage_worker> reader;

    void attach(std::size_t max_bytes = gdpr::control_api::MAX_EXPORT_BYTES) {
        reader = std::make_unique<gdpr::storage_worker>(
            std::make_unique<gdpr::sqlite_db>((dir.path() / "gdpr.db").string(), gdpr::sqlite_db::read_only), "gdpr-export",
            gdpr::storage_worker::batching::none);
        api.attach_export(reader.get(), keys, max_bytes);
    }
    void record_publish(const std::string& subject, int speed) {
        gdpr::audit_record r;
        r.at_ms = 1'795'000'000'000;
        r.kind = gdpr::audit_kind::publish;
        r.client_id = "car-1";
        r.schema = "vehicle@1";
        r.detail = R"({"topic":"fleet/car-1/telemetry"})";
        r.personal = json{{"payload", {{"speed", speed}}}}.dump();
        r.subjects = {subject};
        trail->append(std::move(r));
    }
    json export_of(const std::string& subject) { return exports_of({subject})[0]; }
    json exports_of(const std::vector<std::string>& subjects) {
        json commands = json::array();
        for (const auto& s : subjects) commands.push_back({{"command", "exportSubject"}, {"subject", s}});
        return run(json{{"commands", commands}}.dump())["responses"];
    }
    // One control message from an operator, answered once the export reader has done its part.
    json run(const std::string& payload, gdpr::control_api::export_gate gate = {}) {
        std::vector<std::string> replies;
        api.handle(gdpr::requester{"op-1", "", ""}, payload,
                   [&](const std::string& r, const gdpr::control_api::command_outcomes& o) {
                       replies.push_back(r);
                       outcomes.push_back(o);
                   },
                   std::move(gate));
        for (int round = 0; round < 1000 && replies.empty(); ++round) {
            if (reader) {
                reader->wait_idle();
                reader->drain();
            }
            store->wait_idle();
            store->drain();
        }
        REQUIRE(replies.size() == 1);
        const json reply = json::parse(replies[0]);
        check_outcomes(reply, outcomes.back());
        return reply;
    }
};

} // namespace

TEST_CASE_METHOD(export_fixture, "exportSubject answers with the subject's records decrypted, consent and bindings",
                 "[control][export]") {
    attach();
    call_as_operator(R"({"commands":[{"command":"setConsent","subject":"D-1","purpose":"analytics","granted":true},
        {"command":"bindDevice","clientId":"car-1","subject":"D-1"}]})");
    record_publish("D-1", 50);
    record_publish("D-2", 70);
    REQUIRE(trail->flush());
    const json r = export_of("D-1");
    INFO(r.dump());
    REQUIRE_FALSE(r.contains("error"));
    const json& d = r["data"];
    CHECK(d["subject"] == "D-1");
    REQUIRE(d["records"].size() == 1);
    CHECK(d["records"][0]["data"]["payload"]["speed"] == 50);
    CHECK(d["consent"]["granted"] == json::array({"analytics"}));
    CHECK(d["consent_history"].size() == 1);
    REQUIRE(d["device_bindings"].size() == 1);
    CHECK(d["device_bindings"][0]["client_id"] == "car-1");
    CHECK(export_of("D-404")["data"]["records"].empty());
    for (const auto& line : log_lines) CHECK(line.find("D-1") == std::string::npos);
}

TEST_CASE_METHOD(export_fixture, "an export goes only where the gate lets it, before and after the records are read",
                 "[control][export][residency]") {
    attach();
    record_publish("D-1", 50);
    REQUIRE(trail->flush());
    const std::string ask = R"({"commands":[{"command":"exportSubject","subject":"D-1"}]})";
    using holdings = gdpr::control_api::export_holdings;
    // Refused before anything is read.
    std::size_t checks = 0;
    const json before = run(ask, {"placed where it may not go", [&](const holdings&) {
                                      ++checks;
                                      return std::string();
                                  }})["responses"][0];
    CHECK(before.value("error", "") == "placed where it may not go");
    CHECK_FALSE(before.contains("data"));
    CHECK(checks == 0);
    // Refused once the records' schemas are known: the gate sees them, the answer holds none of the data.
    holdings seen;
    const json after = run(ask, {"", [&](const holdings& h) {
                                     seen = h;
                                     return std::string("the export holds records of schema vehicle@1");
                                 }})["responses"][0];
    CHECK(seen == holdings{{"vehicle@1", std::nullopt}});  // the record does not say where its data is resident
    CHECK(after.value("error", "") == "the export holds records of schema vehicle@1");
    CHECK_FALSE(after.contains("data"));
    CHECK(outcomes.back() == gdpr::control_api::command_outcomes{{"exportSubject", false}});
    // A gate that fails refuses too, and says so.
    const json failed = run(ask, {"", [](const holdings&) -> std::string { throw std::runtime_error("no rules"); }})["responses"][0];
    CHECK_THAT(failed.value("error", ""), Catch::Contains("could not be checked: no rules"));
    CHECK_FALSE(failed.contains("data"));
    // Let through.
    const json allowed = run(ask, {"", [](const holdings&) { return std::string(); }})["responses"][0];
    REQUIRE_FALSE(allowed.contains("error"));
    CHECK(allowed["data"]["records"].size() == 1);
}

TEST_CASE_METHOD(export_fixture, "an export among other commands keeps its place, its correlation data and its outcome",
                 "[control][export]") {
    attach();
    record_publish("D-1", 42);
    REQUIRE(trail->flush());
    const json reply = run(R"({"commands":[{"command":"getStats"},
        {"command":"exportSubject","subject":"D-1","correlationData":"c-1"},
        {"command":"nope"}]})");
    const json& r = reply["responses"];
    REQUIRE(r.size() == 3);
    CHECK(r[0]["data"].contains("messages"));
    CHECK(r[1]["command"] == "exportSubject");
    CHECK(r[1]["correlationData"] == "c-1");
    CHECK(r[1]["data"]["subject"] == "D-1");
    CHECK(r[1]["data"]["records"][0]["data"]["payload"]["speed"] == 42);
    CHECK(r[1]["data"]["consent"]["granted"] == json::array());
    CHECK_THAT(r[2]["error"].get<std::string>(), Catch::Contains("unknown command"));
    REQUIRE(outcomes.size() == 1);
    CHECK(outcomes[0] == gdpr::control_api::command_outcomes{{"getStats", true}, {"exportSubject", true}, {"nope", false}});
}

TEST_CASE_METHOD(export_fixture, "exportSubject stops at its size limit and takes one subject per message",
                 "[control][export]") {
    attach(4096);
    for (int i = 0; i < 100; ++i) record_publish("D-1", i);  // about 100 x 200 bytes once exported
    record_publish("D-2", 7);
    REQUIRE(trail->flush());
    const json big = export_of("D-1");
    CHECK_THAT(big.value("error", ""), Catch::Contains("larger than 4096 bytes") && Catch::Contains("gdprctl export"));
    CHECK_FALSE(big.contains("data"));
    const json two = exports_of({"D-2", "D-2"});
    REQUIRE(two.size() == 2);
    CHECK(two[0]["data"]["records"].size() == 1);
    CHECK_THAT(two[1].value("error", ""), Catch::Contains("one exportSubject per control message"));
}

TEST_CASE_METHOD(export_fixture, "exports cancelled for a stopping broker answer with an error, not the data",
                 "[control][export]") {
    attach();
    record_publish("D-1", 1);
    REQUIRE(trail->flush());
    api.cancel_exports();
    const json r = export_of("D-1");
    CHECK_THAT(r.value("error", ""), Catch::Contains("cancelled"));
}

TEST_CASE_METHOD(export_fixture, "exportSubject without session recording says what it needs", "[control][export]") {
    const json r = export_of("D-1");
    CHECK_THAT(r.value("error", ""), Catch::Contains("needs session recording (plugin_opt_audit_key_file)"));
    CHECK_THAT(export_fixture::call_as_operator(R"({"commands":[{"command":"exportSubject"}]})")["responses"][0].value("error", ""),
               Catch::Contains("subject"));
}

TEST_CASE_METHOD(api_fixture, "reloadSchemas answers once the reload has finished, in its place among the commands",
                 "[control][schema]") {
    // Without a reload attached (a library user that never wired one): a clear error.
    auto r = call_as_operator(R"({"commands":[{"command":"reloadSchemas"}]})");
    CHECK_THAT(r["responses"][0]["error"].get<std::string>(), Catch::Contains("not available"));

    std::string asked_by;
    bool asked_removals = false, asked_basis_changes = false;
    gdpr::control_api::schema_reload_done finish;
    api.attach_schema_reload([&](const std::string& by, gdpr::reload_permissions allowed,
                                 gdpr::control_api::schema_reload_done done) {
        asked_by = by;
        asked_removals = allowed.removals;
        asked_basis_changes = allowed.basis_changes;
        finish = std::move(done);
    });
    std::vector<std::string> replies;
    api.handle(gdpr::requester{"op-1", "", ""},
               R"({"commands":[{"command":"reloadSchemas","allowRemovals":true,"correlationData":"r"},{"command":"getStats"}]})",
               [&](const std::string& reply, const gdpr::control_api::command_outcomes&) { replies.push_back(reply); });
    CHECK(replies.empty());  // the reload is still loading: nothing is answered yet
    CHECK(asked_by == "reloadSchemas by client:op-1");
    CHECK(asked_removals);
    CHECK_FALSE(asked_basis_changes);
    gdpr::schema_changes changes;
    changes.schemas = 2;
    changes.topic_filters = 3;
    changes.added = {"t@1"};
    changes.new_versions = {"s@4 -> s@5"};
    changes.purposes.added = {"ads (consent)"};
    changes.purposes.basis_changed = {"ops: contract -> legitimate_interests"};
    changes.purposes.grants_held = {{"analytics", 3}};
    changes.fields_leaving_consent = {"s /name (analytics)"};
    finish(&changes, "");
    REQUIRE(replies.size() == 1);
    const auto reply = json::parse(replies[0]);
    const auto& first = reply["responses"][0];
    CHECK(first["correlationData"] == "r");
    CHECK(first["data"]["schemas"] == 2);
    CHECK(first["data"]["topicFilters"] == 3);
    CHECK(first["data"]["added"] == json::array({"t@1"}));
    CHECK(first["data"]["newVersions"] == json::array({"s@4 -> s@5"}));
    CHECK(first["data"]["purposes"] == json{{"added", {"ads (consent)"}},
                                            {"removed", json::array()},
                                            {"basisChanged", {"ops: contract -> legitimate_interests"}},
                                            {"described", json::array()},
                                            {"grantsHeld", {{"analytics", 3}}},
                                            {"grantsRevived", json::object()}});
    CHECK(first["data"]["fieldsLeavingConsent"] == json::array({"s /name (analytics)"}));
    CHECK(reply["responses"][1]["command"] == "getStats");  // the next command ran after it

    // A reload that fails: its reason, made printable (file names need not be UTF-8).
    replies.clear();
    api.handle(gdpr::requester{"op-1", "", ""}, R"({"commands":[{"command":"reloadSchemas","allowBasisChanges":true}]})",
               [&](const std::string& reply, const gdpr::control_api::command_outcomes& o) {
                   replies.push_back(reply);
                   CHECK_FALSE(o[0].second);
               });
    CHECK_FALSE(asked_removals);
    CHECK(asked_basis_changes);
    finish(nullptr, "/etc/schemas/caf\xe9.json: not valid JSON");
    REQUIRE(replies.size() == 1);
    CHECK(json::parse(replies[0])["responses"][0]["error"] ==
          "schemas not reloaded, the ones in use stay: /etc/schemas/caf?.json: not valid JSON");

    r = call_as_operator(R"({"commands":[{"command":"reloadSchemas","allowRemovals":"yes"}]})");
    CHECK_THAT(r["responses"][0]["error"].get<std::string>(), Catch::Contains("\"allowRemovals\" must be true or false"));
    r = call_as_operator(R"({"commands":[{"command":"reloadSchemas","allowBasisChanges":1}]})");
    CHECK_THAT(r["responses"][0]["error"].get<std::string>(),
               Catch::Contains("\"allowBasisChanges\" must be true or false"));
    r = call_as_operator(R"({"commands":[{"command":"reloadSchemas","force":true}]})");
    CHECK_THAT(r["responses"][0]["error"].get<std::string>(), Catch::Contains("unknown argument \"force\""));
}

TEST_CASE_METHOD(api_fixture, "consent held for a purpose no longer declared is shown, counted and can only be withdrawn",
                 "[control][consent]") {
    const auto answer = [&](const std::string& command) { return call_as_operator(command)["responses"][0]; };
    REQUIRE_FALSE(answer(R"({"commands":[{"command":"setConsent","subject":"D-1","purpose":"analytics","granted":true}]})")
                      .contains("error"));
    // purposes.json reloaded without "analytics" (the API reads the same registry the classifier holds).
    reg = gdpr::purpose_registry{};
    reg.add({"ops", gdpr::lawful_basis::contract, ""});
    CHECK(store->use_purposes(reg).held == std::map<std::string, std::size_t>{{"analytics", 1}});

    auto consent = answer(R"({"commands":[{"command":"getConsent","subject":"D-1"}]})");
    CHECK(consent["data"]["granted"].empty());
    CHECK(consent["data"]["held"] == json::array({"analytics"}));
    CHECK(answer(R"({"commands":[{"command":"getStats"}]})")["data"]["consentGrantsHeld"] == 1);
    CHECK_THAT(answer(R"({"commands":[{"command":"setConsent","subject":"D-1","purpose":"analytics","granted":true}]})")
                   .value("error", ""),
               Catch::Contains("unknown purpose"));
    CHECK_THAT(answer(R"({"commands":[{"command":"setConsent","subject":"D-2","purpose":"analytics","granted":false}]})")
                   .value("error", ""),
               Catch::Contains("unknown purpose"));  // D-2 holds nothing
    // GDPR Art. 7(3): the subject can still withdraw it.
    const auto withdrawn =
        answer(R"({"commands":[{"command":"setConsent","subject":"D-1","purpose":"analytics","granted":false}]})");
    CHECK_FALSE(withdrawn.contains("error"));
    CHECK(answer(R"({"commands":[{"command":"getConsent","subject":"D-1"}]})")["data"]["held"].empty());
    CHECK(answer(R"({"commands":[{"command":"getStats"}]})")["data"]["consentGrantsHeld"] == 0);
    const auto history = answer(R"({"commands":[{"command":"getConsent","subject":"D-1"}]})")["data"]["history"];
    REQUIRE(history.size() == 2);
    CHECK_FALSE(history[1]["granted"].get<bool>());
}

TEST_CASE("describeProcessing answers even when a schema's file name is not UTF-8", "[control][processing]") {
    test_support::temp_dir dir;
    gdpr::purpose_registry reg;
    reg.add({"ops", gdpr::lawful_basis::contract, ""});
    gdpr::schema_set set;
    set.schemas.push_back(gdpr::parse_schema(R"({"id":"s","version":1,"topics":["t/+"],"retentionDays":1,
        "fields":{"/a":{"category":"identifier","personal":true,"purpose":"ops","action":"keep"}}})",
                                             "caf\xe9.json", reg));  // a Latin-1 name from the directory listing
    set.router.add("t/+", 0);
    gdpr::classifier engine(std::move(set), gdpr::unmatched_policy::pass, nullptr, reg);
    auto store = gdpr::consent_store::open((dir.path() / "gdpr.db").string(), reg);
    gdpr::logger log{[](gdpr::log_level, std::string_view) {}};
    gdpr::control_api api(engine, *store, engine.purposes(), gdpr::named_clients{{}, {"op-1"}, {}}, log);
    std::string reply;
    api.handle(gdpr::requester{"op-1", "", ""}, R"({"commands":[{"command":"describeProcessing"}]})",
               [&](const std::string& r, const gdpr::control_api::command_outcomes&) { reply = r; });
    REQUIRE_FALSE(reply.empty());
    const json answer = json::parse(reply);
    CHECK(answer["responses"][0]["data"]["activities"][0]["file"] == "caf\xef\xbf\xbd.json");  // U+FFFD
}
