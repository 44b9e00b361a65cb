#pragma once
// The only place that includes the broker's headers; order matters (SPEC 8).
extern "C" {
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
}

#include <memory>

namespace gdpr_plugin {

// Memory the broker will own or free must come from the broker's allocator; this holder returns
// it with mosquitto_free unless released to the broker.
struct broker_free {
    void operator()(void* p) const { mosquitto_free(p); }
};
template <typename T>
using broker_ptr = std::unique_ptr<T, broker_free>;

} // namespace gdpr_plugin
