// gdprctl: the operator's command line for mosquitto-gdpr's control API ($CONTROL/gdpr/v1).
//
//   gdprctl [connection options] consent set <subject> <purpose> granted|withdrawn [--evidence TEXT]
//   gdprctl [connection options] consent get <subject>
//   gdprctl [connection options] bind <client-id> <subject>
//   gdprctl [connection options] unbind <client-id> <subject>
//   gdprctl [connection options] bindings [--client ID] [--subject S]
//   gdprctl [connection options] stats
//   gdprctl [connection options] erase --subject S [--id ID] [--no-wait] [--wait SECONDS]
//   gdprctl [connection options] erasure status <id> | erasure list
//   gdprctl [connection options] schemas reload [--allow-removals] [--allow-basis-changes] [--allow-transfer-changes]
//   gdprctl [connection options] processing-record
//   gdprctl verify <db> [--key-file K] | export <db> --subject S --key-file K | report <db>   (offline, audit_commands.cpp)
//   gdprctl processing-record --schemas DIR [--purposes F] [--residency F] [--details F]  (offline, audit_commands.cpp)
//
// Exit status: 0 success, 1 the broker refused the command, 2 usage error, 3 cannot connect,
// 4 no response in time, 5 internal error, 6 audit trail altered, 7 audit trail has declared gaps.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <mqtt/async_client.h>
#include <openssl/crypto.h>
#include "audit_commands.hpp"
#include "gdpr/processing_record.hpp"
#include <nlohmann/json.hpp>

namespace {

using json = nlohmann::json;

constexpr int EXIT_REFUSED = 1;
constexpr int EXIT_USAGE = 2;
constexpr int EXIT_CONNECT = 3;
constexpr int EXIT_TIMEOUT = 4;
constexpr int EXIT_INTERNAL = 5;

const char* USAGE = R"(usage: gdprctl [options] <command> [arguments]

commands:
  consent set <subject> <purpose> granted|withdrawn [--evidence TEXT]
  consent get <subject>
  bind <client-id> <subject>
  unbind <client-id> <subject>
  bindings [--client CLIENT-ID] [--subject SUBJECT]
  stats
  erase --subject S [--id ID] [--no-wait] [--wait SECONDS]
                      ask for the subject's erasure (GDPR Art. 17) and follow it to its
                      receipt (default: wait up to 600 s; exit 1 if a holder failed)
  erasure status <id> [--targets]   the request's state and receipt
  erasure list        the erasure register, newest first
  schemas reload [--allow-removals] [--allow-basis-changes] [--allow-transfer-changes]
                      read the broker's purposes.json, schemas directory and residency
                      file again and put them in use (what does not load changes
                      nothing; exit 1); schemas whose files are gone are removed only
                      with --allow-removals, fields pass without the consent they
                      needed only with --allow-basis-changes, resident data may go to
                      a region it could not go to only with --allow-transfer-changes
  processing-record   the record of processing activities (GDPR Art. 30(1)) the broker
                      enforces now: purposes and lawful bases, per schema the data
                      subjects, personal data and what reaches subscribers, retention,
                      residency, transfers, safeguards and points to review
  subject export <subject>   everything recorded about the subject, decrypted, with the
                      consent given and devices bound (GDPR Art. 15, 20; needs session
                      recording; prints JSON)

offline, on the plugin's database file (no broker needed):
  verify <database> [--key-file FILE]    check the audit trail's hash chain and sequence (with the key
                                         file: also that the broker wrote the anchor's statement)
  export <database> --subject S --key-file FILE [--output FILE]
                                         everything recorded about a subject, decrypted
  report <database> [--json]             record counts per day, kind, schema and refusal reason

offline, on the definition files (no broker needed):
  processing-record --schemas DIR [--purposes FILE] [--residency FILE] [--details FILE] [--json]
                                         the same record from the files (default purposes
                                         file: DIR/purposes.json); exit 2 if they do not load
  schema lint DIR [--purposes FILE] [--residency FILE] [--details FILE] [--strict]
                                         check the files as the broker loads them and list
                                         what they leave to review (overlapping topic filters,
                                         special categories, missing retention or residency...);
                                         exit 2 if they do not load, 1 with --strict if
                                         anything is left to review

options:
  --host HOST         broker host (default 127.0.0.1)
  --port PORT         broker port (default 1883, or 8883 with --cafile)
  --username NAME     MQTT username
  --password SECRET   MQTT password
  --cafile FILE       CA certificate: connect with TLS and verify the broker's certificate
                      and host name
  --cert FILE --key FILE   TLS client certificate (operators named by certificate CN)
  --insecure          with --cafile: do not check the broker's host name
  --client-id ID      MQTT client id (default gdprctl-<random>)
  --timeout SECONDS   how long to wait for the answer (default 5)
  --json              print the broker's response as JSON
)";

