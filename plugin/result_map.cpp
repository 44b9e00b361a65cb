#include "context.hpp"

#include <openssl/x509.h>

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

gdpr::requester requester_of(const mosquitto* client) {
    gdpr::requester r;
    r.client_id = std::string(client_id_of(client));
    if (const char* u = client ? mosquitto_client_username(client) : nullptr) r.username = u;
    if (auto* cert = static_cast<X509*>(client ? mosquitto_client_certificate(client) : nullptr)) {
        char cn[256] = {0};
        const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        if (n > 0) r.certificate_cn.assign(cn, static_cast<std::size_t>(n));
        X509_free(cert);  // the broker hands out a new reference
    }
    return r;
}

} // namespace gdpr_plugin
