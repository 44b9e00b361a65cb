// MOSQ_EVT_BASIC_AUTH and MOSQ_EVT_DISCONNECT: session boundaries. The plugin never grants or
// refuses a login (that is the broker's authentication), it only observes.
#include "context.hpp"

namespace gdpr_plugin {

int on_basic_auth(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        const auto& auth = *static_cast<mosquitto_evt_basic_auth*>(event_data);
        ctx.ended_sessions.erase(auth.client);
    } catch (...) {
    }
    return MOSQ_ERR_PLUGIN_DEFER;
}

int on_disconnect(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        const auto& ev = *static_cast<mosquitto_evt_disconnect*>(event_data);
        if (ev.client) ctx.ended_sessions.insert(ev.client);
    } catch (...) {
        ctx.log.error("internal error while recording a disconnect");
    }
    return MOSQ_ERR_SUCCESS;
}

} // namespace gdpr_plugin