struct options {
    std::string host = "127.0.0.1";
    int port = 0;
    std::string username, password, cafile, cert, key, client_id;
    int timeout_s = 5;
    bool as_json = false;
    bool insecure = false;
    std::vector<std::string> args;
};

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string random_hex(std::size_t bytes) {
    std::random_device rd;
    static constexpr char HEX[] = "0123456789abcdef";
    std::string s;
    for (std::size_t i = 0; i < bytes; ++i) {
        const auto b = rd() & 0xff;
        s.push_back(HEX[b >> 4]);
        s.push_back(HEX[b & 0xf]);
    }
    return s;
}

options parse_args(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw usage_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "--host") o.host = value();
        else if (a == "--port") {
            const auto v = value();
            try {
                o.port = std::stoi(v);
            } catch (...) {
                throw usage_error("--port needs a number, not '" + v + "'");
            }
            if (o.port <= 0 || o.port > 65535) throw usage_error("--port must be 1..65535");
        } else if (a == "--username") o.username = value();
        else if (a == "--password") o.password = value();
        else if (a == "--cafile") o.cafile = value();
        else if (a == "--cert") o.cert = value();
        else if (a == "--key") o.key = value();
        else if (a == "--client-id") o.client_id = value();
        else if (a == "--timeout") {
            const auto v = value();
            try {
                o.timeout_s = std::stoi(v);
            } catch (...) {
                throw usage_error("--timeout needs a number of seconds");
            }
            if (o.timeout_s <= 0) throw usage_error("--timeout must be positive");
        } else if (a == "--json") o.as_json = true;
        else if (a == "--insecure") o.insecure = true;
        else if (a == "-h" || a == "--help") {
            std::cout << USAGE;
            std::exit(0);
        } else o.args.push_back(a);
    }
    if (o.cafile.empty() && (!o.cert.empty() || !o.key.empty() || o.insecure))
        throw usage_error("--cert, --key and --insecure need --cafile (TLS)");
    if (o.cert.empty() != o.key.empty()) throw usage_error("--cert and --key go together");
    if (o.port == 0) o.port = o.cafile.empty() ? 1883 : 8883;
    if (o.client_id.empty()) o.client_id = "gdprctl-" + random_hex(6);
    return o;
}

// Takes "--flag VALUE" out of args; "" when absent.
std::string take_flag(std::vector<std::string>& args, const std::string& flag) {
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == flag) {
            if (i + 1 >= args.size()) throw usage_error(flag + " needs a value");
            std::string v = args[i + 1];
            args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
            return v;
        }
    }
    return {};
}

