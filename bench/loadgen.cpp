// loadgen: MQTT load for measuring what mosquitto-gdpr costs a broker.
//
//   loadgen --port PORT [--publishers 2] [--subscribers 2] [--messages 20000] [--qos 0]
//           [--window 100 | --rate MSGS_PER_S] [--subjects 100000] [--timeout 30]
//
// P publishers send N vehicle-telemetry messages each (~200-byte JSON with a driver id, a GPS
// position and non-personal fields, on fleet/bench/vehicle/v<i>/telemetry, which the example
// schemas classify); S subscribers receive everything on fleet/bench/#. The send time travels in
// the message's "odometer" field (a non-personal number the schema keeps byte for byte) and the
// publisher in the topic, so the messages carry no MQTT properties of their own and latency is
// measured whatever the plugin does to the rest of the payload. Flow: a closed loop (at most
// --window messages per publisher not yet seen by the first subscriber) or a fixed total --rate.
// Prints one JSON object: delivered, expected, lost, duration, delivered per second, latency
// percentiles in microseconds.
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct options {
    std::string host = "127.0.0.1";
    int port = 1883;
    int publishers = 2;
    int subscribers = 2;
    long messages = 20000;
    int qos = 0;
    int window = 100;
    double rate = 0;  // total messages per second; 0: closed loop
    long subjects = 100000;
    int timeout_s = 30;
};

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

[[noreturn]] void usage(const char* problem) {
    std::fprintf(stderr, "loadgen: %s\nusage: loadgen --port PORT [--host H] [--publishers P] [--subscribers S] "
                         "[--messages N] [--qos 0|1] [--window W | --rate R] [--subjects K] [--timeout S]\n",
                 problem);
    std::exit(2);
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) usage(("missing value for " + a).c_str());
        const char* v = argv[++i];
        if (a == "--host") o.host = v;
        else if (a == "--port") o.port = std::atoi(v);
        else if (a == "--publishers") o.publishers = std::atoi(v);
        else if (a == "--subscribers") o.subscribers = std::atoi(v);
        else if (a == "--messages") o.messages = std::atol(v);
        else if (a == "--qos") o.qos = std::atoi(v);
        else if (a == "--window") o.window = std::atoi(v);
        else if (a == "--rate") o.rate = std::atof(v);
        else if (a == "--subjects") o.subjects = std::atol(v);
        else if (a == "--timeout") o.timeout_s = std::atoi(v);
        else usage(("unknown option " + a).c_str());
    }
    if (o.port <= 0 || o.publishers <= 0 || o.subscribers <= 0 || o.messages <= 0 || o.qos < 0 || o.qos > 1 ||
        o.window <= 0 || o.subjects <= 0)
        usage("bad option value");
    return o;
}

struct subscriber_state {
    explicit subscriber_state(int publishers) : seen(static_cast<std::size_t>(publishers)) {}
    std::atomic<long> received{0};
    std::vector<std::atomic<long>> seen;  // per publisher
    std::vector<std::uint32_t> latencies_us;  // touched only by this client's thread
};

// The number after `"key":` in a payload, or -1.
std::int64_t number_after(const char* data, std::size_t len, const char* key) {
    const std::size_t key_len = std::strlen(key);
    for (std::size_t i = 0; i + key_len < len; ++i) {
        if (std::memcmp(data + i, key, key_len) != 0) continue;
        std::int64_t v = 0;
        std::size_t j = i + key_len;
        if (j >= len || data[j] < '0' || data[j] > '9') return -1;
        for (; j < len && data[j] >= '0' && data[j] <= '9'; ++j) v = v * 10 + (data[j] - '0');
        return v;
    }
    return -1;
}

void on_message(mosquitto*, void* user, const mosquitto_message* msg, const mosquitto_property*) {
    auto* s = static_cast<subscriber_state*>(user);
    const std::int64_t arrived = now_ns();
    const std::int64_t sent = number_after(static_cast<const char*>(msg->payload), static_cast<std::size_t>(msg->payloadlen),
                                           "\"odometer\":");
    const std::int64_t publisher = number_after(msg->topic, std::strlen(msg->topic), "/vehicle/v");
    if (sent > 0) s->latencies_us.push_back(static_cast<std::uint32_t>(std::max<std::int64_t>(0, arrived - sent) / 1000));
    if (publisher >= 0 && publisher < static_cast<std::int64_t>(s->seen.size()))
        s->seen[static_cast<std::size_t>(publisher)].fetch_add(1, std::memory_order_relaxed);
    s->received.fetch_add(1, std::memory_order_release);
}

mosquitto* connect_client(const options& o, const std::string& id, void* user) {
    mosquitto* m = mosquitto_new(id.c_str(), true, user);
    if (!m) usage("out of memory");
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_max_inflight_messages_set(m, 0);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);  // latency, not Nagle, is what we measure
    if (mosquitto_connect(m, o.host.c_str(), o.port, 60) != MOSQ_ERR_SUCCESS) {
        std::fprintf(stderr, "loadgen: cannot connect to %s:%d\n", o.host.c_str(), o.port);
        std::exit(3);
    }
    return m;
}

