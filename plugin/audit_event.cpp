// Glue between broker events and the audit trail: connection facts for session records, and
// problems reported by the writer turned into log lines and alerts.
#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "context.hpp"

namespace gdpr_plugin {

std::int64_t session_for(plugin_context& ctx, const mosquitto* client, std::string_view observed_at) {
    if (!ctx.recorder || !client) return 0;
    const std::string_view id = client_id_of(client);
    if (const std::int64_t s = ctx.recorder->session_of(client, id)) return s;
    gdpr::connection_info info;
    info.client_id = std::string(id);
    if (const char* u = mosquitto_client_username(client)) info.username = u;
    if (const char* a = mosquitto_client_address(client)) info.address = a;
    info.protocol_version = mosquitto_client_protocol_version(client);
    info.transport = mosquitto_client_protocol(client) == mp_websockets ? "websockets" : "mqtt";
    return ctx.recorder->start_session(client, info, observed_at);
}

void publish_alert(plugin_context& ctx, std::string_view kind, std::string_view text) {
    const std::string payload = nlohmann::json{{"alert", kind},
                                               {"at", gdpr::format_utc_ms(gdpr::consent_store::now_ms())},
                                               {"detail", text}}
                                    .dump();
    if (mosquitto_broker_publish_copy(nullptr, ctx.options.alert_topic.c_str(), static_cast<int>(payload.size()),
                                      payload.data(), 1, false, nullptr) != MOSQ_ERR_SUCCESS)
        ctx.log.error("could not publish an alert on " + ctx.options.alert_topic);
}

void report_audit_problems(plugin_context& ctx) {
    if (!ctx.audit) return;
    for (const auto& p : ctx.audit->take_problems()) {
        ctx.log.error("audit trail: " + p);
        publish_alert(ctx, "audit_trail", p);
    }
}

} // namespace gdpr_plugin