json build_command(std::vector<std::string> args) {
    if (args.empty()) throw usage_error("no command given");
    const std::string cmd = args[0];
    auto expect = [&](std::size_t n) {
        if (args.size() != n) throw usage_error("wrong number of arguments for '" + cmd + "'");
    };
    if (cmd == "consent") {
        if (args.size() < 2) throw usage_error("consent needs 'set' or 'get'");
        if (args[1] == "set") {
            const std::string evidence = take_flag(args, "--evidence");
            expect(5);
            if (args[4] != "granted" && args[4] != "withdrawn") throw usage_error("consent state must be 'granted' or 'withdrawn'");
            json c{{"command", "setConsent"}, {"subject", args[2]}, {"purpose", args[3]}, {"granted", args[4] == "granted"}};
            if (!evidence.empty()) c["evidence"] = evidence;
            return c;
        }
        if (args[1] == "get") {
            expect(3);
            return json{{"command", "getConsent"}, {"subject", args[2]}};
        }
        throw usage_error("consent needs 'set' or 'get'");
    }
    if (cmd == "bind" || cmd == "unbind") {
        expect(3);
        return json{{"command", cmd == "bind" ? "bindDevice" : "unbindDevice"}, {"clientId", args[1]}, {"subject", args[2]}};
    }
    if (cmd == "bindings") {
        const std::string client = take_flag(args, "--client");
        const std::string subject = take_flag(args, "--subject");
        expect(1);
        json c{{"command", "listBindings"}};
        if (!client.empty()) c["clientId"] = client;
        if (!subject.empty()) c["subject"] = subject;
        return c;
    }
    if (cmd == "subject") {
        if (args.size() < 2 || args[1] != "export") throw usage_error("subject needs 'export <subject>'");
        expect(3);
        return json{{"command", "exportSubject"}, {"subject", args[2]}};
    }
    if (cmd == "stats") {
        expect(1);
        return json{{"command", "getStats"}};
    }
    if (cmd == "processing-record") {
        for (const char* offline_flag : {"--schemas", "--purposes", "--residency", "--details"})
            if (std::find(args.begin(), args.end(), offline_flag) != args.end())
                throw usage_error("processing-record from the files takes no option before the command: "
                                  "gdprctl processing-record --schemas DIR [--purposes FILE] [--residency FILE] [--details FILE] [--json]");
        expect(1);
        return json{{"command", "describeProcessing"}};
    }
    if (cmd == "schemas") {
        json c{{"command", "reloadSchemas"}};
        for (const auto& [flag, argument] : {std::pair<const char*, const char*>{"--allow-removals", "allowRemovals"},
                                             {"--allow-basis-changes", "allowBasisChanges"},
                                             {"--allow-transfer-changes", "allowTransferChanges"}}) {
            if (std::find(args.begin(), args.end(), flag) == args.end()) continue;
            args.erase(std::remove(args.begin(), args.end(), flag), args.end());
            c[argument] = true;
        }
        if (args.size() < 2 || args[1] != "reload") throw usage_error("schemas needs 'reload'");
        expect(2);
        return c;
    }
    if (cmd == "erase") {
        const std::string subject = take_flag(args, "--subject");
        std::string id = take_flag(args, "--id");
        take_flag(args, "--wait");  // read by run()
        args.erase(std::remove(args.begin(), args.end(), "--no-wait"), args.end());
        expect(1);
        if (subject.empty()) throw usage_error("erase needs --subject");
        if (id.empty()) id = "erase-" + random_hex(8);
        return json{{"command", "eraseSubject"}, {"subject", subject}, {"requestId", id}};
    }
    if (cmd == "erasure") {
        if (args.size() >= 2 && args[1] == "list") {
            expect(2);
            return json{{"command", "listErasures"}};
        }
        const bool targets = std::find(args.begin(), args.end(), "--targets") != args.end();
        args.erase(std::remove(args.begin(), args.end(), "--targets"), args.end());
        if (args.size() < 2 || args[1] != "status") throw usage_error("erasure needs 'status <id>' or 'list'");
        expect(3);
        return json{{"command", "getErasure"}, {"requestId", args[2]}, {"targets", targets}};
    }
    throw usage_error("unknown command '" + cmd + "'");
}

