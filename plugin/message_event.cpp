// MOSQ_EVT_MESSAGE: every publish from a client, before it is stored or delivered.
#include <chrono>
#include <cstring>
#include <string>

#include "context.hpp"
#include "properties.hpp"

namespace gdpr_plugin {

namespace {

// The publish as the broker will forward it, for the audit trail.
void record_publish(plugin_context& ctx, const mosquitto_evt_message& msg, std::string_view topic,
                    std::size_t original_size, const gdpr::publish_verdict& v) {
    if (!ctx.recorder) return;
    const std::string_view forwarded(static_cast<const char*>(msg.payload), msg.payload ? msg.payloadlen : 0);
    ctx.recorder->publish(session_for(ctx, msg.client, "publish"), client_id_of(msg.client), topic, msg.qos,
                          msg.retain, original_size, v, forwarded, msg.payload);
}

// The publish goes through: the data map learns of it, and its client was seen acting.
// `unread_text`: the publisher's properties carry text the plugin does not read.
void note_publish_holders(plugin_context& ctx, const mosquitto_evt_message& msg, std::string_view topic,
                          bool unread_text) {
    const gdpr::forwarded_message seen{
        std::string_view(static_cast<const char*>(msg.payload), msg.payload ? msg.payloadlen : 0), unread_text};
    note_holders(ctx, msg.client, topic, msg.retain, msg.payload, msg.payloadlen, true, &seen);
    connection_acted(ctx, msg.client);
}

decision classify_message(plugin_context& ctx, mosquitto_evt_message& msg) {
    const std::string_view topic = msg.topic ? std::string_view(msg.topic) : std::string_view{};
    const std::string_view payload(static_cast<const char*>(msg.payload), msg.payload ? msg.payloadlen : 0);
    // Deliveries checked from here on are this publish's, if any: never the previous one's.
    if (ctx.map) ctx.map->forget_last_publish();
    if (ctx.residency) ctx.residency->forget_publish();
    forget_stored_checks(ctx);
    forget_sent_will(ctx);
    if (audit_trail_refuses(ctx, "publish", topic)) return decision::deny;
    // Subscribers must be able to trust the gdpr-* properties: a publisher may not set them, on
    // any topic (erase acknowledgements reach subscribers and bridges too).
    if (msg.properties && !strip_gdpr_user_properties(&msg.properties)) return decision::failure;
    const bool unread_text = carries_text(msg.properties);
    if (handle_erase_ack(ctx, msg, topic)) return decision::allow;  // the plugin's own protocol: not classified
    const gdpr::publish_verdict v = ctx.engine->classify(topic, payload, client_id_of(msg.client));
    if (v.action == gdpr::publish_action::deny) {
        record_publish(ctx, msg, topic, payload.size(), v);
        std::string line = "refused publish on '" + ctx.engine->loggable_topic(topic) + "'";
        if (v.matched) line += " (schema " + v.matched->tag() + ")";
        line += ": " + std::string(v.reason);
        if (v.matched && v.filter.status == gdpr::filter_status::invalid_json)
            line += " at byte " + std::to_string(v.filter.error_offset) + " of " + std::to_string(payload.size());
        ctx.log.warning(line);
        return decision::deny;
    }
    if (!v.matched) {
        record_publish(ctx, msg, topic, payload.size(), v);
        note_publish_holders(ctx, msg, topic, unread_text);
        if (ctx.residency) ctx.residency->note_publish(msg.payload, msg.payloadlen, topic, gdpr::residency_rules::NO_REGION);
        note_current_publish(ctx, msg.payload, topic);
        return decision::allow;
    }
    // GDPR Art. 44: bridges bypass ACL checks, so data they would carry abroad stops here.
    const std::int32_t region = resident_region(ctx, v);
    if (region != gdpr::residency_rules::NO_REGION) {
        if (const gdpr::bridge_route* bridge = bridge_refusal(ctx, topic, *v.matched, region, "publish")) {
            gdpr::publish_verdict refused = v;
            refused.action = gdpr::publish_action::deny;
            refused.reason = bridge->refusal_reason;
            record_publish(ctx, msg, topic, payload.size(), refused);
            return decision::deny;
        }
    }
    // Last of the refusals: only a publish that goes through is charged for its new subjects.
    if (const std::string_view over = charge_new_subjects(ctx, msg.client, topic, v); !over.empty()) {
        gdpr::publish_verdict refused = v;
        refused.action = gdpr::publish_action::deny;
        refused.reason = over;
        record_publish(ctx, msg, topic, payload.size(), refused);
        return decision::deny;
    }

    if (v.action == gdpr::publish_action::replace) {
        const std::string& filtered = ctx.engine->filtered();
        // The broker frees the old payload itself; the new one must come from its allocator.
        broker_ptr<void> copy(mosquitto_malloc(filtered.size() + 1));
        if (!copy) return decision::failure;
        std::memcpy(copy.get(), filtered.data(), filtered.size());
        static_cast<char*>(copy.get())[filtered.size()] = '\0';
        msg.payload = copy.release();
        msg.payloadlen = static_cast<std::uint32_t>(filtered.size());
    }
    if (!add_gdpr_user_properties(&msg.properties, *v.matched)) return decision::failure;
    record_publish(ctx, msg, topic, payload.size(), v);
    note_publish_holders(ctx, msg, topic, unread_text);
    if (ctx.residency) ctx.residency->note_publish(msg.payload, msg.payloadlen, topic, region);
    note_current_publish(ctx, msg.payload, topic);
    return decision::allow;
}

} // namespace

void note_holders(plugin_context& ctx, const mosquitto* client, std::string_view topic, bool retain, const void* payload,
                  std::uint32_t payloadlen, bool final, const gdpr::forwarded_message* seen) {
    if (!ctx.map) return;
    ctx.map->published(ctx.engine->last_subjects(), client_id_of(client), topic, retain && payloadlen > 0, payload, final,
                       seen);
    if (retain && payloadlen == 0 && final) ctx.map->retained_replaced(topic);
}

// Refused whole past the allowance: cutting the subjects out would forward their data untracked.
// Subjects bound to the client by an operator are not charged: the client did not choose them.
std::string_view charge_new_subjects(plugin_context& ctx, const mosquitto* client, std::string_view topic,
                                     const gdpr::publish_verdict& v) {
    if (!ctx.map || !ctx.subject_quota || !ctx.subject_quota->limited() || !v.matched) return {};
    if (v.matched->subject.kind == gdpr::subject_kind::binding) return {};
    const auto& subjects = ctx.engine->last_subjects();
    if (subjects.empty()) return {};
    const std::uint32_t unknown = ctx.map->unknown_among(subjects);
    if (unknown == 0) return {};
    const bool gateway = ctx.gateway_quota && is_gateway(ctx, client);
    gdpr::subject_quota& quota = gateway ? *ctx.gateway_quota : *ctx.subject_quota;
    const auto now = std::chrono::steady_clock::now();
    if (!quota.limited() || quota.take(client_id_of(client), unknown, now)) {
        if (gateway) quota.count_admitted(unknown);
        return {};
    }
    ++ctx.quota_refusals_unreported;
    ctx.quota_last_client.assign(client_id_of(client));
    ctx.quota_last_gateway = gateway;
    ctx.quota_last_topic = ctx.engine->loggable_topic(topic);
    report_quota_refusals(ctx, now);
    return gateway ? "the gateway's allowance of new data subjects is used up "
                     "(plugin_opt_gateway_new_subjects_burst, plugin_opt_gateway_new_subjects_per_minute)"
                   : "the publisher's allowance of new data subjects is used up "
                     "(plugin_opt_new_subjects_burst, plugin_opt_new_subjects_per_minute)";
}

bool audit_trail_refuses(plugin_context& ctx, std::string_view what, std::string_view topic) {
    if (!ctx.audit || ctx.audit->can_record_publish()) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now - ctx.last_refusal_log >= std::chrono::seconds(1)) {
        ctx.last_refusal_log = now;
        ctx.log.error("refused " + std::string(what) + " on '" + ctx.engine->loggable_topic(topic) +
                      "': the audit trail cannot be written and its queue is full");
    }
    return true;
}

