#pragma once
#include "broker_api.hpp"
#include "gdpr/schema.hpp"

namespace gdpr_plugin {

// Removes user properties named "gdpr-*" that a publisher sent, so subscribers can trust the ones
// the plugin adds. Leaves the list untouched (no allocation) when there are none. Returns false
// if the list could not be rebuilt (out of memory or an unknown property type).
bool strip_gdpr_user_properties(mosquitto_property** list);

// Whether the list holds a property that can carry text a subscriber reads (a user property,
// content type, response topic or correlation data): the plugin does not classify those.
bool carries_text(const mosquitto_property* list);

// Adds the properties every message classified by `s` carries: gdpr-schema (id@version) and,
// when the schema declares one, gdpr-residency. False when out of memory (the list may then hold
// the first of them).
bool add_gdpr_user_properties(mosquitto_property** list, const gdpr::schema& s);

} // namespace gdpr_plugin
