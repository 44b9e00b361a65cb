#include "gdpr/session_recorder.hpp"

#include "gdpr/json_text.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>

#include <nlohmann/json.hpp>

namespace gdpr {

namespace {

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string_view outcome_name(field_outcome::kind k) {
    switch (k) {
    case field_outcome::kind::dropped: return "dropped";
    case field_outcome::kind::masked: return "masked";
    case field_outcome::kind::pseudonymised: return "pseudonymised";
    case field_outcome::kind::generalised: return "generalised";
    case field_outcome::kind::unsupported: return "dropped: value unsupported by its action";
    case field_outcome::kind::unclassified_dropped: return "dropped: unclassified";
    case field_outcome::kind::no_consent: return "dropped: no consent";
    }
    return "?";
}


} // namespace

session_recorder::session_recorder(audit_log& log, const classifier& engine, delivery_recording deliveries)
    : log_(log), engine_(engine), deliveries_(deliveries) {}

std::int64_t session_recorder::session_of(const void* connection, std::string_view client_id) const {
    auto it = sessions_.find(connection);
    return it != sessions_.end() && it->second.client_id == client_id ? it->second.id : 0;
}

std::int64_t session_recorder::start_session(const void* connection, const connection_info& info,
                                             std::string_view observed_at) {
    if (auto it = sessions_.find(connection); it != sessions_.end()) {
        if (it->second.client_id == info.client_id) return it->second.id;  // re-authentication
        end_session(connection, "connection object reused by the broker");
    }
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = audit_kind::session_start;
    r.client_id = info.client_id;
    r.detail = nlohmann::json{{"username", info.username},
                              {"address", info.address},
                              {"protocol_version", info.protocol_version},
                              {"transport", info.transport},
                              {"observed_at", observed_at}}
                   .dump();
    const std::int64_t id = log_.append(std::move(r));
    sessions_[connection] = session{id, info.client_id};
    return id;
}

void session_recorder::end_session(const void* connection, std::string_view reason) {
    auto it = sessions_.find(connection);
    if (it == sessions_.end()) return;
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = audit_kind::session_end;
    r.session = it->second.id;
    r.client_id = it->second.client_id;
    r.detail = nlohmann::json{{"reason", reason}}.dump();
    sessions_.erase(it);
    log_.append(std::move(r));
}

void session_recorder::end_all(std::string_view reason) {
    while (!sessions_.empty()) end_session(sessions_.begin()->first, reason);
}

void session_recorder::subscription(std::int64_t session, std::string_view client_id, bool unsubscribe,
                                    std::string_view filter, int qos, std::string_view outcome) {
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = unsubscribe ? audit_kind::unsubscribe : audit_kind::subscribe;
    r.session = session;
    r.client_id = client_id;
    r.detail = "{\"filter\":";
    append_json_string(r.detail, engine_.loggable_topic(filter));
    if (!unsubscribe) {
        r.detail += ",\"qos\":";
        append_number(r.detail, qos);
    }
    r.detail += ",\"outcome\":";
    append_json_string(r.detail, outcome);
    r.detail += '}';
    log_.append(std::move(r));
}

const std::string& session_recorder::outcomes_text(const schema& matched, const std::vector<field_outcome>& outcomes) {
    rendered_outcomes& cached = rendered_[&matched];
    const bool same = cached.outcomes.size() == outcomes.size() &&
                      std::equal(outcomes.begin(), outcomes.end(), cached.outcomes.begin(),
                                 [](const field_outcome& a, const field_outcome& b) { return a.rule == b.rule && a.what == b.what; });
    if (same && !cached.text.empty()) return cached.text;
    cached.outcomes = outcomes;
    std::string& d = cached.text;
    d.clear();
    // {"<field pointer>": "<what happened>", ...}: names and actions, never values.
    d += ",\"fields\":{";
    std::size_t unclassified = 0;
    bool first = true;
    for (const auto& o : outcomes) {
        if (o.rule < 0) {
            ++unclassified;
            continue;
        }
        const auto& rule = matched.fields[static_cast<std::size_t>(o.rule)];
        if (!first) d += ',';
        first = false;
        append_json_string(d, rule.pointer);
        d += ':';
        if (o.what == field_outcome::kind::no_consent)
            append_json_string(d, std::string(outcome_name(o.what)) + " for " + rule.purpose);
        else
            append_json_string(d, outcome_name(o.what));
    }
    d += '}';
    // Per data category, how many fields were removed or changed (gdprctl report).
    std::vector<std::pair<std::string_view, int>> categories;
    for (const auto& o : outcomes) {
        if (o.rule < 0) continue;
        const std::string_view c = matched.fields[static_cast<std::size_t>(o.rule)].category;
        auto it = std::find_if(categories.begin(), categories.end(), [&](const auto& e) { return e.first == c; });
        if (it == categories.end()) categories.emplace_back(c, 1);
        else ++it->second;
    }
    if (!categories.empty()) {
        d += ",\"categories\":{";
        for (std::size_t i = 0; i < categories.size(); ++i) {
            if (i) d += ',';
            append_json_string(d, categories[i].first);
            d += ':';
            append_number(d, categories[i].second);
        }
        d += '}';
    }
    if (unclassified) {
        d += ",\"unclassified_dropped\":";
        append_number(d, static_cast<std::int64_t>(unclassified));
    }
    return d;
}

void session_recorder::publish(std::int64_t session, std::string_view client_id, std::string_view topic, int qos,
                               bool retain, std::size_t original_size, const publish_verdict& v,
                               std::string_view forwarded, const void* forwarded_identity) {
    record_publish(session, client_id, topic, qos, retain, original_size, v, forwarded, forwarded_identity, false);
}

void session_recorder::will(std::int64_t session, std::string_view client_id, std::string_view topic, int qos,
                            bool retain, const publish_verdict& v, std::string_view payload, const void* identity) {
    record_publish(session, client_id, topic, qos, retain, payload.size(), v, payload, identity, true);
}

void session_recorder::record_publish(std::int64_t session, std::string_view client_id, std::string_view topic,
                                      int qos, bool retain, std::size_t original_size, const publish_verdict& v,
                                      std::string_view forwarded, const void* forwarded_identity, bool will) {
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = v.action == publish_action::deny ? audit_kind::publish_refused : audit_kind::publish;
    r.session = session;
    r.client_id = client_id;
    std::string& d = r.detail;
    d.reserve(256);
    // Only a topic that names its subject is shown masked; the others are shown as they are.
    const bool masked = v.matched && v.matched->subject.kind == subject_kind::topic_level;
    if (masked) masked_topic_ = engine_.loggable_topic(topic);
    const std::string_view shown_topic = masked ? std::string_view(masked_topic_) : topic;
    d = "{\"topic\":";
    append_json_string(d, shown_topic);
    d += ",\"qos\":";
    append_number(d, qos);
    d += retain ? ",\"retain\":true" : ",\"retain\":false";
    if (will) d += ",\"will\":true";
    d += ",\"size\":";
    append_number(d, static_cast<std::int64_t>(original_size));
    if (v.action == publish_action::deny) {
        d += ",\"reason\":";
        append_json_string(d, v.reason);
    }
    if (v.matched) {
        r.schema = v.matched->tag();
        r.retention_days = static_cast<std::int32_t>(v.matched->retention_days);
        // Where the data is resident, as the schema declared it then (null: nowhere in particular),
        // so that an export can check it after a reload has removed or changed the schema (GDPR Art. 44).
        d += ",\"residency\":";
        if (v.matched->residency.empty()) d += "null";
        else append_json_string(d, v.matched->residency);
        if (v.action != publish_action::deny) {
            d += ",\"forwarded_size\":";
            append_number(d, static_cast<std::int64_t>(forwarded.size()));
        }
        const auto& outcomes = engine_.last_outcomes();
        if (!outcomes.empty()) d += outcomes_text(*v.matched, outcomes);
        const auto& subjects = engine_.last_subjects();
        d += ",\"subjects\":";
        append_number(d, static_cast<std::int64_t>(subjects.size()));
        if (v.action != publish_action::deny) {
            if (!subjects.empty()) {
                // GDPR Art. 32: what was forwarded, readable only with each subject's data key.
                r.personal.reserve(forwarded.size() + topic.size() + 32);
                r.personal = "{";
                if (shown_topic != topic) {  // the topic names the subject: sealed with the payload
                    r.personal += "\"topic\":";
                    append_json_string(r.personal, topic);
                    r.personal += ',';
                }
                r.personal += "\"payload\":";
                if (forwarded.empty()) r.personal += "null";
                else r.personal.append(forwarded);
                r.personal += '}';
                r.subjects = subjects;
                d += ",\"payload\":\"sealed\"";
            } else if (!v.matched->has_personal) {
                r.has_payload = true;
                r.payload.assign(forwarded);
                d += ",\"payload\":\"clear\"";
            } else {
                d += ",\"payload\":\"not stored: personal data without a known subject\"";
            }
        }
    } else {
        d += ",\"classified\":false";
    }
    d += '}';
    const std::int64_t seq = log_.append(std::move(r));
    last_forwarded_ = nullptr;
    if (v.action != publish_action::deny) {
        last_publish_seq_ = seq;
        last_forwarded_ = forwarded_identity;
        last_topic_.assign(topic);
        last_topic_masked_ = masked;
        if (masked) last_shown_topic_.assign(masked_topic_);
    }
}

void session_recorder::forget_schemas() {
    rendered_.clear();
    last_forwarded_ = nullptr;
    last_topic_.clear();
    last_topic_masked_ = false;
}

void session_recorder::delivery(std::int64_t session, std::string_view client_id, std::string_view topic,
                                const void* payload, int qos, bool refused, std::string_view reason) {
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = refused ? audit_kind::delivery_refused : audit_kind::delivery;
    r.session = session;
    r.client_id = client_id;
    std::string& d = r.detail;
    d = "{\"topic\":";
    // The topic as the publish record showed it, without routing it again.
    if (topic != last_topic_) append_json_string(d, engine_.loggable_topic(topic));
    else append_json_string(d, last_topic_masked_ ? std::string_view(last_shown_topic_) : topic);
    d += ",\"qos\":";
    append_number(d, qos);
    // The broker checks deliveries of a publish right after MESSAGE, with the payload it stored:
    // the same pointer ties the delivery to its publish record (a will's, to the identity the
    // caller gave it). Later deliveries (queued for an offline client, retained messages) carry
    // no link.
    if (payload && payload == last_forwarded_ && last_publish_seq_ > 0 && topic == last_topic_) {
        d += ",\"publish_seq\":";
        append_number(d, last_publish_seq_);
    }
    if (refused) {
        d += ",\"reason\":";
        append_json_string(d, reason);
    }
    d += '}';
    log_.append(std::move(r));
}

void session_recorder::control(std::string_view client_id, std::string_view operator_id,
                               const std::vector<std::pair<std::string, bool>>& outcomes) {
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = audit_kind::control;
    r.client_id = client_id;
    nlohmann::json commands = nlohmann::json::array();
    for (const auto& [name, ok] : outcomes)
        commands.push_back({{"command", name}, {"ok", ok}});
    r.detail = nlohmann::json{{"operator", operator_id}, {"commands", commands}}.dump();
    log_.append(std::move(r));
}

void session_recorder::purposes_changed(std::string_view requested_by, bool basis_changes_allowed,
                                        const schema_changes& changes) {
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = audit_kind::control;
    nlohmann::json purposes = to_json(changes.purposes);
    purposes["leavingConsent"] = changes.purposes.leaving_consent;
    r.detail = nlohmann::json{{"reload", requested_by},
                              {"allowBasisChanges", basis_changes_allowed},
                              {"purposes", std::move(purposes)},
                              {"fieldsLeavingConsent", changes.fields_leaving_consent}}
                   .dump();
    log_.append(std::move(r));
}

void session_recorder::residency_changed(std::string_view requested_by, bool transfer_changes_allowed,
                                         const residency_changes& changes) {
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = audit_kind::control;
    r.detail = nlohmann::json{{"reload", requested_by},
                              {"allowTransferChanges", transfer_changes_allowed},
                              {"residency", to_json(changes)}}
                   .dump();
    log_.append(std::move(r));
}

void session_recorder::erasure(std::string_view step, const std::string& detail_json) {
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = audit_kind::erasure;
    // {"step":"...", + the caller's members: a receipt can be megabytes, so it is not re-parsed.
    r.detail = "{\"step\":";
    append_json_string(r.detail, step);
    const auto open = detail_json.find('{');
    const auto close = detail_json.rfind('}');
    if (open != std::string::npos && close != std::string::npos && close > open + 1) {
        r.detail.push_back(',');
        r.detail.append(detail_json, open + 1, close - open - 1);
    }
    r.detail.push_back('}');
    log_.append(std::move(r));
}

void session_recorder::consent_change(std::string_view change, const std::string& subject,
                                      const std::string& detail_json, const std::string& personal_json) {
    audit_record r = log_.blank_record();
    r.at_ms = wall_ms();
    r.kind = audit_kind::consent;
    auto detail = nlohmann::json::parse(detail_json, nullptr, false);
    if (!detail.is_object()) detail = nlohmann::json::object();
    detail["change"] = change;
    r.detail = detail.dump();
    r.personal = personal_json;
    r.subjects = {subject};
    log_.append(std::move(r));
}

} // namespace gdpr
