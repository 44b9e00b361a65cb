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
        // Exactly one CN, taken whole: a truncated or second CN must not match an operator name.
        const X509_NAME* name = X509_get_subject_name(cert);
        const int first = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
        if (first >= 0 && X509_NAME_get_index_by_NID(name, NID_commonName, first) < 0) {
            const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, first));
            const int len = ASN1_STRING_length(value);
            const auto* data = ASN1_STRING_get0_data(value);
            if (data && len > 0 && len <= 256) {
                std::string cn(reinterpret_cast<const char*>(data), static_cast<std::size_t>(len));
                if (cn.find('\0') == std::string::npos) r.certificate_cn = std::move(cn);
            }
        }
        X509_free(cert);  // the broker hands out a new reference
    }
    return r;
}

void warn_weak_names(plugin_context& ctx, const gdpr::named_clients& named, std::string_view who,
                     std::string_view what, std::string_view cn_option) {
    if (named.usernames.empty() && named.client_ids.empty()) return;
    ctx.log.warning(std::string(who) + " are named by " + (named.client_ids.empty() ? "username" : "client id") + ": " +
                    std::string(what) + " is only as strong as the broker's authentication of those names (prefer " +
                    std::string(cn_option) + " with TLS client certificates and require_certificate)");
}

bool is_gateway(plugin_context& ctx, const mosquitto* client) {
    if (ctx.gateways.empty()) return false;
    const std::string_view id = client_id_of(client);
    const char* user = client ? mosquitto_client_username(client) : nullptr;
    const std::string_view username = user ? user : "";
    auto it = ctx.gateway_checked.find(client);
    // Forgotten at login and disconnect (certificate included); the names guard besides against a
    // later connection in this one's memory where logins are not observed (track_logins false).
    if (it != ctx.gateway_checked.end() && it->second.client_id == id && it->second.username == username)
        return it->second.gateway;
    auto& mark = ctx.gateway_checked[client];
    mark.client_id.assign(id);
    mark.username.assign(username);
    mark.gateway = !ctx.gateways.identify(requester_of(client)).empty();
    return mark.gateway;
}

} // namespace gdpr_plugin
