// MOSQ_EVT_ACL_CHECK: subscribe, read (delivery) and write (publish and will) checks.
#include <string>

#include "context.hpp"

namespace gdpr_plugin {

namespace {

decision check(plugin_context& ctx, const mosquitto_evt_acl_check& acl) {
    if (acl.access != MOSQ_ACL_WRITE) return decision::no_objection;
    auto ended = ctx.ended_sessions.find(acl.client);
    if (ended == ctx.ended_sessions.end()) return decision::no_objection;  // an ordinary publish: MESSAGE decides
    ctx.ended_sessions.erase(ended);
    const std::string_view topic = acl.topic ? std::string_view(acl.topic) : std::string_view{};
    const std::string_view payload(static_cast<const char*>(acl.payload), acl.payload ? acl.payloadlen : 0);
    if (ctx.engine->will_allowed(topic, payload)) return decision::no_objection;
    ctx.log.warning("refused will message on '" + std::string(topic) +
                    "': classification would remove or change fields, and a will cannot be rewritten");
    return decision::deny;
}

} // namespace

int on_acl_check(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        return to_mosq_err(check(ctx, *static_cast<mosquitto_evt_acl_check*>(event_data)), ctx.options.acl);
    } catch (const std::exception& e) {
        ctx.log.error(std::string("internal error in an ACL check, denied it: ") + e.what());
    } catch (...) {
        ctx.log.error("internal error in an ACL check, denied it");
    }
    return to_mosq_err(decision::failure, ctx.options.acl);
}

} // namespace gdpr_plugin
