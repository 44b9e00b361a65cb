// device-sim: a simulated fleet for mosquitto-gdpr. Each device is one MQTT v5 connection that
// publishes vehicle telemetry about its driver (a data subject), keeps a local store of what it
// published, and honours erase commands from the plugin: it deletes the subject's records from
// its store and acknowledges on <erase topic>/ack with "erased" or "not_found". One thread drives
// every connection (libmosquitto, non-blocking, poll), so one process holds thousands of devices
// (libmosquitto uses three file descriptors per connection: start several processes with
// --first for more devices than the open-file limit allows).
//
//   device-sim --port P [--host H] [--devices N] [--first I] [--prefix van-] [--fleet F] [--messages K]
//              [--interval-ms MS] [--erase-topic gdpr/erase/%c] [--duration-s S]
//              [--never-ack ID,..] [--fail ID,..] [--slow ID,.. --slow-ms MS]
//              [--offline ID,.. --offline-ms MS] [--subscriber ID] [--shared-subject S] [--quiet]
//
// Device i (from --first, default 0) has client id <prefix><i> and driver "driver-<i>" (or S for every device with
// --shared-subject: one driver who drove the whole fleet; a comma-separated list gives each
// device's publishes those drivers in turn). --never-ack devices receive and
// ignore commands; --fail devices answer "failed"; --slow devices answer after --slow-ms;
// --offline devices disconnect after publishing and come back after --offline-ms. --subscriber
// adds a downstream client that subscribes to the fleet's telemetry, keeps what it receives and
// honours erase commands the same way. Prints one line per event ("published", "erase",
// "offline", "online") and a JSON summary at exit; runs until --duration-s or SIGINT/SIGTERM.
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

std::atomic<bool> stopping{false};

struct options {
    std::string host = "127.0.0.1";
    int port = 0;
    int devices = 10;
    int first = 0;  // number of the first device
    std::string prefix = "van-";
    std::string fleet = "f1";
    int messages = 3;
    int interval_ms = 200;
    std::string erase_topic = "gdpr/erase/%c";
    double duration_s = 0;  // 0: until a signal
    std::set<std::string> never_ack, fail, slow, offline;
    int slow_ms = 2000;
    int offline_ms = 3000;
    std::string subscriber;
    std::string shared_subject;
    bool quiet = false;
};

using clock_type = std::chrono::steady_clock;

struct device {
    std::string id;
    std::string driver;  // empty for the downstream subscriber
    std::vector<std::string> drivers;  // with --shared-subject: whose data each publish carries, in turn
    mosquitto* m = nullptr;
    bool connected = false;
    int published = 0;
    clock_type::time_point next_publish{};
    clock_type::time_point reconnect_at{};  // offline until then
    bool went_offline = false;
    int in_flight = 0;  // QoS 1 publishes not yet acknowledged by the broker
    std::map<std::string, int> store;  // subject -> records held
    std::vector<std::pair<clock_type::time_point, std::string>> pending_acks;  // slow devices
};

struct fleet {
    options o;
    std::vector<device> devices;
    int erase_commands = 0, acks_sent = 0;
    bool subscribed = false;  // the downstream subscriber's subscription is in place
};

fleet* the_fleet = nullptr;

std::string topic_for(const std::string& pattern, const std::string& client_id) {
    std::string t = pattern;
    const auto at = t.find("%c");
    if (at != std::string::npos) t.replace(at, 2, client_id);
    return t;
}

std::set<std::string> split(const char* list) {
    std::set<std::string> out;
    std::string item;
    for (const char* p = list;; ++p) {
        if (*p == ',' || *p == '\0') {
            if (!item.empty()) out.insert(item);
            item.clear();
            if (*p == '\0') break;
        } else {
            item.push_back(*p);
        }
    }
    return out;
}

// The string value of "key" in a flat JSON object (enough for the plugin's erase command).
std::string json_string(const std::string& doc, const std::string& key) {
    const std::string needle = "\"" + key + "\"";
    auto at = doc.find(needle);
    if (at == std::string::npos) return {};
    at = doc.find(':', at + needle.size());
    if (at == std::string::npos) return {};
    at = doc.find('"', at);
    if (at == std::string::npos) return {};
    std::string out;
    for (std::size_t i = at + 1; i < doc.size() && doc[i] != '"'; ++i) {
        if (doc[i] == '\\' && i + 1 < doc.size()) ++i;
        out.push_back(doc[i]);
    }
    return out;
}