void print_receipt(const json& d) {
    const auto& t = d["totals"];
    std::cout << "erasure " << d.value("requestId", "") << ": " << d.value("state", "") << "\n"
              << "  requested " << d.value("requestedAt", "") << " by " << d.value("operator", "") << ", deadline "
              << d.value("deadline", "") << "\n";
    if (d.contains("completedAt")) std::cout << "  completed " << d.value("completedAt", "") << "\n";
    std::cout << "  holders: " << t.value("targets", 0) << " (acknowledged " << t.value("acknowledged", 0) << ", failed "
              << t.value("failed", 0) << ", unreachable " << t.value("unreachable", 0) << ", pending "
              << t.value("pending", 0) << ")\n";
    const auto& p = d["plugin"];
    std::cout << "  broker: " << p["retainedCleared"].size() << " retained message(s) cleared, "
              << p.value("consentEventsRemoved", 0) << " consent record(s) and " << p.value("bindingsRemoved", 0)
              << " binding(s) removed, data key " << (p.value("keyShredded", false) ? "shredded" : "not kept (no audit trail)")
              << "\n";
    if (!p.value("error", "").empty()) std::cout << "  broker error: " << p.value("error", "") << "\n";
    if (d.contains("targets")) {
        for (const auto& x : d["targets"]) {
            std::string roles;
            for (const auto& r : x["roles"]) roles += (roles.empty() ? "" : "+") + r.get<std::string>();
            if (x.value("subjectNamedBy", "") == "pseudonym") roles += ", told the pseudonym only";
            std::cout << "    " << x.value("clientId", "") << " (" << roles << "): " << x.value("outcome", "") << " ["
                      << x.value("state", "") << ", " << x.value("attempts", 0) << " attempt(s)";
            if (x.contains("answeredAt")) std::cout << ", " << x.value("answeredAt", "");
            if (x.contains("detail")) std::cout << ", " << x.value("detail", "");
            std::cout << "]\n";
        }
    }
}

