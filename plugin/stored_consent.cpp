// GDPR Art. 7(3) and 5(1)(c) for what the broker keeps: a retained message, or one queued for an
// offline client, was filtered with the consent given and the schemas in use when it was
// published. A delivery of such a message (a READ check that is not the publish in hand) is
// checked against today's consent, and, after a schema reload, against today's rules; when they
// would not let all of it out, the stored copy is withheld, and where the plugin alone decides who
// may read (acl_default allow) the client gets it as today's consent and rules filter it.
#include <string>

#include "context.hpp"
#include "properties.hpp"

namespace gdpr_plugin {

namespace {

constexpr auto REPORT_INTERVAL = std::chrono::seconds(10);
constexpr std::string_view WITHDRAWN_RESENT =
    "consent withdrawn since the message was stored (GDPR Art. 7(3)); sent again without the fields it covered";
constexpr std::string_view WITHDRAWN_WITHHELD =
    "consent withdrawn since the message was stored (GDPR Art. 7(3)); withheld";
constexpr std::string_view UNREADABLE = "a stored message is not the JSON the schema of its topic describes";
constexpr std::string_view RECLASSIFIED_RESENT =
    "filtered under a schema a reload has replaced since the message was stored; sent again as the schema in use "
    "filters it";
constexpr std::string_view RECLASSIFIED_WITHHELD =
    "filtered under a schema a reload has replaced since the message was stored; withheld";
constexpr std::string_view UNMATCHED =
    "a reload left the topic of this stored message to no schema, and unmatched topics are refused; withheld";

std::uint64_t consent_generation(const plugin_context& ctx) { return ctx.consent->generation(); }

// The last stored message checked, so that a retained message or a QoS 2 release going to many
// clients is read once: until a consent change, the next publish, a tick or a reload.
const gdpr::stored_check& recheck(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic) {
    auto& last = ctx.last_recheck;
    const std::uint32_t size = acl.payload ? acl.payloadlen : 0;
    if (last.payload && last.payload == acl.payload && last.size == size && last.generation == consent_generation(ctx) &&
        topic == last.topic)
        return last.result;
    const std::string_view payload(static_cast<const char*>(acl.payload), size);
    last.payload = nullptr;  // until the check below has completed
    last.result = ctx.engine->recheck_stored(topic, payload);
    last.topic.assign(topic);
    last.size = size;
    last.generation = consent_generation(ctx);
    last.payload = acl.payload;
    return last.result;
}

void note_stored_refusal(plugin_context& ctx, std::string_view topic, const gdpr::stored_check& c, bool resent) {
    ctx.engine->count_stored_refusal(c.outcome);
    auto& r = ctx.stored_consent;
    ++r.unreported;
    if (resent) ++r.resent_unreported;
    r.last_topic.assign(topic);  // made loggable when reported: a queue flush may refuse many
    r.last_schema = c.matched ? c.matched->tag() : std::string("none");
    report_stored_consent(ctx, std::chrono::steady_clock::now());
}

} // namespace

void index_stored_pseudonyms(plugin_context& ctx) {
    ctx.pseudonym_index_due = false;
    if (!ctx.consent || ctx.consent->indexes_pseudonyms() || !ctx.engine->pseudonymises_consent_subject()) return;
    ctx.pseudonym_index_due = true;  // until it is built: the tick tries again
    const auto started = std::chrono::steady_clock::now();
    ctx.consent->index_pseudonyms([engine = ctx.engine.get()](std::string_view subject) { return engine->pseudonym_of(subject); });
    ctx.pseudonym_index_due = false;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    ctx.log.notice("stored messages are checked against withdrawn consent by the subject's pseudonym: indexed " +
                   std::to_string(ctx.consent->subjects_with_consent()) + " subjects with consent in " +
                   std::to_string(ms.count()) + " ms");
}

void note_current_publish(plugin_context& ctx, const void* payload, std::string_view topic) {
    if (!ctx.consent) return;
    ctx.current_payload = payload;
    ctx.current_topic.assign(topic);
    ctx.current_generation = consent_generation(ctx);
}

void forget_stored_checks(plugin_context& ctx) {
    ctx.current_payload = nullptr;
    ctx.last_recheck.payload = nullptr;
}

decision check_stored_consent(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic) {
    if (!(ctx.consent && ctx.engine->has_consent_fields()) && !ctx.engine->schemas_replaced()) return decision::no_objection;
    // The publish in hand was filtered a moment ago with the consent still in force.
    if (acl.payload && acl.payload == ctx.current_payload && ctx.current_generation == consent_generation(ctx) &&
        topic == ctx.current_topic)
        return decision::no_objection;
    const gdpr::stored_check& c = recheck(ctx, acl, topic);
    switch (c.outcome) {
    case gdpr::stored_consent::not_checked:
    case gdpr::stored_consent::still_given: return decision::no_objection;
    case gdpr::stored_consent::unreadable:
        // Fail closed: nothing says its consent-based fields are still covered.
        ctx.refusal_reason = UNREADABLE;
        note_stored_refusal(ctx, topic, c, false);
        return decision::deny;
    case gdpr::stored_consent::unmatched:
        ctx.refusal_reason = UNMATCHED;
        note_stored_refusal(ctx, topic, c, false);
        return decision::deny;
    case gdpr::stored_consent::withdrawn:
    case gdpr::stored_consent::reclassified: {
        // The copy goes to the client by its id, which the broker delivers without READ checks:
        // only where no acl_file or other plugin has a say (acl_default allow) is that the same
        // decision this check would have made.
        const bool resend = ctx.options.acl == gdpr::acl_fallback::allow && !client_id_of(acl.client).empty();
        const bool withdrawn = c.outcome == gdpr::stored_consent::withdrawn;
        ctx.refusal_reason = withdrawn ? (resend ? WITHDRAWN_RESENT : WITHDRAWN_WITHHELD)
                                       : (resend ? RECLASSIFIED_RESENT : RECLASSIFIED_WITHHELD);
        ctx.stored_copy_due = resend ? c.matched : nullptr;
        note_stored_refusal(ctx, topic, c, resend);
        return decision::deny;
    }
    }
    return decision::no_objection;
}

void send_stored_copy(plugin_context& ctx, const mosquitto_evt_acl_check& acl, const void* identity) {
    const gdpr::schema* s = ctx.stored_copy_due;
    ctx.stored_copy_due = nullptr;
    if (!s) return;
    const std::string client_id(client_id_of(acl.client));
    const std::string topic(acl.topic ? acl.topic : "");
    const std::string& copy = ctx.engine->rechecked();
    // The check names the stored message's QoS, not the subscription's: QoS 0 never exceeds what
    // the client was granted.
    const int qos = 0;
    mosquitto_property* properties = nullptr;
    if (!add_gdpr_user_properties(&properties, *s) ||
        mosquitto_broker_publish_copy(client_id.c_str(), topic.c_str(), static_cast<int>(copy.size()), copy.data(), qos,
                                      false, properties) != MOSQ_ERR_SUCCESS) {
        mosquitto_property_free_all(&properties);
        ctx.log.error("could not send a stored message on '" + ctx.engine->loggable_topic(topic) +
                      "' again as the consent and schemas in use filter it; it was withheld");
        return;
    }
    // The same holders as the message withheld; the copy is what they get (the rules in use may show
    // the id where the stored message did not).
    if (ctx.map) ctx.map->delivered(client_id, topic, identity, copy);
    if (ctx.recorder && ctx.recorder->records_delivery(false))
        ctx.recorder->delivery(ctx.recorder->session_of(acl.client, client_id), client_id, topic, identity, qos, false, {});
}

void report_stored_consent(plugin_context& ctx, std::chrono::steady_clock::time_point now) {
    auto& r = ctx.stored_consent;
    if (r.unreported == 0 || (r.last_report != std::chrono::steady_clock::time_point{} && now - r.last_report < REPORT_INTERVAL))
        return;
    ctx.log.notice("withheld " + std::to_string(r.unreported) +
                   " delivery(ies) of stored messages whose data subject has withdrawn consent since they were stored, "
                   "that a schema reload has given other rules since, or that could not be read; " +
                   std::to_string(r.resent_unreported) +
                   " sent again as the consent and schemas in use filter them; the last on '" +
                   ctx.engine->loggable_topic(r.last_topic) +
                   "' (schema " +
                   r.last_schema + ")");
    r.unreported = r.resent_unreported = 0;
    r.last_report = now;
}

} // namespace gdpr_plugin
