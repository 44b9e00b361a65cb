#include "context.hpp"

namespace gdpr_plugin {

int to_mosq_err(decision d, gdpr::acl_fallback fallback) {
    switch (d) {
    case decision::allow: return MOSQ_ERR_SUCCESS;
    case decision::deny: return MOSQ_ERR_ACL_DENIED;
    case decision::no_objection:
        return fallback == gdpr::acl_fallback::allow ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
    case decision::failure: break;
    }
    return MOSQ_ERR_ACL_DENIED;  // anything unexpected fails closed
}

void log_internal_error(plugin_context& ctx, const char* what_failed, const char* detail) noexcept {
    try {
        ctx.log.error(std::string("internal error ") + what_failed + (detail ? std::string(": ") + detail : ""));
    } catch (...) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "gdpr: internal error %s", what_failed);
    }
}

std::string_view client_id_of(const mosquitto* client) {
    const char* id = client ? mosquitto_client_id(client) : nullptr;
    return id ? std::string_view(id) : std::string_view{};
}

} // namespace gdpr_plugin
