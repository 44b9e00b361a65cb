#include "gdpr/control_api.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <ctime>
#include <memory>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include "gdpr/audit_reader.hpp"
#include "gdpr/processing_record.hpp"

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

namespace {

// An answer can quote text the broker read from files or payloads (file names, parse errors):
// bytes that are not UTF-8 are replaced rather than losing the whole answer.
std::string text_of(const json& answer) { return answer.dump(-1, ' ', false, json::error_handler_t::replace); }

// A command's answer as it starts: the command's name, and its correlationData echoed when it can
// be (`bad_correlation` otherwise: a number with a fraction or beyond 64 bits would not come back
// as it was sent).
json answer_head(const json& cmd, bool& bad_correlation) {
    json response{{"command", cmd.is_object() && cmd.contains("command") && cmd["command"].is_string()
                                  ? cmd["command"].get<std::string>()
                                  : std::string()}};
    bad_correlation = false;
    if (cmd.is_object() && cmd.contains("correlationData")) {
        const json& c = cmd["correlationData"];
        if ((c.is_string() && c.get_ref<const std::string&>().size() <= 256) || c.is_number_integer())
            response["correlationData"] = c;
        else
            bad_correlation = true;
    }
    return response;
}

} // namespace

std::string named_clients::identify(const requester& r) const {
    auto listed = [](const std::vector<std::string>& names, const std::string& name) {
        return !name.empty() && std::find(names.begin(), names.end(), name) != names.end();
    };
    if (listed(certificate_cns, r.certificate_cn)) return "cn:" + r.certificate_cn;
    if (listed(usernames, r.username)) return "username:" + r.username;
    if (listed(client_ids, r.client_id)) return "client:" + r.client_id;
    return {};
}

// The commands of one control message, run strictly in order: a command whose change must become
// durable first is resumed from its completion, so later commands of the same message see it.
struct control_api::pending_reply {
    json commands;
    std::string operator_id;
    std::size_t next = 0;
    std::size_t exports = 0;  // exportSubject commands seen
    std::vector<json> responses;
    // An exportSubject answer's "data", as JSON text written off the broker thread, spliced into
    // the reply in place of responses[export_index]["data"].
    std::string export_data;
    std::size_t export_index = SIZE_MAX;
    control_api::export_gate export_gate;  // see control_api::handle
    std::size_t answer_bytes = 0;  // of the responses before `next`
    control_api::reply_fn reply;
};

namespace {

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

// Whether `text` holds `subject` as a whole word (not inside a longer run of letters and digits):
// "erase-D-1234" names D-1234, "erase-7f3a" does not name "a". Subjects shorter than four
// characters are too likely to occur by chance to be refused.
// ASCII letters in any case: "erase-d-1234" names D-1234 as well.
bool names_subject(std::string_view text_as_given, std::string_view subject_as_given) {
    if (subject_as_given.size() < 4) return false;
    const auto lower = [](std::string_view s) {
        std::string out(s);
        for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return out;
    };
    const std::string text = lower(text_as_given), subject = lower(subject_as_given);
    const auto word_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
    for (auto at = text.find(subject); at != std::string::npos; at = text.find(subject, at + 1)) {
        const bool starts = at == 0 || !word_char(text[at - 1]) || !word_char(subject.front());
        const auto end = at + subject.size();
        const bool ends = end == text.size() || !word_char(text[end]) || !word_char(subject.back());
        if (starts && ends) return true;
    }
    return false;
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

// Deepest bracket nesting outside strings; stops counting past `limit`. Run before parsing, so a
// hostile document never reaches the recursive parts of the JSON library (copy, dump).
std::size_t nesting_depth(std::string_view text, std::size_t limit) {
    std::size_t depth = 0, deepest = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '{' || c == '[') {
            deepest = std::max(deepest, ++depth);
            if (deepest > limit) return deepest;
        } else if ((c == '}' || c == ']') && depth > 0) --depth;
    }
    return deepest;
}