void say(const fleet& f, const std::string& line) {
    if (!f.o.quiet) std::printf("%s\n", line.c_str());
    std::fflush(stdout);
}

void send_ack(fleet& f, device& d, const std::string& request_id, const std::string& status) {
    const std::string topic = topic_for(f.o.erase_topic, d.id) + "/ack";
    const std::string payload = "{\"requestId\":\"" + request_id + "\",\"status\":\"" + status + "\"}";
    mosquitto_publish_v5(d.m, nullptr, topic.c_str(), static_cast<int>(payload.size()), payload.data(), 1, false, nullptr);
    ++f.acks_sent;
    say(f, "ack " + d.id + " " + request_id + " " + status);
}

void on_message(mosquitto*, void* user, const mosquitto_message* msg, const mosquitto_property*) {
    auto& d = *static_cast<device*>(user);
    fleet& f = *the_fleet;
    const std::string topic = msg->topic ? msg->topic : "";
    const std::string payload(static_cast<const char*>(msg->payload), static_cast<std::size_t>(msg->payloadlen));
    if (topic == topic_for(f.o.erase_topic, d.id)) {
        ++f.erase_commands;
        const std::string request_id = json_string(payload, "requestId");
        const std::string subject = json_string(payload, "subject");
        say(f, "erase " + d.id + " " + request_id);
        if (f.o.never_ack.count(d.id)) return;
        std::string status = "failed";
        if (!f.o.fail.count(d.id)) {
            // The device's own copy: deleted before the answer (GDPR Art. 17).
            // A downstream client may hold the subject under the plugin's pseudonym only.
            const std::string pseudonym = json_string(payload, "pseudonym");
            const bool held = d.store.erase(subject) + (pseudonym.empty() ? 0 : d.store.erase(pseudonym)) > 0;
            status = held ? "erased" : "not_found";
        }
        if (f.o.slow.count(d.id)) {
            d.pending_acks.emplace_back(clock_type::now() + std::chrono::milliseconds(f.o.slow_ms), request_id + "\n" + status);
            return;
        }
        send_ack(f, d, request_id, status);
        return;
    }
    // The downstream subscriber keeps what it receives, by the driver it is about (pseudonymised
    // ids are kept as they arrive).
    std::string driver = json_string(payload, "driver_id");
    if (!driver.empty()) ++d.store[driver];
}

void on_connect(mosquitto* m, void* user, int rc, int, const mosquitto_property*) {
    auto& d = *static_cast<device*>(user);
    if (rc != 0) return;
    d.connected = true;
    if (d.driver.empty()) {
        const std::string filter = "fleet/" + the_fleet->o.fleet + "/vehicle/+/telemetry";
        mosquitto_subscribe_v5(m, nullptr, filter.c_str(), 1, 0, nullptr);
    }
}

void on_publish(mosquitto*, void* user, int, int, const mosquitto_property*) {
    auto& d = *static_cast<device*>(user);
    if (d.in_flight > 0) --d.in_flight;
}

void on_subscribe(mosquitto*, void*, int, int, const int*, const mosquitto_property*) { the_fleet->subscribed = true; }

void on_disconnect(mosquitto*, void* user, int, const mosquitto_property*) {
    static_cast<device*>(user)->connected = false;
}

int last_connect_error = 0;

