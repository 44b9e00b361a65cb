#pragma once
#include "broker_api.hpp"

namespace gdpr_plugin {

// Removes user properties named "gdpr-*" that a publisher sent, so subscribers can trust the ones
// the plugin adds. Leaves the list untouched (no allocation) when there are none. Returns false
// if the list could not be rebuilt (out of memory or an unknown property type).
bool strip_gdpr_user_properties(mosquitto_property** list);

} // namespace gdpr_plugin
