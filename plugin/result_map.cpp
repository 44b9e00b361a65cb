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

} // namespace gdpr_plugin
