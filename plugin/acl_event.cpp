// MOSQ_EVT_ACL_CHECK: subscribe, read (delivery) and write (publish and will) checks.
#include <string>

#include "context.hpp"

namespace gdpr_plugin {

namespace {

bool is_will(plugin_context& ctx, const mosquitto* client) {
    auto it = ctx.ending.find(client);
    if (it == ctx.ending.end()) return false;
    // Consumed either way: a connection has one will, and a stale mark must not outlive the check.
    const bool same_connection = it->second.client_id == client_id_of(client);
    if (it->second.provisional) --ctx.provisional_marks;
    ctx.ending.erase(it);
    return same_connection;
}

decision check(plugin_context& ctx, const mosquitto_evt_acl_check& acl) {
    if (acl.access != MOSQ_ACL_WRITE) return decision::no_objection;
    if (!is_will(ctx, acl.client)) return decision::no_objection;  // an ordinary publish: MESSAGE decides
    const std::string_view topic = acl.topic ? std::string_view(acl.topic) : std::string_view{};
    const std::string_view payload(static_cast<const char*>(acl.payload), acl.payload ? acl.payloadlen : 0);
    if (ctx.engine->will_allowed(topic, payload)) return decision::no_objection;
    ctx.log.warning("refused will message on '" + ctx.engine->loggable_topic(topic) +
                    "': classification would remove or change fields, and a will cannot be rewritten");
    return decision::deny;
}

} // namespace

int on_acl_check(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        return to_mosq_err(check(ctx, *static_cast<mosquitto_evt_acl_check*>(event_data)), ctx.options.acl);
    } catch (const std::exception& e) {
        log_internal_error(ctx, "in an ACL check, denied it", e.what());
    } catch (...) {
        log_internal_error(ctx, "in an ACL check, denied it", nullptr);
    }
    return to_mosq_err(decision::failure, ctx.options.acl);
}

} // namespace gdpr_plugin