void print_human(const json& response) {
    const std::string cmd = response.value("command", "");
    const json& d = response["data"];
    if (cmd == "setConsent") {
        std::cout << "consent for purpose " << d.value("purpose", "") << " of subject " << d.value("subject", "") << ": "
                  << (d.value("granted", false) ? "granted" : "withdrawn") << " (recorded)\n";
    } else if (cmd == "getConsent") {
        std::cout << "subject " << d.value("subject", "") << "\n  consents to:";
        if (d["granted"].empty()) std::cout << " (nothing)";
        for (const auto& p : d["granted"]) std::cout << " " << p.get<std::string>();
        if (d.contains("held") && !d["held"].empty()) {
            std::cout << "\n  held (purposes not resting on consent now; counts again if they do):";
            for (const auto& p : d["held"]) std::cout << " " << p.get<std::string>();
        }
        std::cout << "\n  history:\n";
        if (d["history"].empty()) std::cout << "    (none)\n";
        for (const auto& h : d["history"]) {
            std::cout << "    " << h.value("at", "") << "  " << (h.value("granted", false) ? "granted  " : "withdrawn")
                      << "  " << h.value("purpose", "") << "  by " << h.value("operator", "");
            if (!h.value("evidence", "").empty()) std::cout << "  evidence: " << h.value("evidence", "");
            std::cout << "\n";
        }
    } else if (cmd == "bindDevice" || cmd == "unbindDevice") {
        std::cout << "device " << d.value("clientId", "") << (cmd == "bindDevice" ? " bound to " : " unbound from ")
                  << "subject " << d.value("subject", "") << "\n";
    } else if (cmd == "listBindings") {
        if (d["bindings"].empty()) std::cout << "no device bindings\n";
        for (const auto& b : d["bindings"]) {
            std::cout << b.value("clientId", "") << " -> " << b.value("subject", "") << "  (since " << b.value("boundAt", "")
                      << ", by " << b.value("operator", "") << ")\n";
        }
    } else if (cmd == "describeProcessing") {
        std::cout << gdpr::processing_record_text(d);
    } else if (cmd == "reloadSchemas") {
        std::cout << "schemas reloaded: " << d.value("schemas", 0) << " schemas, " << d.value("topicFilters", 0)
                  << " topic filters\n";
        // One line per non-empty list; items such as "ads (consent)" hold spaces, so commas part them.
        const auto print_list = [](const json& from, const char* key, const char* label, const char* separator) {
            if (!from.contains(key) || from[key].empty()) return;
            std::cout << "  " << label << ":";
            const char* before = " ";
            for (const auto& [name, value] : from[key].items()) {  // an object's items are name: count
                std::cout << before << (from[key].is_object() ? name + " " + value.dump() : value.get<std::string>());
                before = separator;
            }
            std::cout << "\n";
        };
        print_list(d, "added", "added", " ");
        print_list(d, "removed", "removed", " ");
        print_list(d, "newVersions", "new versions", " ");
        print_list(d, "editedWithoutNewVersion", "edited without a new version", " ");
        const json purposes = d.value("purposes", json::object());
        print_list(purposes, "added", "purposes added", ", ");
        print_list(purposes, "removed", "purposes removed", ", ");
        print_list(purposes, "basisChanged", "lawful basis changed", ", ");
        print_list(purposes, "described", "description changed", ", ");
        print_list(d, "fieldsLeavingConsent", "fields that now pass without a consent record", ", ");
        print_list(purposes, "grantsHeld", "consent grants held", ", ");
        print_list(purposes, "grantsRevived", "consent grants counting again", ", ");
        const json residency = d.value("residency", json::object());
        print_list(residency, "regionsAdded", "regions added", " ");
        print_list(residency, "regionsRemoved", "regions removed", " ");
        print_list(residency, "transfersAdded", "transfers added", ", ");
        print_list(residency, "transfersRemoved", "transfers removed", ", ");
        if (!residency.value("defaultRegion", "").empty())
            std::cout << "  default region: " << residency.value("defaultRegion", "") << "\n";
        if (residency.value("placementsChanged", false)) std::cout << "  client placements changed\n";
        print_list(residency, "bridgeRegions", "bridge regions", ", ");
        print_list(residency, "bridgeTopicsAdded", "bridge topics added", ", ");
        print_list(residency, "bridgesAdded", "bridges added", " ");
        print_list(residency, "widened", "resident data may reach regions it could not before", ", ");
        print_list(residency, "bridgesNotApplied", "bridges or topics removed, still checked until a restart", " ");
        if (!residency.value("brokerConfigProblem", "").empty())
            std::cout << "  brokerConfig not read, bridges kept: " << residency.value("brokerConfigProblem", "") << "\n";
    } else if (cmd == "getStats") {
        std::cout << "messages:               " << d.value("messages", 0) << "\n"
                  << "classified:             " << d.value("classified", 0) << "\n"
                  << "unmatched topics:       " << d.value("unmatched", 0) << "\n"
                  << "fields transformed:     " << d.value("fieldsTransformed", 0) << "\n"
                  << "fields dropped:\n";
        for (auto it = d["fieldsDropped"].begin(); it != d["fieldsDropped"].end(); ++it)
            std::cout << "  " << it.key() << ": " << it.value() << "\n";
        std::cout << "refusals:\n";
        for (auto it = d["refusals"].begin(); it != d["refusals"].end(); ++it)
            std::cout << "  " << it.key() << ": " << it.value() << "\n";
        if (d.contains("residency") && d["residency"].value("enforced", false)) {
            std::cout << "residency refusals:\n";
            if (d["residency"]["refusals"].empty()) std::cout << "  (none)\n";
            for (const auto& r : d["residency"]["refusals"])
                std::cout << "  " << r.value("from", "") << " -> " << r.value("to", "") << " (" << r.value("via", "")
                          << "): " << r.value("count", 0) << "\n";
            if (!d["residency"].value("transfers", nlohmann::json::array()).empty()) {
                std::cout << "residency transfers allowed (deliveries to another region):\n";
                for (const auto& t : d["residency"]["transfers"])
                    std::cout << "  " << t.value("from", "") << " -> " << t.value("to", "") << ": " << t.value("count", 0) << "\n";
            }
        } else {
            std::cout << "residency:              tagged, not enforced (no residency_file)\n";
        }
        std::cout << "subjects with consent:  " << d.value("subjectsWithConsent", 0) << "\n"
                  << "device bindings:        " << d.value("deviceBindings", 0) << "\n";
    } else if (cmd == "eraseSubject" || cmd == "getErasure") {
        print_receipt(d);
    } else if (cmd == "listErasures") {
        if (d["erasures"].empty()) std::cout << "no erasure requests\n";
        for (const auto& e : d["erasures"]) {
            const auto& t = e["totals"];
            std::cout << e.value("requestId", "") << "  " << e.value("state", "") << "  requested " << e.value("requestedAt", "")
                      << "  targets " << t.value("targets", 0) << " (acknowledged " << t.value("acknowledged", 0)
                      << ", failed " << t.value("failed", 0) << ", unreachable " << t.value("unreachable", 0) << ")\n";
        }
    } else {
        std::cout << d.dump(2) << "\n";
    }
}

