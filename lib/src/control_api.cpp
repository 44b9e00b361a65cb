#include "gdpr/control_api.hpp"

#include <algorithm>
#include <ctime>
#include <memory>

#include <nlohmann/json.hpp>

namespace gdpr {

using json = nlohmann::json;

std::string format_utc_ms(std::int64_t ms) {
    const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    char buf[40];
    const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%03dZ", static_cast<int>(ms % 1000));
    return std::string(buf, n) + frac;
}

std::string operator_list::identify(const requester& r) const {
    auto listed = [](const std::vector<std::string>& names, const std::string& name) {
        return !name.empty() && std::find(names.begin(), names.end(), name) != names.end();
    };
    if (listed(certificate_cns, r.certificate_cn)) return "cn:" + r.certificate_cn;
    if (listed(usernames, r.username)) return "username:" + r.username;
    if (listed(client_ids, r.client_id)) return "client:" + r.client_id;
    return {};
}

namespace {

// Collects the responses of one control message and sends them once all are in.
struct pending_reply {
    std::vector<json> responses;
    std::size_t outstanding = 0;
    control_api::reply_fn reply;

    void fill(std::size_t slot, json response) {
        responses[slot] = std::move(response);
        if (--outstanding == 0) reply(json{{"responses", responses}}.dump());
    }
};

class command_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

const json& required(const json& cmd, const char* key, json::value_t type, const char* type_name) {
    auto it = cmd.find(key);
    if (it == cmd.end()) throw command_error(std::string("missing required argument \"") + key + "\"");
    const bool ok = it->type() == type || (type == json::value_t::number_integer && it->is_number_integer());
    if (!ok) throw command_error(std::string("argument \"") + key + "\" must be " + type_name);
    return *it;
}

std::string required_text(const json& cmd, const char* key, std::size_t max_len = 256) {
    auto value = required(cmd, key, json::value_t::string, "a string").get<std::string>();
    if (value.empty()) throw command_error(std::string("argument \"") + key + "\" must not be empty");
    if (value.size() > max_len)
        throw command_error(std::string("argument \"") + key + "\" is longer than " + std::to_string(max_len) + " bytes");
    return value;
}

std::string optional_text(const json& cmd, const char* key, std::size_t max_len = 256) {
    if (!cmd.contains(key)) return {};
    const auto& v = cmd[key];
    if (!v.is_string()) throw command_error(std::string("argument \"") + key + "\" must be a string");
    auto value = v.get<std::string>();
    if (value.size() > max_len)
        throw command_error(std::string("argument \"") + key + "\" is longer than " + std::to_string(max_len) + " bytes");
    return value;
}

void only_arguments(const json& cmd, std::initializer_list<const char*> allowed) {
    for (auto it = cmd.begin(); it != cmd.end(); ++it) {
        if (it.key() == "command" || it.key() == "correlationData") continue;
        bool ok = false;
        for (const char* a : allowed) ok = ok || it.key() == a;
        if (!ok) throw command_error("unknown argument \"" + it.key() + "\"");
    }
}

json binding_json(const device_binding& b) {
    return json{{"clientId", b.client_id}, {"subject", b.subject}, {"boundAt", format_utc_ms(b.bound_at_ms)},
                {"operator", b.operator_id}};
}

} // namespace

control_api::control_api(classifier& engine, consent_store& store, const purpose_registry& purposes,
                         operator_list operators, logger& log)
    : engine_(engine), store_(store), purposes_(purposes), operators_(std::move(operators)), log_(log) {}

void control_api::handle(const requester& who, std::string_view payload, reply_fn reply) {
    auto pending = std::make_shared<pending_reply>();
    pending->reply = std::move(reply);
    auto single_error = [&](const std::string& message) {
        pending->responses.assign(1, json{{"command", ""}, {"error", message}});
        pending->reply(json{{"responses", pending->responses}}.dump());
    };

    json doc;
    if (payload.size() > MAX_PAYLOAD) {
        ++refused_requests_;
        return single_error("control message is larger than " + std::to_string(MAX_PAYLOAD) + " bytes");
    }
    try {
        doc = json::parse(payload.begin(), payload.end());
    } catch (const json::parse_error& e) {
        ++refused_requests_;
        return single_error("control message is not valid JSON (at byte " + std::to_string(e.byte) + ")");
    }
    if (!doc.is_object() || !doc.contains("commands") || !doc["commands"].is_array() || doc["commands"].empty()) {
        ++refused_requests_;
        return single_error("control message must be an object with a non-empty \"commands\" array");
    }
    const json& commands = doc["commands"];
    if (commands.size() > MAX_COMMANDS) {
        ++refused_requests_;
        return single_error("control message holds more than " + std::to_string(MAX_COMMANDS) + " commands");
    }

    const std::string operator_id = operators_.identify(who);
    pending->responses.resize(commands.size());
    pending->outstanding = commands.size();
    if (operator_id.empty()) {
        ++refused_requests_;
        log_.warning("refused " + std::to_string(commands.size()) + " control command(s) from client '" + who.client_id +
                     "': not an operator");
    }

    for (std::size_t i = 0; i < commands.size(); ++i) {
        const json& cmd = commands[i];
        json response{{"command", ""}};
        std::string name;
        if (cmd.is_object() && cmd.contains("command") && cmd["command"].is_string()) name = cmd["command"].get<std::string>();
        response["command"] = name;
        if (cmd.is_object() && cmd.contains("correlationData")) response["correlationData"] = cmd["correlationData"];
        auto fail = [&](const std::string& message) {
            response["error"] = message;
            pending->fill(i, response);
        };
        if (!cmd.is_object()) {
            fail("a command must be a JSON object");
            continue;
        }
        if (name.empty()) {
            fail("missing \"command\" (a string)");
            continue;
        }
        if (operator_id.empty()) {
            fail("not authorised: only operators named in the plugin options may use " + std::string(CONTROL_TOPIC));
            continue;
        }
        try {
            if (name == "setConsent") {
                only_arguments(cmd, {"subject", "purpose", "granted", "evidence"});
                const auto subject = required_text(cmd, "subject");
                const auto purpose_name = required_text(cmd, "purpose", 64);
                const bool granted = required(cmd, "granted", json::value_t::boolean, "true or false").get<bool>();
                const auto evidence = optional_text(cmd, "evidence", 1024);
                const purpose* p = purposes_.find(purpose_name);
                if (!p) throw command_error("unknown purpose \"" + purpose_name + "\"");
                if (p->basis != lawful_basis::consent)
                    throw command_error("purpose \"" + purpose_name + "\" rests on " + std::string(to_string(p->basis)) +
                                        ", not consent: it needs no consent record");
                store_.set_consent(subject, purpose_name, granted, operator_id, evidence,
                                   [pending, i, response, subject, purpose_name, granted](const std::string& error) mutable {
                                       if (!error.empty()) {
                                           response["error"] = "consent was not recorded: " + error;
                                       } else {
                                           response["data"] = json{{"subject", subject}, {"purpose", purpose_name}, {"granted", granted}};
                                       }
                                       pending->fill(i, response);
                                   });
                log_.info("consent " + std::string(granted ? "granted" : "withdrawn") + " for purpose '" + purpose_name +
                          "' by " + operator_id);
            } else if (name == "getConsent") {
                only_arguments(cmd, {"subject"});
                const auto subject = required_text(cmd, "subject");
                json granted = store_.granted_purposes(subject);
                store_.history(subject, [pending, i, response, subject, granted](std::vector<consent_event> events,
                                                                                  const std::string& error) mutable {
                    if (!error.empty()) {
                        response["error"] = "could not read the consent history: " + error;
                    } else {
                        json history = json::array();
                        for (const auto& e : events) {
                            history.push_back(json{{"purpose", e.purpose}, {"granted", e.granted}, {"at", format_utc_ms(e.at_ms)},
                                                   {"operator", e.operator_id}, {"evidence", e.evidence}});
                        }
                        response["data"] = json{{"subject", subject}, {"granted", granted}, {"history", history}};
                    }
                    pending->fill(i, response);
                });
            } else if (name == "bindDevice" || name == "unbindDevice") {
                only_arguments(cmd, {"clientId", "subject"});
                const auto client_id = required_text(cmd, "clientId", 65535);
                const auto subject = required_text(cmd, "subject");
                auto done = [pending, i, response, client_id, subject](const std::string& error) mutable {
                    if (!error.empty()) {
                        response["error"] = "the change was not recorded: " + error;
                    } else {
                        response["data"] = json{{"clientId", client_id}, {"subject", subject}};
                    }
                    pending->fill(i, response);
                };
                const bool changed = name == "bindDevice" ? store_.bind(client_id, subject, operator_id, done)
                                                          : store_.unbind(client_id, subject, operator_id, done);
                if (!changed)
                    throw command_error(name == "bindDevice" ? "the device is already bound to this subject"
                                                             : "the device is not bound to this subject");
            } else if (name == "listBindings") {
                only_arguments(cmd, {"clientId", "subject"});
                const auto client_id = optional_text(cmd, "clientId", 65535);
                const auto subject = optional_text(cmd, "subject");
                json list = json::array();
                for (const auto& b : store_.bindings(client_id, subject)) list.push_back(binding_json(b));
                response["data"] = json{{"bindings", list}};
                pending->fill(i, response);
            } else if (name == "getStats") {
                only_arguments(cmd, {});
                const auto& s = engine_.stats();
                response["data"] = json{
                    {"messages", s.messages},
                    {"classified", s.classified},
                    {"unmatched", s.unmatched},
                    {"fieldsTransformed", s.fields_transformed},
                    {"fieldsDropped",
                     {{"rule", s.fields_dropped},
                      {"noConsent", s.fields_no_consent},
                      {"unclassified", s.fields_unclassified_dropped},
                      {"unsupportedValue", s.fields_unsupported}}},
                    {"refusals",
                     {{"invalidPayload", s.refused_invalid},
                      {"unmatchedTopic", s.refused_unmatched},
                      {"will", s.wills_refused},
                      {"controlRequests", refused_requests_}}},
                    {"publishesWithoutKnownSubject", s.no_subject},
                    {"subjectsWithConsent", store_.subjects_with_consent()},
                    {"deviceBindings", store_.binding_count()},
                };
                pending->fill(i, response);
            } else {
                throw command_error("unknown command \"" + name +
                                    "\" (known: setConsent, getConsent, bindDevice, unbindDevice, listBindings, getStats)");
            }
        } catch (const command_error& e) {
            fail(e.what());
        } catch (const std::invalid_argument& e) {
            fail(e.what());
        }
    }
}

} // namespace gdpr
