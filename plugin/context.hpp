#pragma once
#include <memory>
#include <unordered_set>

#include "broker_api.hpp"
#include "gdpr/classifier.hpp"
#include "gdpr/log.hpp"
#include "gdpr/plugin_options.hpp"

namespace gdpr_plugin {

// Everything the plugin owns, passed to every callback as userdata. No other globals.
struct plugin_context {
    mosquitto_plugin_id_t* id = nullptr;
    gdpr::logger log;
    gdpr::plugin_options options;
    std::unique_ptr<gdpr::classifier> engine;
    // Clients whose connection has ended: a WRITE check for them is their will (wills never
    // reach MOSQ_EVT_MESSAGE). Cleared when the same client object authenticates again.
    std::unordered_set<const mosquitto*> ended_sessions;
};

// The outcome of a plugin decision, mapped to MOSQ_ERR_* in exactly one place (result_map.cpp).
enum class decision { allow, deny, no_objection, failure };
int to_mosq_err(decision d, gdpr::acl_fallback fallback);

// Callbacks, one family per file.
int on_message(int event, void* event_data, void* userdata);
int on_acl_check(int event, void* event_data, void* userdata);
int on_basic_auth(int event, void* event_data, void* userdata);
int on_disconnect(int event, void* event_data, void* userdata);

} // namespace gdpr_plugin