// One control command over an open connection: the matching response, or a status to exit with.
struct answer {
    int status = 0;  // 0: `response` holds the broker's answer
    json response;
};

answer ask(mqtt::async_client& client, json command, const options& o) {
    const std::string correlation = random_hex(8);
    command["correlationData"] = correlation;
    const std::string request = json{{"commands", json::array({command})}}.dump();
    const auto limit = std::chrono::seconds(o.timeout_s);
    try {
        if (!client.publish(mqtt::make_message("$CONTROL/gdpr/v1", request, 1, false))->wait_for(limit)) {
            std::cerr << "gdprctl: the broker did not acknowledge the command within " << o.timeout_s << " s\n";
            return {EXIT_TIMEOUT, {}};
        }
    } catch (const mqtt::exception& e) {
        std::cerr << "gdprctl: the broker did not accept the command: " << e.what() << "\n";
        return {client.is_connected() ? EXIT_REFUSED : EXIT_CONNECT, {}};
    }
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        mqtt::const_message_ptr msg;
        if (!client.try_consume_message_for(&msg, std::chrono::milliseconds(100)) || !msg) continue;
        if (msg->get_topic() != "$CONTROL/gdpr/v1/response") continue;
        json doc = json::parse(msg->to_string(), nullptr, false);
        if (!doc.is_object() || !doc["responses"].is_array()) continue;
        for (const auto& response : doc["responses"]) {
            if (response.contains("correlationData") && response["correlationData"] == correlation) return {0, response};
        }
    }
    std::cerr << "gdprctl: no response from the broker within " << o.timeout_s
              << " s (is mosquitto-gdpr loaded, and is this client an operator?)\n";
    return {EXIT_TIMEOUT, {}};
}

// Prints an answer; the exit status (refused when the broker answered with an error).
int report(const answer& a, const options& o) {
    if (a.status != 0) return a.status;
    if (o.as_json) std::cout << a.response.dump(2) << "\n";
    if (a.response.contains("error")) {
        if (!o.as_json)
            std::cerr << "gdprctl: " << a.response.value("command", "command") << " refused: "
                      << a.response["error"].get<std::string>() << "\n";
        return EXIT_REFUSED;
    }
    if (!o.as_json) print_human(a.response);
    std::cout.flush();
    return 0;
}

