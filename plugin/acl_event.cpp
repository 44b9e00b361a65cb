// MOSQ_EVT_ACL_CHECK: subscribe, read (delivery) and write (publish and will) checks.
#include <string>

#include <openssl/crypto.h>

#include "context.hpp"
#include "gdpr/topic_filter.hpp"
#include "gdpr/topic_router.hpp"

namespace gdpr_plugin {

namespace {

bool is_will(plugin_context& ctx, const mosquitto* client) {
    auto it = ctx.ending.find(client);
    // Once the broker's loop has ended, it sends the wills of the clients still connected.
    if (it == ctx.ending.end()) return ctx.loop_ended;
    // Consumed either way: a connection has one will, and a stale mark must not outlive the check.
    const ending_connection& mark = it->second;
    // Before MQTT v5 a will goes out in the same pass of the broker's loop as its connection's end
    // (there is no will delay): a WRITE check in a later pass is a new connection the broker placed
    // in the ended one's memory, publishing.
    const bool reused = !mark.provisional && !mark.may_delay_will && mark.tick != ctx.ticks;
    const bool same_connection = !reused && mark.client_id == client_id_of(client);
    if (mark.provisional) --ctx.provisional_marks;
    ctx.ending.erase(it);
    return same_connection || ctx.loop_ended;
}

constexpr std::string_view CONTROL_PREFIX = "$CONTROL/gdpr/";

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// The control API's topics belong to the plugin, whatever acl_file says: anyone may send to
// $CONTROL/gdpr/v1 (the plugin answers non-operators with an error and records the attempt), only
// operators may subscribe to or receive anything under $CONTROL/gdpr/.
decision check_control_topic(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic) {
    // A retained publish there would be a will (the broker keeps no command): refused, so that it
    // does not sit in the retained store and the persistence file, unfiltered.
    if (acl.access == MOSQ_ACL_WRITE) return topic == gdpr::CONTROL_TOPIC && !acl.retain ? decision::allow : decision::deny;
    // Commands go to the plugin, never to subscribers: what would be delivered on the command topic
    // is a will (retained, if so flagged), which the broker does not hand to the plugin.
    if (acl.access == MOSQ_ACL_READ && topic == gdpr::CONTROL_TOPIC) return decision::deny;
    return ctx.operators.identify(requester_of(acl.client)).empty() ? decision::deny : decision::allow;
}

// A will goes out as it is or not at all; either way the audit trail records it as a publish.
decision check_will(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic) {
    if (audit_trail_refuses(ctx, "will message", topic)) return decision::deny;
    const std::string_view payload(static_cast<const char*>(acl.payload), acl.payload ? acl.payloadlen : 0);
    gdpr::publish_verdict v = ctx.engine->classify_will(topic, payload, client_id_of(acl.client));
    if (v.action == gdpr::publish_action::deny) {
        std::string line = "refused will message on '" + ctx.engine->loggable_topic(topic) + "'";
        if (v.matched) line += " (schema " + v.matched->tag() + ")";
        ctx.log.warning(line + ": " + std::string(v.reason));
    } else if (const gdpr::bridge_route* bridge = will_bridge_refusal(ctx, topic, payload)) {
        v.action = gdpr::publish_action::deny;  // GDPR Art. 44
        v.reason = bridge->refusal_reason;
    } else if (const std::string_view over = charge_new_subjects(ctx, acl.client, topic, v); !over.empty()) {
        v.action = gdpr::publish_action::deny;  // a will brings subjects into the data map like a publish
        v.reason = over;
    }
    const void* identity = v.action == gdpr::publish_action::deny ? nullptr : &ctx.will_sent;
    if (ctx.recorder)
        ctx.recorder->will(ctx.recorder->session_of(acl.client, client_id_of(acl.client)), client_id_of(acl.client), topic,
                           acl.qos, acl.retain, v, payload, identity);
    ctx.gateway_checked.erase(acl.client);  // the connection has ended: nothing will ask again
    if (v.action == gdpr::publish_action::deny) return decision::deny;
    // GDPR Art. 17(2): a retained will holding a subject's data is cleared by their erasure like
    // any retained message, and its recipients are told like those of any publish.
    note_holders(ctx, acl.client, topic, acl.retain, identity, acl.payload ? acl.payloadlen : 0,
                 ctx.options.acl == gdpr::acl_fallback::allow);
    auto& will = ctx.will_sent;
    will.topic.assign(topic);
    will.payload.assign(payload);
    will.stored = nullptr;
    will.pending = true;
    return decision::no_objection;
}

void wipe(gdpr::wiped_string& s) {
    OPENSSL_cleanse(s.data(), s.size());
    s.clear();
}

// What a delivery is matched to its publish by: the payload address the broker delivers, or the
// will just sent. Its deliveries are checked one after another right after it; the first is told
// by topic and content, the others by the address of that one's payload. Any other delivery ends it.
const void* delivery_identity(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic) {
    auto& will = ctx.will_sent;
    if (!will.pending) return acl.payload;
    if (will.stored) {
        if (acl.payload == will.stored) return &will;
    } else {
        const std::string_view payload(static_cast<const char*>(acl.payload), acl.payload ? acl.payloadlen : 0);
        if (topic == std::string_view(will.topic) && payload == std::string_view(will.payload)) {
            if (acl.payload) {  // an empty will has no address: it goes on being told by its topic
                will.stored = acl.payload;
                wipe(will.topic);
                wipe(will.payload);
            }
            return &will;
        }
    }
    forget_sent_will(ctx);
    return acl.payload;
}

decision check(plugin_context& ctx, const mosquitto_evt_acl_check& acl) {
    const std::string_view topic = acl.topic ? std::string_view(acl.topic) : std::string_view{};
    // A shared subscription is checked by the filter it names: "$share/ops/$CONTROL/gdpr/v1/alerts"
    // would put a non-operator in the operators' group, where the broker drops the group's message
    // when the member it picks may not receive it.
    std::string_view named = topic;
    if (acl.access == MOSQ_ACL_SUBSCRIBE || acl.access == MOSQ_ACL_UNSUBSCRIBE)
        if (const auto shared = gdpr::parse_shared_subscription(topic)) named = shared->filter;
    if (!named.empty() && named.front() == '$') {
        if (starts_with(named, CONTROL_PREFIX)) return check_control_topic(ctx, acl, named);
        // A subscription such as "$CONTROL/#" would reach the responses too.
        if (acl.access == MOSQ_ACL_SUBSCRIBE && gdpr::filters_overlap(named, "$CONTROL/gdpr/#"))
            return check_control_topic(ctx, acl, named);
    }
    if (ctx.erasure) {
        const decision erase = check_erase_topic(ctx, acl, named);
        if (erase != decision::no_objection) {
            if (acl.access == MOSQ_ACL_WRITE) is_will(ctx, acl.client);  // a will's mark is consumed either way
            return erase;
        }
    }
    if (acl.access == MOSQ_ACL_READ) {
        if (ctx.residency && check_delivery_residency(ctx, acl, topic) == decision::deny) return decision::deny;
        return check_stored_consent(ctx, acl, topic);
    }
    if (acl.access == MOSQ_ACL_SUBSCRIBE && ctx.residency) note_subscription_residency(ctx, acl, topic);
    if (acl.access != MOSQ_ACL_WRITE) return decision::no_objection;
    if (!is_will(ctx, acl.client)) return decision::no_objection;  // an ordinary publish: MESSAGE decides
    forget_current_payloads(ctx);  // the will's READ checks follow: they belong to no earlier publish
    return check_will(ctx, acl, topic);
}

void record(plugin_context& ctx, const mosquitto_evt_acl_check& acl, decision d, const void* identity) {
    const bool refused = d == decision::deny || d == decision::failure;
    const std::string_view topic = acl.topic ? std::string_view(acl.topic) : std::string_view{};
    switch (acl.access) {
    case MOSQ_ACL_READ:
        if (!ctx.recorder->records_delivery(refused)) return;
        // No session is started here: the broker also checks deliveries queued for offline clients.
        ctx.recorder->delivery(ctx.recorder->session_of(acl.client, client_id_of(acl.client)), client_id_of(acl.client),
                               topic, identity, acl.qos, refused,
                               !refused                     ? std::string_view{}
                               : ctx.refusal_reason.empty() ? std::string_view("not permitted to receive this topic")
                                                            : ctx.refusal_reason);
        return;
    case MOSQ_ACL_SUBSCRIBE:
    case MOSQ_ACL_UNSUBSCRIBE:
        ctx.recorder->subscription(session_for(ctx, acl.client, "subscribe"), client_id_of(acl.client),
                                   acl.access == MOSQ_ACL_UNSUBSCRIBE, topic, acl.qos,
                                   refused ? "denied" : d == decision::allow ? "allowed" : "no objection");
        return;
    default:
        return;
    }
}

} // namespace

void forget_sent_will(plugin_context& ctx) {
    auto& will = ctx.will_sent;
    if (!will.pending) return;
    will.pending = false;
    will.stored = nullptr;
    wipe(will.topic);
    wipe(will.payload);
}

int on_acl_check(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        const auto& acl = *static_cast<mosquitto_evt_acl_check*>(event_data);
        ctx.refusal_reason = {};
        ctx.stored_copy_due = nullptr;
        // Only the READ checks right after a will are its deliveries (a will's WRITE check sets it anew).
        if (acl.access != MOSQ_ACL_READ) forget_sent_will(ctx);
        const decision d = check(ctx, acl);
        const std::string_view topic = acl.topic ? std::string_view(acl.topic) : std::string_view{};
        const void* identity = acl.access == MOSQ_ACL_READ ? delivery_identity(ctx, acl, topic) : acl.payload;
        if (ctx.recorder) record(ctx, acl, d, identity);
        if (ctx.stored_copy_due) send_stored_copy(ctx, acl, identity);
        if (ctx.map && acl.access == MOSQ_ACL_READ && d != decision::deny && d != decision::failure) {
            ctx.map->delivered(client_id_of(acl.client), topic, identity,
                               std::string_view(static_cast<const char*>(acl.payload), acl.payload ? acl.payloadlen : 0));
        } else if (acl.access == MOSQ_ACL_SUBSCRIBE) {
            connection_acted(ctx, acl.client);
        }
        return to_mosq_err(d, ctx.options.acl);
    } catch (const std::exception& e) {
        log_internal_error(ctx, "in an ACL check, denied it", e.what());
    } catch (...) {
        log_internal_error(ctx, "in an ACL check, denied it", nullptr);
    }
    return to_mosq_err(decision::failure, ctx.options.acl);
}

} // namespace gdpr_plugin
