// Residency (GDPR Chapter V) in the broker's events: publishes a bridge would carry abroad,
// deliveries to clients in regions that may not receive the data, wills, shared subscriptions.
#include <set>
#include <string>

#include "context.hpp"
#include "gdpr/topic_filter.hpp"

namespace gdpr_plugin {

namespace {

constexpr auto ALERT_INTERVAL = std::chrono::seconds(10);

void send_bridge_report(plugin_context& ctx, plugin_context::alert_limiter& limiter, const std::string& line,
                        std::chrono::steady_clock::time_point now) {
    const std::string text =
        limiter.pending > 0 ? line + " (" + std::to_string(limiter.pending) + " more refused since the last report)" : line;
    ctx.bridge_alerts_pending -= limiter.pending;
    limiter.pending = 0;
    limiter.last = now;
    ctx.log.warning(text);
    publish_alert(ctx, "residency", text);
}

// A bridge refusal is logged and alerted at once, then at most every ALERT_INTERVAL per bridge
// with the number refused meanwhile: a misrouted fleet must not flood the log or the operators.
void report_bridge_refusal(plugin_context& ctx, const gdpr::bridge_route& bridge, std::string_view topic,
                           const gdpr::schema& s, std::string_view what) {
    auto& limiter = ctx.bridge_alerts[bridge.name];
    const auto now = std::chrono::steady_clock::now();
    limiter.line = "refused " + std::string(what) + " on '" + ctx.engine->loggable_topic(topic) + "' (schema " +
                   s.tag() + "): " + bridge.refusal_reason;
    if (limiter.last != std::chrono::steady_clock::time_point{} && now - limiter.last < ALERT_INTERVAL) {
        ++limiter.pending;
        ++ctx.bridge_alerts_pending;
        return;
    }
    send_bridge_report(ctx, limiter, limiter.line, now);
}

} // namespace

void open_residency(plugin_context& ctx) {
    if (ctx.options.residency_file.empty()) {
        ctx.log.notice("residency is tagged (gdpr-residency) but not enforced: set plugin_opt_residency_file to "
                       "refuse transfers to regions that may not receive the data");
        return;
    }
    auto rules = gdpr::residency_rules::load(ctx.options.residency_file, ctx.engine->schemas());
    for (const auto& line : rules.lint(ctx.engine->schemas())) ctx.log.warning("residency: " + line);
    std::string bridges;
    for (const auto& b : rules.bridges())
        bridges += (bridges.empty() ? "" : ", ") + b.name + " -> " + rules.region_name(b.region);
    ctx.log.notice("residency from " + ctx.options.residency_file + ": " + std::to_string(rules.region_count()) +
                   " regions, unplaced clients " +
                   (rules.default_region() == gdpr::residency_rules::NO_REGION
                        ? std::string("in no region (they receive no resident personal data)")
                        : "in " + rules.region_name(rules.default_region())) +
                   ", " +
                   std::to_string(rules.bridges().size()) + " bridges" + (bridges.empty() ? "" : " (" + bridges + ")"));
    ctx.residency = std::make_unique<gdpr::residency_guard>(std::move(rules));
    ctx.control->attach_residency(ctx.residency.get());
}

std::int32_t resident_region(plugin_context& ctx, const gdpr::publish_verdict& v) {
    if (!ctx.residency || !v.matched) return gdpr::residency_rules::NO_REGION;
    if (v.filter.personal_forwarded == 0 && !gdpr::topic_names_subject(*v.matched)) return gdpr::residency_rules::NO_REGION;
    return ctx.residency->rules().residency_of(*v.matched);
}

const gdpr::bridge_route* bridge_refusal(plugin_context& ctx, std::string_view topic, const gdpr::schema& s,
                                         std::int32_t region, std::string_view what) {
    const gdpr::bridge_route* bridge = ctx.residency->rules().blocking_bridge(topic, s);
    if (!bridge) return nullptr;
    ctx.residency->refuse_bridged(region, *bridge);
    report_bridge_refusal(ctx, *bridge, topic, s, what);
    return bridge;
}

std::int32_t client_region(plugin_context& ctx, const mosquitto* client) {
    const char* username = client ? mosquitto_client_username(client) : nullptr;
    const char* address = client ? mosquitto_client_address(client) : nullptr;
    gdpr::requester who;
    return ctx.residency->region_of(client, client_id_of(client), username ? username : "", address ? address : "", [&] {
        who = requester_of(client);
        return gdpr::client_identity{who.client_id, who.username, address ? address : "", who.certificate_cn};
    });
}

namespace {
std::string receiver_name(const gdpr::residency_rules& rules, std::int32_t receiver) {
    return receiver == gdpr::residency_rules::NO_REGION ? std::string("(none)") : rules.region_name(receiver);
}

std::string export_refusal(plugin_context& ctx, std::int32_t receiver) {
    const auto& rules = ctx.residency->rules();
    // An export may hold the records of any schema: every region data is resident in must be one
    // the operator's connection may receive (GDPR Art. 44).
    for (const auto& s : ctx.engine->schemas().schemas) {
        if (!gdpr::may_hold_personal_data(s)) continue;
        const std::int32_t region = rules.residency_of(s);
        if (region == gdpr::residency_rules::NO_REGION || rules.may_receive(region, receiver)) continue;
        return "exportSubject is refused to this connection: an export may hold personal data resident in " +
               rules.region_name(region) + " (schema " + s.tag() + "), which may not go to region " +
               receiver_name(rules, receiver) + ", where this connection is placed (GDPR Art. 44)";
    }
    return {};
}

// What an export holds, checked once it is read, against the rules in use then (a reload may
// have changed them meanwhile, so the receiver is named, not numbered). A record that states its
// residency is checked by it; one that does not say (written before records stated it) by its
// schema, if still in use. Records of a schema no longer in use may hold data resident anywhere:
// they go only to a region that may receive every region's data (GDPR Art. 44).
std::string export_holding_refusal(plugin_context& ctx, const std::string& receiver_region,
                                   const gdpr::control_api::export_holdings& holdings) {
    if (!ctx.residency) return {};
    const auto& rules = ctx.residency->rules();
    const std::int32_t receiver =
        receiver_region.empty() ? gdpr::residency_rules::NO_REGION : rules.region_index(receiver_region);
    const std::string placed = ", which may not go to region " + (receiver_region.empty() ? std::string("(none)") : receiver_region) +
                               ", where this connection is placed (GDPR Art. 44)";
    for (const auto& [tag, stated] : holdings) {
        std::int32_t region = gdpr::residency_rules::NO_REGION;
        if (stated) {
            if (stated->empty()) continue;  // resident nowhere in particular
            region = rules.region_index(*stated);
            if (region == gdpr::residency_rules::NO_REGION)
                return "exportSubject is refused to this connection: the export holds personal data resident in " + *stated +
                       " (schema " + tag + "), a region the residency rules no longer declare" + placed;
        } else {
            const gdpr::schema* in_use = nullptr;
            for (const auto& s : ctx.engine->schemas().schemas)
                if (s.tag() == tag) in_use = &s;
            if (!in_use) {
                bool receives_all = receiver != gdpr::residency_rules::NO_REGION;
                for (std::size_t r = 0; receives_all && r < rules.region_count(); ++r)
                    receives_all = rules.may_receive(static_cast<std::int32_t>(r), receiver);
                if (receives_all) continue;
                return "exportSubject is refused to this connection: the export holds records of schema " + tag +
                       ", no longer in use, which do not say where their data is resident" + placed +
                       " and may not receive every region's data";
            }
            region = rules.residency_of(*in_use);
        }
        if (rules.may_receive(region, receiver)) continue;
        return "exportSubject is refused to this connection: the export holds personal data resident in " +
               rules.region_name(region) + " (schema " + tag + ")" + placed;
    }
    return {};
}
} // namespace

gdpr::control_api::export_gate export_gate(plugin_context& ctx, const mosquitto* client) {
    if (!ctx.residency) return {};
    const std::int32_t receiver = client_region(ctx, client);
    const std::string receiver_region =
        receiver == gdpr::residency_rules::NO_REGION ? std::string() : ctx.residency->rules().region_name(receiver);
    // The gate outlives the connection: it holds the region's name, never the client.
    return {export_refusal(ctx, receiver), [&ctx, receiver_region](const gdpr::control_api::export_holdings& holdings) {
                return export_holding_refusal(ctx, receiver_region, holdings);
            }};
}

decision check_delivery_residency(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic) {
    std::int32_t region = gdpr::residency_rules::NO_REGION;
    const std::size_t size = acl.payload ? acl.payloadlen : 0;
    if (!ctx.residency->is_known_payload(acl.payload, size, topic, region)) {
        // Not the publish in hand: a retained message, a queued one, or a will. Its payload is what
        // classification forwarded, so what it still holds decides.
        const std::string_view payload(static_cast<const char*>(acl.payload), size);
        const gdpr::schema* s = ctx.engine->personal_data_in(topic, payload);
        region = s ? ctx.residency->rules().residency_of(*s) : gdpr::residency_rules::NO_REGION;
        ctx.residency->note_reclassified(acl.payload, size, topic, region);
    }
    if (region == gdpr::residency_rules::NO_REGION) return decision::no_objection;
    const std::int32_t receiver = client_region(ctx, acl.client);
    if (ctx.residency->rules().may_receive(region, receiver)) {
        if (receiver != region) ctx.residency->note_transfer(region, receiver);
        return decision::no_objection;
    }
    // GDPR Art. 44: no transfer to a region the rules do not allow for this data.
    ctx.refusal_reason = ctx.residency->refuse_delivery(region, receiver);
    return decision::deny;
}

const gdpr::bridge_route* will_bridge_refusal(plugin_context& ctx, std::string_view topic, std::string_view payload) {
    if (!ctx.residency) return nullptr;
    const gdpr::schema* s = ctx.engine->personal_data_in(topic, payload);
    if (!s) return nullptr;
    const auto region = ctx.residency->rules().residency_of(*s);
    return bridge_refusal(ctx, topic, *s, region, "will message");
}

void residency_tick(plugin_context& ctx) {
    if (ctx.bridge_alerts_pending == 0) return;
    const auto now = std::chrono::steady_clock::now();
    for (auto& [bridge, limiter] : ctx.bridge_alerts) {
        if (limiter.pending > 0 && now - limiter.last >= ALERT_INTERVAL) {
            // The count covers the refusals since the last report; the line names the latest.
            --limiter.pending;
            --ctx.bridge_alerts_pending;
            send_bridge_report(ctx, limiter, limiter.line, now);
        }
    }
}

void forget_current_payloads(plugin_context& ctx) {
    forget_stored_checks(ctx);
    forget_sent_will(ctx);
    if (ctx.residency) ctx.residency->forget_payloads();
    if (ctx.recorder) ctx.recorder->forget_last_publish();
    if (ctx.map) ctx.map->forget_last_publish();
}

void note_subscription_residency(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view filter) {
    if (!gdpr::parse_shared_subscription(filter)) return;
    const std::string warning =
        ctx.residency->note_shared_subscription(filter, client_region(ctx, acl.client), ctx.engine->loggable_topic(filter));
    if (!warning.empty()) ctx.log.warning("residency: " + warning);
}

} // namespace gdpr_plugin