// After eraseSubject: polls getErasure, showing progress, until the receipt (or --wait runs out).
int follow_erasure(mqtt::async_client& client, const std::string& id, int wait_s, const options& o) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
    std::string last;
    while (true) {
        answer a = ask(client, json{{"command", "getErasure"}, {"requestId", id}, {"targets", false}}, o);
        if (a.status != 0 || a.response.contains("error")) return report(a, o);
        const json& d = a.response["data"];
        const auto& t = d["totals"];
        const std::string line = "  " + d.value("state", "") + ": " + std::to_string(t.value("acknowledged", 0)) + " of " +
                                 std::to_string(t.value("targets", 0)) + " holders acknowledged, " +
                                 std::to_string(t.value("failed", 0)) + " failed, " +
                                 std::to_string(t.value("unreachable", 0)) + " unreachable, " +
                                 std::to_string(t.value("pending", 0)) + " pending";
        if (line != last) std::cerr << line << "\n";
        last = line;
        if (d.value("state", "") != "in_progress") {
            answer full = ask(client, json{{"command", "getErasure"}, {"requestId", id}, {"targets", true}}, o);
            const int status = report(full, o);
            if (status != 0) return status;
            return full.response["data"].value("state", "") == "completed" ? 0 : EXIT_REFUSED;
        }
        if (std::chrono::steady_clock::now() >= until) {
            std::cerr << "gdprctl: erasure " << id << " is still in progress after " << wait_s
                      << " s; follow it with: gdprctl erasure status " << id << "\n";
            return EXIT_TIMEOUT;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
}

int run(const options& o) {
    json command = build_command(o.args);
    const bool erase = command["command"] == "eraseSubject";
    const bool wait = erase && std::find(o.args.begin(), o.args.end(), "--no-wait") == o.args.end();
    int wait_s = 600;
    if (erase) {
        std::vector<std::string> args = o.args;
        const std::string w = take_flag(args, "--wait");
        if (!w.empty()) {
            try {
                wait_s = std::stoi(w);
            } catch (const std::exception&) {
                throw usage_error("--wait needs a number of seconds");
            }
            if (wait_s <= 0) throw usage_error("--wait must be positive");
        }
    }

    const std::string uri = (o.cafile.empty() ? "tcp://" : "ssl://") + o.host + ":" + std::to_string(o.port);
    mqtt::async_client client(uri, o.client_id, mqtt::create_options(MQTTVERSION_5));
    auto builder = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).clean_start(true).connect_timeout(
        std::chrono::seconds(o.timeout_s));
    if (!o.username.empty()) builder.user_name(o.username);
    if (!o.password.empty()) builder.password(o.password);
    if (!o.cafile.empty()) {
        auto ssl = mqtt::ssl_options_builder().trust_store(o.cafile).verify(!o.insecure).enable_server_cert_auth(true);
        if (!o.cert.empty()) ssl.key_store(o.cert);
        if (!o.key.empty()) ssl.private_key(o.key);
        builder.ssl(ssl.finalize());
    }
    client.start_consuming();
    auto disconnect_quietly = [&client] {
        try {
            if (client.is_connected()) client.disconnect()->wait_for(std::chrono::seconds(2));
        } catch (...) {
        }
    };
    try {
        client.connect(builder.finalize())->wait();
    } catch (const mqtt::exception& e) {
        std::cerr << "gdprctl: cannot connect to " << o.host << ":" << o.port << ": " << e.what() << "\n";
        return EXIT_CONNECT;
    }
    const std::string request_id = erase ? command["requestId"].get<std::string>() : "";
    answer a = ask(client, std::move(command), o);
    int status;
    if (wait && a.status == 0 && !a.response.contains("error")) {
        if (!o.as_json) std::cerr << "erasure " << request_id << " accepted; waiting for its receipt\n";
        status = follow_erasure(client, request_id, wait_s, o);
    } else {
        status = report(a, o);
    }
    disconnect_quietly();
    return status;
}

} // namespace

int main(int argc, char** argv) {
    // Paho's network threads are detached and can still be ending when main returns. OpenSSL's
    // exit-time cleanup would free the state their thread-exit handlers read (a SEGV in libcrypto
    // from __nptl_deallocate_tsd), so it is not registered: the process is ending anyway.
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (!args.empty() && gdprctl::is_offline_command(args)) return gdprctl::run_offline(args);
    try {
        return run(parse_args(argc, argv));
    } catch (const usage_error& e) {
        std::cerr << "gdprctl: " << e.what() << "\n\n" << USAGE;
        return EXIT_USAGE;
    } catch (const std::exception& e) {
        std::cerr << "gdprctl: internal error: " << e.what() << "\n";
        return EXIT_INTERNAL;
    }
}