std::string payload_for(long driver, long seq, std::int64_t sent_ns) {
    char buf[320];
    const double lat = 48.1 + static_cast<double>(seq % 1000) * 0.000137;
    const double lon = 11.5 + static_cast<double>(seq % 777) * 0.000211;
    const int n = std::snprintf(
        buf, sizeof buf,
        R"({"driver_id":"D-%ld","driver_name":"Driver %ld","gps":{"lat":%.6f,"lon":%.6f},"speed":%ld.5,)"
        R"("fuel":0.61,"odometer":%lld,"ts":"2026-11-23T16:41:55.250Z","vin":"WVW-%06ld"})",
        driver, driver, lat, lon, 30 + seq % 90, static_cast<long long>(sent_ns), driver);
    return std::string(buf, static_cast<std::size_t>(n));
}

} // namespace

int main(int argc, char** argv) {
    const options o = parse(argc, argv);
    mosquitto_lib_init();

    std::vector<std::unique_ptr<subscriber_state>> subs;
    std::vector<mosquitto*> sub_clients;
    for (int i = 0; i < o.subscribers; ++i) {
        subs.push_back(std::make_unique<subscriber_state>(o.publishers));
        subs.back()->latencies_us.reserve(static_cast<std::size_t>(o.messages * o.publishers));
        mosquitto* m = connect_client(o, "bench-sub-" + std::to_string(i), subs.back().get());
        mosquitto_message_v5_callback_set(m, on_message);
        mosquitto_subscribe(m, nullptr, "fleet/bench/#", o.qos);
        mosquitto_loop_start(m);
        sub_clients.push_back(m);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // subscriptions in place

    const long expected = o.messages * o.publishers * o.subscribers;
    const std::int64_t start = now_ns();
    std::vector<std::thread> publishers;
    std::atomic<bool> failed{false};
    for (int p = 0; p < o.publishers; ++p) {
        publishers.emplace_back([&, p] {
            mosquitto* m = connect_client(o, "bench-pub-" + std::to_string(p), nullptr);
            mosquitto_loop_start(m);
            const std::string topic = "fleet/bench/vehicle/v" + std::to_string(p) + "/telemetry";
            const double per_publisher_rate = o.rate / o.publishers;
            for (long n = 0; n < o.messages; ++n) {
                if (o.rate > 0) {
                    const std::int64_t due = start + static_cast<std::int64_t>(1e9 * static_cast<double>(n) / per_publisher_rate);
                    const std::int64_t wait = due - now_ns();
                    if (wait > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(wait));
                } else {
                    // Wait for the slowest subscriber: the broker drops QoS 0 messages for a client
                    // once max_queued_messages (default 1000) are waiting for it.
                    auto slowest = [&] {
                        long seen = o.messages;
                        for (auto& s : subs) seen = std::min(seen, s->seen[static_cast<std::size_t>(p)].load(std::memory_order_relaxed));
                        return seen;
                    };
                    while (n - slowest() >= o.window) {
                        if (now_ns() - start > static_cast<std::int64_t>(o.timeout_s) * 1000000000LL) {
                            failed = true;
                            break;
                        }
                        // Long enough not to steal the broker's CPU with wake-ups; the window
                        // holds far more than one sleep's worth of messages.
                        std::this_thread::sleep_for(std::chrono::microseconds(500));
                    }
                    if (failed) break;
                }
                const std::string payload = payload_for((n * 7919 + p) % o.subjects, n, now_ns());
                int rc;
                while ((rc = mosquitto_publish(m, nullptr, topic.c_str(), static_cast<int>(payload.size()), payload.data(),
                                               o.qos, false)) == MOSQ_ERR_NOMEM)
                    std::this_thread::sleep_for(std::chrono::microseconds(100));
                if (rc != MOSQ_ERR_SUCCESS) {
                    failed = true;
                    break;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            mosquitto_disconnect(m);
            mosquitto_loop_stop(m, false);
            mosquitto_destroy(m);
        });
    }
    for (auto& t : publishers) t.join();

    // Wait for the tail of the deliveries, or for the timeout.
    auto total = [&] {
        long n = 0;
        for (auto& s : subs) n += s->received.load(std::memory_order_acquire);
        return n;
    };
    const std::int64_t deadline = start + static_cast<std::int64_t>(o.timeout_s) * 1000000000LL;
    long last = -1;
    std::int64_t last_change = now_ns();
    while (total() < expected && now_ns() < deadline && now_ns() - last_change < 3000000000LL) {
        const long t = total();
        if (t != last) {
            last = t;
            last_change = now_ns();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const std::int64_t end = now_ns();
    for (auto* m : sub_clients) {
        mosquitto_disconnect(m);
        mosquitto_loop_stop(m, false);
    }
    std::vector<std::uint32_t> all;
    for (auto& s : subs) all.insert(all.end(), s->latencies_us.begin(), s->latencies_us.end());
    for (auto* m : sub_clients) mosquitto_destroy(m);
    std::sort(all.begin(), all.end());
    auto pct = [&](double q) -> double {
        if (all.empty()) return 0;
        return all[std::min(all.size() - 1, static_cast<std::size_t>(q * static_cast<double>(all.size())))];
    };
    const long delivered = total();
    const double seconds = static_cast<double>(end - start) / 1e9;
    std::printf("{\"delivered\":%ld,\"expected\":%ld,\"lost\":%ld,\"failed\":%s,\"seconds\":%.3f,"
                "\"delivered_per_s\":%.0f,\"latency_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"p999\":%.0f}}\n",
                delivered, expected, std::max(0L, expected - delivered), failed ? "true" : "false", seconds,
                static_cast<double>(delivered) / seconds, pct(0.50), pct(0.90), pct(0.99), pct(0.999));
    mosquitto_lib_cleanup();
    return failed || delivered < expected ? 1 : 0;
}