json binding_json(const device_binding& b) {
    return json{{"clientId", b.client_id}, {"subject", b.subject}, {"boundAt", format_utc_ms(b.bound_at_ms)},
                {"operator", b.operator_id}};
}

} // namespace

control_api::control_api(classifier& engine, consent_store& store, const purpose_registry& purposes,
                         named_clients operators, logger& log)
    : engine_(engine), store_(store), purposes_(purposes), operators_(std::move(operators)), log_(log),
      now_ms_(&consent_store::now_ms) {}

// GDPR Art. 17: eraseSubject starts (or, for a known request id, reports) an erasure; getErasure
// answers its receipt; listErasures the register.
bool control_api::run_erasure_command(const std::shared_ptr<pending_reply>& pending, std::size_t i,
                                      const std::string& name) {
    const json& cmd = pending->commands[i];
    json response{{"command", name}};
    if (cmd.contains("correlationData")) response["correlationData"] = cmd["correlationData"];
    if (!erasure_) throw command_error("erasure is not available on this broker");
    if (name == "eraseSubject") {
        only_arguments(cmd, {"subject", "requestId"});
        const auto subject = required_text(cmd, "subject");
        const auto request_id = required_text(cmd, "requestId", erasure_manager::MAX_ID_BYTES);
        // The request id is logged, alerted and recorded in clear: it must not carry the subject.
        if (names_subject(request_id, subject))
            throw command_error("requestId must not contain the subject: it appears in logs, alerts and the audit trail");
        log_.notice("erasure request '" + printable(request_id) + "' from " + pending->operator_id);
        erasure_->request(request_id, subject, pending->operator_id, now_ms_(),
                          [this, pending, i, response](const erasure_request* r, const std::string& error) mutable {
                              if (!r) {
                                  response["error"] = error;
                              } else {
                                  // getErasure has the targets; a large fleet makes them long.
                                  auto receipt = receipt_document(*r, false);
                                  response["data"] = std::move(receipt);
                              }
                              pending->responses[i] = response;
                              advance(pending);
                          });
        return false;
    }
    if (name == "getErasure") {
        only_arguments(cmd, {"requestId", "targets"});
        const auto request_id = required_text(cmd, "requestId", erasure_manager::MAX_ID_BYTES);
        bool with_targets = true;
        if (cmd.contains("targets")) with_targets = required(cmd, "targets", json::value_t::boolean, "true or false").get<bool>();
        const erasure_request* r = erasure_->find(request_id);
        if (!r) throw command_error("no erasure request \"" + request_id + "\"");
        auto receipt = receipt_document(*r, with_targets);
        response["data"] = std::move(receipt);
        pending->responses[i] = response;
        return true;
    }
    only_arguments(cmd, {"limit"});
    std::int64_t limit = 100;
    if (cmd.contains("limit")) {
        limit = required(cmd, "limit", json::value_t::number_integer, "an integer").get<std::int64_t>();
        if (limit < 1 || limit > 1000) throw command_error("argument \"limit\" must be between 1 and 1000");
    }
    json list = json::array();
    for (const erasure_request* r : erasure_->list(static_cast<std::size_t>(limit))) {
        auto receipt = receipt_document(*r, false);
        receipt.erase("plugin");
        list.push_back(std::move(receipt));
    }
    response["data"] = json{{"erasures", std::move(list)}};
    pending->responses[i] = response;
    return true;
}

