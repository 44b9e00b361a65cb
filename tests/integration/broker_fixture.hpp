#pragma once
// A real mosquitto with the plugin loaded, on a free loopback port, in its own temporary
// directory; plus a small Paho MQTT C++ client wrapper. Used by every integration test.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <mqtt/async_client.h>

namespace itest {

// The client id the fixture names as operator unless a test sets operator options itself.
inline constexpr const char* OPERATOR_CLIENT_ID = "itest-operator";

std::string source_dir();
// `n` random bytes (key material for test brokers).
std::string random_bytes(std::size_t n);
std::string plugin_path();

// Makes a directory that is removed with everything in it when the object goes away.
class scratch_dir {
public:
    scratch_dir();
    ~scratch_dir();
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::string write(const std::string& name, const std::string& content, unsigned mode = 0644) const;

private:
    std::filesystem::path path_;
};

// A certificate authority and a server certificate for 127.0.0.1, made with the openssl tool,
// for tests over TLS; client certificates on demand.
class test_pki {
public:
    test_pki();
    // Writes <name>.crt and <name>.key, a client certificate with common name `cn`.
    void issue_client(const std::string& name, const std::string& cn) const;
    std::string file(const std::string& name) const { return (dir_.path() / name).string(); }
    // cafile, certfile and keyfile lines for a listener that requires a client certificate.
    std::string listener_config() const;

private:
    void issue(const std::string& name, const std::string& cn, const std::string& extensions) const;
    void sh(const std::string& command) const;
    scratch_dir dir_;
};

struct broker_options {
    bool load_plugin = true;
    // plugin_opt_ lines. Unless given here (an empty value omits the option): "schemas" is the
    // shipped example schemas, "pseudonym_key_file" a fresh private key, "database" a file in the
    // broker's scratch directory, "operator_client_ids" OPERATOR_CLIENT_ID, "acl_default" allow.
    std::vector<std::pair<std::string, std::string>> plugin_opts;
    std::string extra_config;  // appended to mosquitto.conf
    std::string listener_config;  // lines right after the listener line (e.g. TLS settings)
    std::string user;          // the broker's `user` line; default: the user running the tests
    // RLIMIT_FSIZE of the broker (bytes per file; 0: none), with SIGXFSZ ignored: writes past it
    // fail with EFBIG, as on a full disk.
    std::uint64_t file_size_limit = 0;
};

class broker {
public:
    // Starts the broker and waits until it accepts connections. Throws std::runtime_error with the
    // broker's log when it does not come up.
    explicit broker(broker_options options = {});
    ~broker();
    broker(const broker&) = delete;
    broker& operator=(const broker&) = delete;

    int port() const { return port_; }
    std::string uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
    std::string log() const;
    // Waits up to `timeout` for `needle` to appear in the log. The defaults of waits for what
    // must come are generous: a sanitizer build on a busy machine is several times slower.
    bool wait_for_log(const std::string& needle, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
    const scratch_dir& dir() const { return *dir_; }
    // SIGTERM, then SIGKILL if it has not exited within `patience`; true when it exited by itself.
    bool stop(std::chrono::milliseconds patience = std::chrono::seconds(30));
    // SIGKILL: the broker gets no chance to flush or clean up.
    void kill_hard();
    // Sends a signal (e.g. SIGHUP to reload).
    void signal(int sig) const;
    // Changes the running broker's per-file size limit (0: unlimited), e.g. to end a "disk full".
    void set_file_size_limit(std::uint64_t bytes) const;

    // Runs the broker with `options` expecting it to refuse to start; returns its exit status and
    // log. Fails (throws) if the broker is still running after the timeout.
    static std::pair<int, std::string> expect_refusal(broker_options options,
                                                      std::chrono::milliseconds timeout = std::chrono::seconds(10));

private:
    struct unlaunched {};
    explicit broker(unlaunched) {}
    void launch(const broker_options& options);
    std::unique_ptr<scratch_dir> dir_;
    int port_ = 0;
    int pid_ = -1;
};

// One MQTT client. `version` is 5 or 4 (3.1.1). Messages of subscriptions are queued.
class client {
public:
    client(const broker& b, const std::string& id, int version = 5);
    ~client();
    // `clean` false: resume (or start) a persistent session that outlives the connection (v5:
    // session expiry 300 s), so the broker queues QoS 1/2 messages while the client is away.
    void connect(std::optional<mqtt::message> will = std::nullopt, bool clean = true);
    void subscribe(const std::string& filter, int qos = 1);
    // Publishes and waits for completion. Returns the MQTT v5 reason code the broker acknowledged
    // with (0 = success; 135 = not authorized). QoS 0 always returns 0.
    int publish(const std::string& topic, const std::string& payload, int qos = 1, bool retain = false,
                const mqtt::properties& props = {});
    // Next delivered message within `timeout`, or null.
    mqtt::const_message_ptr next(std::chrono::milliseconds timeout = std::chrono::seconds(10));
    // Waits up to `timeout` for `count` messages, then takes what else comes within `quiet`.
    std::vector<mqtt::const_message_ptr> collect(std::size_t count, std::chrono::milliseconds timeout,
                                                 std::chrono::milliseconds quiet = std::chrono::milliseconds(300));
    // Drains messages for `quiet` and returns them.
    std::vector<mqtt::const_message_ptr> drain(std::chrono::milliseconds quiet = std::chrono::milliseconds(300));
    void disconnect();
    mqtt::async_client& raw() { return cli_; }

private:
    mqtt::async_client cli_;
    int version_;
};

// Connects a mosquitto_sub process as `client_id` (MQTT v5) with the given will, waits until the
// broker has accepted it, then kills it with SIGKILL so the broker publishes the will (after
// `will_delay_seconds`, when given: the session then outlives the connection).
// `protocol_version` 4 connects with MQTT v3.1.1 (no will delay then).
void connect_and_vanish(const broker& b, const std::string& client_id, const std::string& will_topic,
                        const std::string& will_payload, int will_qos = 1, bool will_retain = false,
                        int will_delay_seconds = 0, int protocol_version = 5);

// Runs a shell command; returns its exit status and what it printed on stdout (and on stderr too
// when `with_stderr`).
std::pair<int, std::string> run_command(const std::string& command, bool with_stderr = true);

// Publishes `message` on the control topic ($CONTROL/gdpr/v1) as `c` and returns the text of the
// answer on the response topic, passing over other messages; "" when none came within 15 s.
std::string control_exchange(client& c, const std::string& message);

// Value of user property `name` on a message, if present.
std::optional<std::string> user_property(const mqtt::const_message_ptr& msg, const std::string& name);

} // namespace itest