bool start(fleet& f, device& d) {
    d.m = mosquitto_new(d.id.c_str(), true, &d);
    if (!d.m) return false;
    mosquitto_int_option(d.m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_v5_callback_set(d.m, on_connect);
    mosquitto_disconnect_v5_callback_set(d.m, on_disconnect);
    mosquitto_message_v5_callback_set(d.m, on_message);
    mosquitto_publish_v5_callback_set(d.m, on_publish);
    mosquitto_subscribe_v5_callback_set(d.m, on_subscribe);
    last_connect_error = mosquitto_connect_bind_v5(d.m, f.o.host.c_str(), f.o.port, 30, nullptr, nullptr);
    return last_connect_error == MOSQ_ERR_SUCCESS;
}

void publish(fleet& f, device& d) {
    const std::string topic = "fleet/" + f.o.fleet + "/vehicle/" + d.id + "/telemetry";
    if (!d.drivers.empty()) d.driver = d.drivers[static_cast<std::size_t>(d.published) % d.drivers.size()];
    char payload[512];
    const int n = std::snprintf(payload, sizeof payload,
                                "{\"driver_id\":\"%s\",\"driver_name\":\"Driver %s\",\"phone\":\"+49 170 %07d\","
                                "\"gps\":{\"lat\":52.520%03d,\"lon\":13.404%03d},\"ts\":\"2026-12-02T08:15:%02dZ\","
                                "\"speed\":%d,\"fuel\":%d}",
                                d.driver.c_str(), d.driver.c_str(), d.published * 7919 % 10000000, d.published % 1000,
                                (d.published * 7) % 1000, d.published % 60, 40 + d.published % 60, 90 - d.published % 50);
    if (mosquitto_publish_v5(d.m, nullptr, topic.c_str(), n, payload, 1, false, nullptr) != MOSQ_ERR_SUCCESS) return;
    ++d.published;
    ++d.in_flight;
    ++d.store[d.driver];
}

int usage() {
    std::fprintf(stderr, "usage: device-sim --port P [--host H] [--devices N] [--first I] [--prefix P] [--fleet F] [--messages K] "
                         "[--interval-ms MS] [--erase-topic T] [--duration-s S] [--never-ack IDS] [--fail IDS] "
                         "[--slow IDS --slow-ms MS] [--offline IDS --offline-ms MS] [--subscriber ID] [--shared-subject S] [--quiet]\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    fleet f;
    options& o = f.o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quiet") {
            o.quiet = true;
            continue;
        }
        if (i + 1 >= argc) return usage();
        const char* v = argv[++i];
        if (a == "--host") o.host = v;
        else if (a == "--port") o.port = std::atoi(v);
        else if (a == "--devices") o.devices = std::atoi(v);
        else if (a == "--first") o.first = std::atoi(v);
        else if (a == "--prefix") o.prefix = v;
        else if (a == "--fleet") o.fleet = v;
        else if (a == "--messages") o.messages = std::atoi(v);
        else if (a == "--interval-ms") o.interval_ms = std::atoi(v);
        else if (a == "--erase-topic") o.erase_topic = v;
        else if (a == "--duration-s") o.duration_s = std::atof(v);
        else if (a == "--never-ack") o.never_ack = split(v);
        else if (a == "--fail") o.fail = split(v);
        else if (a == "--slow") o.slow = split(v);
        else if (a == "--slow-ms") o.slow_ms = std::atoi(v);
        else if (a == "--offline") o.offline = split(v);
        else if (a == "--offline-ms") o.offline_ms = std::atoi(v);
        else if (a == "--subscriber") o.subscriber = v;
        else if (a == "--shared-subject") o.shared_subject = v;
        else return usage();
    }
    if (o.port <= 0 || o.devices < 0) return usage();
    the_fleet = &f;
    std::signal(SIGINT, [](int) { stopping = true; });
    std::signal(SIGTERM, [](int) { stopping = true; });
    std::signal(SIGPIPE, SIG_IGN);
    mosquitto_lib_init();

    f.devices.resize(static_cast<std::size_t>(o.devices) + (o.subscriber.empty() ? 0 : 1));
    for (int i = 0; i < o.devices; ++i) {
        auto& d = f.devices[static_cast<std::size_t>(i)];
        d.id = o.prefix + std::to_string(o.first + i);
        if (o.shared_subject.empty()) {
            d.driver = "driver-" + std::to_string(o.first + i);
        } else {
            const auto list = split(o.shared_subject.c_str());
            d.drivers.assign(list.begin(), list.end());
            d.driver = d.drivers.front();
        }
    }
    if (!o.subscriber.empty()) {
        // The subscriber comes first and is subscribed before any device publishes: it must see
        // the fleet's data to hold it.
        f.devices.back().id = o.subscriber;
        std::rotate(f.devices.begin(), f.devices.end() - 1, f.devices.end());
    }
    const auto started = clock_type::now();
    std::vector<pollfd> fds;
    std::size_t next_to_start = 0;
    while (!stopping) {
        const auto now = clock_type::now();
        // Connections are opened a few hundred at a time, so that a large fleet never overruns
        // the broker's listen backlog.
        std::size_t connecting = 0;
        for (std::size_t i = 0; i < next_to_start; ++i) connecting += f.devices[i].connected ? 0 : 1;
        const bool subscriber_pending = !o.subscriber.empty() && !f.subscribed;
        while (next_to_start < f.devices.size() && connecting < 200 && !(subscriber_pending && next_to_start > 0)) {
            device& d = f.devices[next_to_start];
            bool ok = false;
            for (int attempt = 0; attempt < 50 && !ok && !stopping; ++attempt) {
                ok = start(f, d);
                if (!ok) {
                    if (d.m) mosquitto_destroy(d.m);
                    d.m = nullptr;
                    ::poll(nullptr, 0, 100);
                }
            }
            if (!ok) {
                std::fprintf(stderr, "device-sim: %s could not connect to %s:%d: %s (%s)\n", d.id.c_str(), o.host.c_str(),
                             o.port, mosquitto_strerror(last_connect_error), std::strerror(errno));
                return 1;
            }
            ++next_to_start;
            ++connecting;
        }
        if (o.duration_s > 0 && now - started >= std::chrono::duration<double>(o.duration_s)) break;
        for (auto& d : f.devices) {
            if (!d.m) continue;
            if (d.reconnect_at != clock_type::time_point{} && now >= d.reconnect_at) {
                d.reconnect_at = {};
                mosquitto_reconnect(d.m);
                say(f, "online " + d.id);
            }
            if (!d.connected) continue;
            if (!d.driver.empty() && d.published < o.messages && now >= d.next_publish) {
                publish(f, d);
                d.next_publish = now + std::chrono::milliseconds(o.interval_ms);
                if (d.published == o.messages) say(f, "published " + d.id + " " + std::to_string(d.published));
            }
            if (o.offline.count(d.id) && !d.went_offline && d.published >= o.messages && d.in_flight == 0) {
                // Once the broker has every publish, go away for a while.
                d.went_offline = true;
                mosquitto_disconnect_v5(d.m, 0, nullptr);
                d.connected = false;
                d.reconnect_at = now + std::chrono::milliseconds(o.offline_ms);
                say(f, "offline " + d.id);
            }
            for (auto it = d.pending_acks.begin(); it != d.pending_acks.end();) {
                if (now < it->first) {
                    ++it;
                    continue;
                }
                const auto nl = it->second.find('\n');
                send_ack(f, d, it->second.substr(0, nl), it->second.substr(nl + 1));
                it = d.pending_acks.erase(it);
            }
        }
        fds.clear();
        std::vector<device*> owners;
        for (auto& d : f.devices) {
            const int s = d.m ? mosquitto_socket(d.m) : -1;
            if (s < 0) continue;
            short events = POLLIN;
            if (mosquitto_want_write(d.m)) events |= POLLOUT;
            fds.push_back(pollfd{s, events, 0});
            owners.push_back(&d);
        }
        ::poll(fds.data(), fds.size(), 20);
        for (std::size_t i = 0; i < fds.size(); ++i) {
            device& d = *owners[i];
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) mosquitto_loop_read(d.m, 1);
            if (d.m && mosquitto_want_write(d.m)) mosquitto_loop_write(d.m, 1);
        }
        for (auto& d : f.devices) {
            if (!d.m) continue;
            const int rc = mosquitto_loop_misc(d.m);
            // A lost connection (not one we closed on purpose) is tried again.
            if (rc == MOSQ_ERR_NO_CONN && d.reconnect_at == clock_type::time_point{} && !d.connected &&
                !(o.offline.count(d.id) && d.went_offline && d.reconnect_at != clock_type::time_point{}))
                d.reconnect_at = now + std::chrono::milliseconds(500);
        }
    }
    long held = 0, published = 0;
    for (auto& d : f.devices) {
        for (const auto& [s, n] : d.store) held += n;
        published += d.published;
        if (d.m) {
            mosquitto_disconnect_v5(d.m, 0, nullptr);
            mosquitto_loop_write(d.m, 1);
            mosquitto_destroy(d.m);
        }
    }
    std::printf("{\"devices\":%d,\"published\":%ld,\"erase_commands\":%d,\"acks_sent\":%d,\"records_held\":%ld}\n",
                o.devices, published, f.erase_commands, f.acks_sent, held);
    mosquitto_lib_cleanup();
    return 0;
}