void control_api::handle(const requester& who, std::string_view payload, reply_fn reply, export_gate gate) {
    auto pending = std::make_shared<pending_reply>();
    pending->reply = std::move(reply);
    auto single_error = [&](const std::string& message) {
        pending->reply(text_of(json{{"responses", json::array({json{{"command", ""}, {"error", message}}})}}),
                       {{std::string(), false}});
    };

    json doc;
    if (payload.size() > MAX_PAYLOAD) {
        ++refused_requests_;
        return single_error("control message is larger than " + std::to_string(MAX_PAYLOAD) + " bytes");
    }
    if (nesting_depth(payload, MAX_NESTING) > MAX_NESTING) {
        ++refused_requests_;
        return single_error("control message is nested deeper than " + std::to_string(MAX_NESTING) + " levels");
    }
    try {
        doc = json::parse(payload.begin(), payload.end());
    } catch (const json::parse_error& e) {
        ++refused_requests_;
        return single_error("control message is not valid JSON (at byte " + std::to_string(e.byte) + ")");
    } catch (const json::exception&) {  // a number beyond a double's range (1e999)
        ++refused_requests_;
        return single_error("control message holds a number out of range");
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

    pending->operator_id = operators_.identify(who);
    pending->export_gate = std::move(gate);
    pending->commands = std::move(doc["commands"]);
    pending->responses.resize(pending->commands.size());
    if (pending->operator_id.empty()) {
        ++refused_requests_;
        log_.warning("refused " + std::to_string(pending->commands.size()) + " control command(s) from client '" +
                     printable(who.client_id) + "': not an operator");
    }
    advance(pending);
}

void control_api::cancel_exports() {
    exports_cancelled_->store(true);
    if (export_reader_) export_reader_->cancel_queued("the broker is stopping");
}

void control_api::advance(const std::shared_ptr<pending_reply>& pending) {
    while (pending->next < pending->commands.size()) {
        const std::size_t i = pending->next++;
        // The previous command has finished: its response is final.
        if (i > 0) pending->answer_bytes += text_of(pending->responses[i - 1]).size();
        if (pending->answer_bytes + pending->export_data.size() > max_answer_bytes_) {
            bool bad_correlation = false;
            json response = answer_head(pending->commands[i], bad_correlation);
            response["error"] = "not run: the answer to this message is already larger than " +
                                std::to_string(max_answer_bytes_) + " bytes; send the remaining commands separately";
            pending->responses[i] = std::move(response);
            continue;
        }
        if (!run_command(pending, i)) return;  // resumed from the command's completion
    }
    command_outcomes outcomes;
    outcomes.reserve(pending->responses.size());
    for (const auto& r : pending->responses)
        outcomes.emplace_back(r.value("command", std::string()), !r.contains("error"));
    if (pending->export_index == SIZE_MAX) {
        pending->reply(text_of(json{{"responses", std::move(pending->responses)}}), outcomes);
        return;
    }
    // {"responses":[..., {<the export's response>,"data":<export text>}, ...]} without parsing
    // or serialising the export again.
    // Reserved whole first: a buffer that grew would free copies of the decrypted export unwiped.
    std::vector<std::string> parts;
    parts.reserve(pending->responses.size());
    std::size_t total = 16 + pending->export_data.size();
    for (const auto& r : pending->responses) total += (parts.emplace_back(text_of(r))).size() + 10;
    std::string text;
    text.reserve(total);
    text = "{\"responses\":[";
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (i) text.push_back(',');
        if (i == pending->export_index && !pending->export_data.empty()) {
            text.append(parts[i], 0, parts[i].size() - 1);  // without its closing '}'
            text += ",\"data\":";  // the response has at least "command"
            text += pending->export_data;
            text.push_back('}');
        } else {
            text += parts[i];
        }
    }
    text += "]}";
    // GDPR Art. 32: the decrypted export does not linger in freed memory.
    OPENSSL_cleanse(pending->export_data.data(), pending->export_data.size());
    pending->export_data.clear();
    pending->reply(text, outcomes);
    OPENSSL_cleanse(text.data(), text.size());
}