void report_quota_refusals(plugin_context& ctx, std::chrono::steady_clock::time_point now) {
    if (ctx.quota_refusals_unreported == 0 || now - ctx.last_quota_report < std::chrono::seconds(10)) return;
    ctx.last_quota_report = now;
    const bool gateway = ctx.quota_last_gateway && ctx.gateway_quota;
    const auto& q = gateway ? *ctx.gateway_quota : *ctx.subject_quota;
    const std::string prefix = gateway ? "gateway_new_subjects_" : "new_subjects_";
    const std::string text = "refused " + std::to_string(ctx.quota_refusals_unreported) +
                             " publish(es) or will(s) bringing data subjects the broker had not seen, beyond the publisher's "
                             "allowance (" + prefix + "burst " + std::to_string(q.burst()) + ", then " + prefix +
                             "per_minute " + std::to_string(q.per_minute()) + "); the last from client '" +
                             gdpr::printable(ctx.quota_last_client) + "' on '" + ctx.quota_last_topic + "'";
    ctx.quota_refusals_unreported = 0;
    ctx.log.warning(text);
    publish_alert(ctx, "new_subjects", text);
}

int on_message(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        drain_completions(ctx);  // never fails: each completion is guarded
        residency_tick(ctx);     // held-back alerts, also where the broker fires no tick
        erasure_step_without_ticks(ctx);
        ctx.rechecking_logins = false;  // a publish is read: the SIGHUP's re-checks are over
        if (ctx.quota_refusals_unreported > 0) report_quota_refusals(ctx, std::chrono::steady_clock::now());
        if (ctx.stored_consent.unreported > 0) report_stored_consent(ctx, std::chrono::steady_clock::now());
    } catch (...) {
    }
    try {
        auto& msg = *static_cast<mosquitto_evt_message*>(event_data);
        const decision d = classify_message(ctx, msg);
        if (d == decision::failure) ctx.log.error("could not rewrite a classified publish (out of memory); refused it");
        return to_mosq_err(d, gdpr::acl_fallback::allow);
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while classifying a publish, refused it", e.what());
    } catch (...) {
        log_internal_error(ctx, "while classifying a publish, refused it", nullptr);
    }
    return to_mosq_err(decision::failure, gdpr::acl_fallback::allow);
}

} // namespace gdpr_plugin
