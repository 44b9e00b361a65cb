#include "properties.hpp"

#include <cstring>

#include <strings.h>

namespace gdpr_plugin {

namespace {

constexpr char RESERVED_PREFIX[] = "gdpr-";

bool is_reserved_user_property(const mosquitto_property* p) {
    char* name = nullptr;
    char* value = nullptr;
    if (mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, false) == nullptr) return false;
    // In any case: "GDPR-Residency" would read as the plugin's to a reader that ignores case.
    const bool reserved = name && strncasecmp(name, RESERVED_PREFIX, sizeof RESERVED_PREFIX - 1) == 0;
    mosquitto_free(name);
    mosquitto_free(value);
    return reserved;
}

// Appends a copy of `p` to `out`, by the property's wire type (MQTT 5 §2.2.2.2).
bool copy_property(const mosquitto_property* p, mosquitto_property** out) {
    const int id = mosquitto_property_identifier(p);
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR:
    case MQTT_PROP_REQUEST_PROBLEM_INFORMATION:
    case MQTT_PROP_REQUEST_RESPONSE_INFORMATION:
    case MQTT_PROP_MAXIMUM_QOS:
    case MQTT_PROP_RETAIN_AVAILABLE:
    case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
    case MQTT_PROP_SUBSCRIPTION_ID_AVAILABLE:
    case MQTT_PROP_SHARED_SUB_AVAILABLE: {
        uint8_t v = 0;
        return mosquitto_property_read_byte(p, id, &v, false) && mosquitto_property_add_byte(out, id, v) == MOSQ_ERR_SUCCESS;
    }
    case MQTT_PROP_SERVER_KEEP_ALIVE:
    case MQTT_PROP_RECEIVE_MAXIMUM:
    case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
    case MQTT_PROP_TOPIC_ALIAS: {
        uint16_t v = 0;
        return mosquitto_property_read_int16(p, id, &v, false) && mosquitto_property_add_int16(out, id, v) == MOSQ_ERR_SUCCESS;
    }
    case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
    case MQTT_PROP_SESSION_EXPIRY_INTERVAL:
    case MQTT_PROP_WILL_DELAY_INTERVAL:
    case MQTT_PROP_MAXIMUM_PACKET_SIZE: {
        uint32_t v = 0;
        return mosquitto_property_read_int32(p, id, &v, false) && mosquitto_property_add_int32(out, id, v) == MOSQ_ERR_SUCCESS;
    }
    case MQTT_PROP_SUBSCRIPTION_IDENTIFIER: {
        uint32_t v = 0;
        return mosquitto_property_read_varint(p, id, &v, false) && mosquitto_property_add_varint(out, id, v) == MOSQ_ERR_SUCCESS;
    }
    case MQTT_PROP_CONTENT_TYPE:
    case MQTT_PROP_RESPONSE_TOPIC:
    case MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER:
    case MQTT_PROP_AUTHENTICATION_METHOD:
    case MQTT_PROP_RESPONSE_INFORMATION:
    case MQTT_PROP_SERVER_REFERENCE:
    case MQTT_PROP_REASON_STRING: {
        char* v = nullptr;
        if (!mosquitto_property_read_string(p, id, &v, false)) return false;
        const bool ok = mosquitto_property_add_string(out, id, v) == MOSQ_ERR_SUCCESS;
        mosquitto_free(v);
        return ok;
    }
    case MQTT_PROP_CORRELATION_DATA:
    case MQTT_PROP_AUTHENTICATION_DATA: {
        void* v = nullptr;
        uint16_t len = 0;
        if (!mosquitto_property_read_binary(p, id, &v, &len, false)) return false;
        const bool ok = mosquitto_property_add_binary(out, id, v, len) == MOSQ_ERR_SUCCESS;
        mosquitto_free(v);
        return ok;
    }
    case MQTT_PROP_USER_PROPERTY: {
        char* name = nullptr;
        char* value = nullptr;
        if (!mosquitto_property_read_string_pair(p, id, &name, &value, false)) return false;
        const bool ok = mosquitto_property_add_string_pair(out, id, name, value) == MOSQ_ERR_SUCCESS;
        mosquitto_free(name);
        mosquitto_free(value);
        return ok;
    }
    default:
        return false;
    }
}

} // namespace

bool strip_gdpr_user_properties(mosquitto_property** list) {
    bool any = false;
    for (const mosquitto_property* p = *list; p && !any; p = mosquitto_property_next(p)) {
        any = mosquitto_property_identifier(p) == MQTT_PROP_USER_PROPERTY && is_reserved_user_property(p);
    }
    if (!any) return true;
    mosquitto_property* rebuilt = nullptr;
    for (const mosquitto_property* p = *list; p; p = mosquitto_property_next(p)) {
        if (mosquitto_property_identifier(p) == MQTT_PROP_USER_PROPERTY && is_reserved_user_property(p)) continue;
        if (!copy_property(p, &rebuilt)) {
            mosquitto_property_free_all(&rebuilt);
            return false;
        }
    }
    // The broker takes whatever list the event holds afterwards; the old one is ours to free.
    mosquitto_property_free_all(list);
    *list = rebuilt;
    return true;
}

bool carries_text(const mosquitto_property* list) {
    for (const mosquitto_property* p = list; p; p = mosquitto_property_next(p)) {
        switch (mosquitto_property_identifier(p)) {
        case MQTT_PROP_USER_PROPERTY:
        case MQTT_PROP_CONTENT_TYPE:
        case MQTT_PROP_RESPONSE_TOPIC:
        case MQTT_PROP_CORRELATION_DATA: return true;
        default: break;
        }
    }
    return false;
}

bool add_gdpr_user_properties(mosquitto_property** list, const gdpr::schema& s) {
    if (mosquitto_property_add_string_pair(list, MQTT_PROP_USER_PROPERTY, "gdpr-schema", s.tag().c_str()) != MOSQ_ERR_SUCCESS)
        return false;
    return s.residency.empty() || mosquitto_property_add_string_pair(list, MQTT_PROP_USER_PROPERTY, "gdpr-residency",
                                                                     s.residency.c_str()) == MOSQ_ERR_SUCCESS;
}

} // namespace gdpr_plugin