bool control_api::run_command(const std::shared_ptr<pending_reply>& pending, std::size_t i) {
    const json& cmd = pending->commands[i];
    const std::string& operator_id = pending->operator_id;
    bool bad_correlation = false;
    json response = answer_head(cmd, bad_correlation);
    const std::string name = response["command"].get<std::string>();
    auto fail = [&](const std::string& message) {
        response["error"] = message;
        pending->responses[i] = response;
        return true;
    };
    if (bad_correlation) {
        return fail("\"correlationData\" must be a string of at most 256 bytes or an integer");
    }
    if (!cmd.is_object()) {
        return fail("a command must be a JSON object");
    }
    if (name.empty()) {
        return fail("missing \"command\" (a string)");
    }
    if (operator_id.empty()) {
        return fail("not authorised: only operators named in the plugin options may use " + std::string(CONTROL_TOPIC));
    }
    try {
        if (name == "setConsent") {
            only_arguments(cmd, {"subject", "purpose", "granted", "evidence"});
            const auto subject = required_text(cmd, "subject");
            const auto purpose_name = required_text(cmd, "purpose", 64);
            const bool granted = required(cmd, "granted", json::value_t::boolean, "true or false").get<bool>();
            const auto evidence = optional_text(cmd, "evidence", 1024);
            const purpose* p = purposes_.find(purpose_name);
            // GDPR Art. 7(3): consent held for a purpose that no longer rests on it can still be withdrawn.
            const bool held = !granted && store_.withdrawable(subject, purpose_name);
            if (!p && !held) throw command_error("unknown purpose \"" + purpose_name + "\"");
            if (p && p->basis != lawful_basis::consent && !held)
                throw command_error("purpose \"" + purpose_name + "\" rests on " + std::string(to_string(p->basis)) +
                                    ", not consent: it needs no consent record");
            store_.set_consent(subject, purpose_name, granted, operator_id, evidence,
                               [this, pending, i, response, subject, purpose_name, granted](const std::string& error) mutable {
                                   if (!error.empty()) {
                                       response["error"] = "consent was not recorded: " + error;
                                   } else {
                                       response["data"] = json{{"subject", subject}, {"purpose", purpose_name}, {"granted", granted}};
                                   }
                                   pending->responses[i] = response;
                                   advance(pending);
                               });
            log_.info("consent " + std::string(granted ? "granted" : "withdrawn") + " for purpose '" + purpose_name +
                      "' by " + operator_id);
            return false;
        } else if (name == "getConsent") {
            only_arguments(cmd, {"subject"});
            const auto subject = required_text(cmd, "subject");
            store_.history(subject, [this, pending, i, response, subject](std::vector<consent_event> events,
                                                                          const std::string& error) mutable {
                if (!error.empty()) {
                    response["error"] = "could not read the consent history: " + error;
                } else {
                    json history = json::array();
                    for (const auto& e : events) {
                        history.push_back(json{{"purpose", e.purpose}, {"granted", e.granted}, {"at", format_utc_ms(e.at_ms)},
                                               {"operator", e.operator_id}, {"evidence", e.evidence}});
                    }
                    response["data"] = json{{"subject", subject}, {"granted", store_.granted_purposes(subject)},
                                            {"held", store_.held_purposes(subject)}, {"history", history}};
                }
                pending->responses[i] = response;
                advance(pending);
            });
            return false;
        } else if (name == "bindDevice" || name == "unbindDevice") {
            only_arguments(cmd, {"clientId", "subject"});
            const auto client_id = required_text(cmd, "clientId", 65535);
            const auto subject = required_text(cmd, "subject");
            auto done = [this, pending, i, response, client_id, subject](const std::string& error) mutable {
                if (!error.empty()) {
                    response["error"] = "the change was not recorded: " + error;
                } else {
                    response["data"] = json{{"clientId", client_id}, {"subject", subject}};
                }
                pending->responses[i] = response;
                advance(pending);
            };
            const bool changed = name == "bindDevice" ? store_.bind(client_id, subject, operator_id, done)
                                                      : store_.unbind(client_id, subject, operator_id, done);
            if (!changed)
                throw command_error(name == "bindDevice" ? "the device is already bound to this subject"
                                                         : "the device is not bound to this subject");
            return false;
        } else if (name == "listBindings") {
            only_arguments(cmd, {"clientId", "subject"});
            const auto client_id = optional_text(cmd, "clientId", 65535);
            const auto subject = optional_text(cmd, "subject");
            json list = json::array();
            for (const auto& b : store_.bindings(client_id, subject)) list.push_back(binding_json(b));
            response["data"] = json{{"bindings", list}};
            pending->responses[i] = response;
            return true;
        } else if (name == "describeProcessing") {
            only_arguments(cmd, {});  // GDPR Art. 30(1): what this broker enforces now
            const residency_rules* rules = residency_ ? &residency_->rules() : nullptr;
            response["data"] = processing_record(engine_.schemas(), engine_.purposes(), rules, &safeguards_,
                                                 details_ ? &*details_ : nullptr);
            pending->responses[i] = response;
            return true;
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
                  {"storedMessageConsentWithdrawn", s.stored_withdrawn},
                  {"storedMessageUnreadable", s.stored_unreadable},
                  {"storedMessageSchemaChanged", s.stored_schema_changed},
                  {"controlRequests", refused_requests_}}},
                {"publishesWithoutKnownSubject", s.no_subject},
                {"subjectsWithConsent", store_.subjects_with_consent()},
                {"consentGrantsHeld", store_.held_grants()},
                {"deviceBindings", store_.binding_count()},
                {"withdrawalsNotYetRecorded", store_.pending_withdrawals()},
            };
            // GDPR Art. 44: refused transfers, per region pair and path.
            json residency{{"enforced", residency_ != nullptr}};
            if (residency_) {
                json pairs = json::array();
                for (const auto& r : residency_->refusals())
                    pairs.push_back({{"from", r.from}, {"to", r.to}, {"via", r.via}, {"count", r.count}});
                residency["refusals"] = pairs;
                json transfers = json::array();
                for (const auto& t : residency_->transfers())
                    transfers.push_back({{"from", t.from}, {"to", t.to}, {"count", t.count}});
                residency["transfers"] = transfers;
                response["data"]["refusals"]["residency"] = residency_->refusal_total();
            }
            response["data"]["residency"] = residency;
            if (quota_) {
                response["data"]["refusals"]["newSubjects"] = quota_->refused() + (gateway_quota_ ? gateway_quota_->refused() : 0);
                response["data"]["newSubjectAllowance"] = {{"perMinute", quota_->per_minute()}, {"burst", quota_->burst()},
                                                           {"clientsDrawing", quota_->clients_tracked()}};
                if (gateway_quota_)
                    response["data"]["newSubjectAllowance"]["gateways"] = {
                        {"perMinute", gateway_quota_->per_minute()},
                        {"burst", gateway_quota_->burst()},
                        {"subjectsAdmitted", gateway_quota_->admitted()},
                        {"refused", gateway_quota_->refused()}};
            }
            pending->responses[i] = response;
            return true;
        } else if (name == "reloadSchemas") {
            only_arguments(cmd, {"allowRemovals", "allowBasisChanges", "allowTransferChanges"});
            reload_permissions allowed;
            for (const auto& [option, flag] : {std::pair<const char*, bool*>{"allowRemovals", &allowed.removals},
                                               {"allowBasisChanges", &allowed.basis_changes},
                                               {"allowTransferChanges", &allowed.transfer_changes}}) {
                if (!cmd.contains(option)) continue;
                if (!cmd[option].is_boolean()) throw command_error("\"" + std::string(option) + "\" must be true or false");
                *flag = cmd[option].get<bool>();
            }
            if (!reload_schemas_) throw command_error("reloadSchemas is not available on this broker");
            reload_schemas_("reloadSchemas by " + operator_id, allowed,
                            [this, pending, i, response](const schema_changes* c, const std::string& error) mutable {
                                if (!c) {
                                    response["error"] = "schemas not reloaded, the ones in use stay: " + printable_text(error);
                                } else {
                                    response["data"] = json{{"schemas", c->schemas},
                                                            {"topicFilters", c->topic_filters},
                                                            {"added", c->added},
                                                            {"removed", c->removed},
                                                            {"newVersions", c->new_versions},
                                                            {"editedWithoutNewVersion", c->edited_unversioned},
                                                            {"fieldsLeavingConsent", c->fields_leaving_consent},
                                                            {"purposes", to_json(c->purposes)}};
                                    if (residency_) response["data"]["residency"] = to_json(c->residency);
                                }
                                pending->responses[i] = std::move(response);
                                advance(pending);
                            });
            return false;
        } else if (name == "eraseSubject" || name == "getErasure" || name == "listErasures") {
            return run_erasure_command(pending, i, name);
        } else if (name == "exportSubject") {
            // GDPR Art. 15, 20: everything recorded about the subject, decrypted, read off the broker
            // thread; with it the consent the subject has given and the devices bound to them.
            only_arguments(cmd, {"subject"});
            const auto subject = required_text(cmd, "subject");
            if (!export_reader_)
                throw command_error("exportSubject needs session recording (plugin_opt_audit_key_file): "
                                    "without an audit trail there is nothing recorded to export");
            if (!pending->export_gate.refusal.empty()) throw command_error(pending->export_gate.refusal);
            // One answer holds at most one export: each can be megabytes.
            if (pending->exports++ > 0) throw command_error("one exportSubject per control message: send the others separately");
            auto document = std::make_shared<std::string>();
            auto holdings = std::make_shared<export_holdings>();
            export_options options;
            options.max_bytes = export_max_bytes_;
            options.indent = -1;  // compact, like the answer around it
            // Consent as it stands when asked (read here: the store lives on the broker thread);
            // its history is in the export.
            options.granted_now = store_.granted_purposes(subject);
            options.held_now = store_.held_purposes(subject);
            if (data_map_names_) options.data_map_names = data_map_names_(subject);
            export_reader_->submit(
                [keys = export_keys_, opener = export_topic_opener_, earlier = export_earlier_opener_, subject, document, now = now_ms_(),
                 options = std::move(options), cancelled = exports_cancelled_, holdings](sqlite_db& db) mutable {
                    options.cancelled = cancelled.get();
                    options.schema_residencies = holdings.get();
                    options.topic_opener = opener.get();
                    options.earlier_topic_opener = earlier.get();
                    try {
                        *document = export_subject(db, *keys, subject, now, options);
                    } catch (const export_error& e) {
                        throw std::runtime_error(std::string(e.what()) +
                                                 "; use gdprctl export on the database for a larger export");
                    }
                },
                [this, pending, i, response, document, holdings](const std::string& error) mutable {
                    std::string refused;
                    if (error.empty() && pending->export_gate.check) {
                        try {
                            refused = pending->export_gate.check(*holdings);
                        } catch (const std::exception& e) {  // fail closed, and answer
                            refused = std::string("exportSubject is refused: its residency could not be checked: ") + e.what();
                        }
                    }
                    if (!error.empty() || !refused.empty()) {
                        OPENSSL_cleanse(document->data(), document->size());
                        response["error"] = error.empty() ? refused : "could not export: " + error;
                    } else {
                        pending->export_data = std::move(*document);
                        pending->export_index = i;
                    }
                    pending->responses[i] = std::move(response);
                    advance(pending);
                });
            log_.info("export of a subject's records requested by " + operator_id);
            return false;
        } else {
            throw command_error("unknown command \"" + name +
                                "\" (known: setConsent, getConsent, bindDevice, unbindDevice, listBindings, getStats, "
                                "eraseSubject, getErasure, listErasures, exportSubject, reloadSchemas, describeProcessing)");
        }
    } catch (const command_error& e) {
        return fail(e.what());
    } catch (const std::invalid_argument& e) {
        return fail(e.what());
    }
}

} // namespace gdpr
