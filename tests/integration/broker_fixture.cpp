#include "broker_fixture.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace itest {

std::string source_dir() { return GDPR_SOURCE_DIR; }
std::string plugin_path() { return GDPR_PLUGIN_PATH; }

scratch_dir::scratch_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "gdpr-itest-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

scratch_dir::~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

std::string scratch_dir::write(const std::string& name, const std::string& content, unsigned mode) const {
    const auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    {
        std::ofstream out(p, std::ios::binary | std::ios::trunc);
        out << content;
    }
    ::chmod(p.c_str(), mode);
    return p.string();
}

namespace {

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot bind a loopback port");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

bool port_open(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

std::string current_user() {
    const passwd* pw = ::getpwuid(::geteuid());
    return pw ? pw->pw_name : "root";
}

std::string read_all(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

} // namespace

std::string random_bytes(std::size_t n) {
    std::random_device rd;
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rd() & 0xff);
    return s;
}

broker::broker(broker_options options) {
    launch(options);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            throw std::runtime_error("broker exited during start-up:\n" + log());
        }
        if (port_open(port_)) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stop();
    throw std::runtime_error("broker did not accept connections within 10 s:\n" + log());
}

broker::~broker() { stop(); }

void broker::launch(const broker_options& options) {
    dir_ = std::make_unique<scratch_dir>();
    port_ = free_port();
    std::ostringstream conf;
    conf << "listener " << port_ << " 127.0.0.1\n"
         << options.listener_config << "\n"
         << "allow_anonymous true\n"
         << "user " << (options.user.empty() ? current_user() : options.user) << "\n"
         << "log_dest stderr\n"
         << "log_type all\n"
         << "persistence false\n";
    if (options.load_plugin) {
        auto opts = options.plugin_opts;
        auto has = [&](const std::string& k) {
            for (const auto& o : opts) if (o.first == k) return true;
            return false;
        };
        if (!has("schemas")) opts.emplace_back("schemas", source_dir() + "/schemas");
        if (!has("pseudonym_key_file")) opts.emplace_back("pseudonym_key_file", dir_->write("pseudonym.key", random_bytes(32), 0600));
        if (!has("acl_default")) opts.emplace_back("acl_default", "allow");
        if (!has("database")) opts.emplace_back("database", (dir_->path() / "gdpr.db").string());
        if (!has("operator_client_ids")) opts.emplace_back("operator_client_ids", OPERATOR_CLIENT_ID);
        conf << "plugin " << plugin_path() << "\n";
        for (const auto& [k, v] : opts) {
            if (!v.empty()) conf << "plugin_opt_" << k << " " << v << "\n";
        }
    }
    conf << options.extra_config << "\n";
    const std::string conf_path = dir_->write("mosquitto.conf", conf.str());
    const std::string log_path = (dir_->path() / "broker.log").string();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
        const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
#ifdef GDPR_ASAN_RUNTIME
        // The sanitized plugin needs the runtime loaded first; any finding aborts the broker, which
        // fails the test that was talking to it. Leak checks belong to the unit tests: the broker's
        // own allocations at exit are not ours to judge.
        ::setenv("LD_PRELOAD", GDPR_ASAN_RUNTIME, 1);
        ::setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1", 1);
        ::setenv("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1", 1);
#endif
        if (options.file_size_limit > 0) {
            ::signal(SIGXFSZ, SIG_IGN);  // stays ignored across exec: writes fail with EFBIG instead
            const rlimit limit{static_cast<rlim_t>(options.file_size_limit), RLIM_INFINITY};
            ::setrlimit(RLIMIT_FSIZE, &limit);
        }
        ::execl(MOSQUITTO_BINARY, "mosquitto", "-c", conf_path.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
}

void broker::set_file_size_limit(std::uint64_t bytes) const {
    const rlimit limit{bytes > 0 ? static_cast<rlim_t>(bytes) : RLIM_INFINITY, RLIM_INFINITY};
    if (::prlimit(pid_, RLIMIT_FSIZE, &limit, nullptr) != 0) throw std::runtime_error("prlimit failed");
}

std::string broker::log() const { return read_all(dir_->path() / "broker.log"); }

bool broker::wait_for_log(const std::string& needle, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (log().find(needle) == std::string::npos) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

bool broker::stop(std::chrono::milliseconds patience) {
    if (pid_ <= 0) return true;
    ::kill(pid_, SIGTERM);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + patience;
    while (std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return false;
}

void broker::kill_hard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
}

void broker::signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
}

std::pair<int, std::string> broker::expect_refusal(broker_options options, std::chrono::milliseconds timeout) {
    broker b(unlaunched{});
    b.launch(options);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(b.pid_, &status, WNOHANG) == b.pid_) {
            b.pid_ = -1;
            return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, b.log()};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const std::string log = b.log();
    b.stop();
    throw std::runtime_error("broker kept running although it should have refused to start:\n" + log);
}

client::client(const broker& b, const std::string& id, int version)
    : cli_(b.uri(), id, mqtt::create_options(version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1)), version_(version) {}

client::~client() {
    try {
        if (cli_.is_connected()) cli_.disconnect()->wait_for(std::chrono::seconds(2));
    } catch (...) {
    }
}

void client::connect(std::optional<mqtt::message> will, bool clean) {
    auto builder = mqtt::connect_options_builder().mqtt_version(version_ == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1);
    if (version_ == 5) {
        builder.clean_start(clean);
        if (!clean) builder.properties({mqtt::property(mqtt::property::SESSION_EXPIRY_INTERVAL, 300)});
    } else {
        builder.clean_session(clean);
    }
    if (will) builder.will(*will);
    cli_.start_consuming();
    cli_.connect(builder.finalize())->wait_for(std::chrono::seconds(5));
    if (!cli_.is_connected()) throw std::runtime_error("client did not connect");
}

void client::subscribe(const std::string& filter, int qos) {
    cli_.subscribe(filter, qos)->wait_for(std::chrono::seconds(5));
}

int client::publish(const std::string& topic, const std::string& payload, int qos, bool retain,
                    const mqtt::properties& props) {
    auto msg = mqtt::make_message(topic, payload, qos, retain);
    if (props.size() > 0) msg->set_properties(props);
    try {
        auto tok = cli_.publish(msg);
        if (!tok->wait_for(std::chrono::seconds(5))) throw std::runtime_error("publish timed out");
        return static_cast<int>(tok->get_reason_code());
    } catch (const mqtt::exception& e) {
        if (e.get_reason_code() != 0) return e.get_reason_code();
        throw;
    }
}

mqtt::const_message_ptr client::next(std::chrono::milliseconds timeout) {
    mqtt::const_message_ptr msg;
    if (cli_.try_consume_message_for(&msg, timeout)) return msg;
    return nullptr;
}

std::vector<mqtt::const_message_ptr> client::drain(std::chrono::milliseconds quiet) {
    std::vector<mqtt::const_message_ptr> all;
    while (auto m = next(quiet)) all.push_back(m);
    return all;
}

std::vector<mqtt::const_message_ptr> client::collect(std::size_t count, std::chrono::milliseconds timeout,
                                                     std::chrono::milliseconds quiet) {
    std::vector<mqtt::const_message_ptr> all;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (all.size() < count) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        auto m = next(left);
        if (!m) break;
        all.push_back(m);
    }
    for (auto& m : drain(quiet)) all.push_back(m);
    return all;
}

void client::disconnect() { cli_.disconnect()->wait_for(std::chrono::seconds(5)); }

void connect_and_vanish(const broker& b, const std::string& client_id, const std::string& will_topic,
                        const std::string& will_payload, int will_qos, bool will_retain, int will_delay_seconds,
                        int protocol_version) {
    const std::string port = std::to_string(b.port());
    const std::string qos = std::to_string(will_qos), delay = std::to_string(will_delay_seconds);
    std::vector<const char*> argv = {"mosquitto_sub", "-h", "127.0.0.1", "-p", port.c_str(), "-V",
                                     protocol_version == 5 ? "5" : "311", "-i",
                                     client_id.c_str(), "-t", "itest/unused", "--will-topic", will_topic.c_str(),
                                     "--will-payload", will_payload.c_str(), "--will-qos", qos.c_str()};
    if (will_retain) argv.push_back("--will-retain");
    if (will_delay_seconds > 0) {
        // The session outlives the connection, so the broker holds the will for its delay.
        for (const char* a : {"-D", "will", "will-delay-interval", delay.c_str(), "-D", "connect",
                              "session-expiry-interval", "60"})
            argv.push_back(a);
    }
    argv.push_back(nullptr);
    // The broker logs each connection: wait for one more than there are now (the id may have connected before).
    const std::string connected = "as " + client_id + (protocol_version == 5 ? " (p5" : " (p2");
    const auto connections = [&] {
        const std::string log = b.log();
        std::size_t n = 0;
        for (auto at = log.find(connected); at != std::string::npos; at = log.find(connected, at + 1)) ++n;
        return n;
    };
    const std::size_t before = connections();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        const int devnull = ::open("/dev/null", O_WRONLY);
        ::dup2(devnull, 1);
        ::dup2(devnull, 2);
        ::execv(MOSQUITTO_SUB_BINARY, const_cast<char* const*>(argv.data()));
        ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (connections() == before && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    // Wait for the SUBACK too, so the session is fully established before it vanishes.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (connections() == before) throw std::runtime_error("mosquitto_sub did not connect");
}

std::optional<std::string> user_property(const mqtt::const_message_ptr& msg, const std::string& name) {
    const auto& props = msg->get_properties();
    const auto n = props.count(mqtt::property::USER_PROPERTY);
    for (std::size_t i = 0; i < n; ++i) {
        auto [k, v] = mqtt::get<mqtt::string_pair>(props, mqtt::property::USER_PROPERTY, i);
        if (k == name) return v;
    }
    return std::nullopt;
}

test_pki::test_pki() {
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=itest-ca");
    issue("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
}

void test_pki::issue_client(const std::string& name, const std::string& cn) const {
    issue(name, cn, "extendedKeyUsage=clientAuth\n");
}

void test_pki::issue(const std::string& name, const std::string& cn, const std::string& extensions) const {
    sh("openssl req -newkey rsa:2048 -nodes -keyout " + name + ".key -out " + name + ".csr -subj /CN=" + cn);
    dir_.write(name + ".ext", extensions);
    sh("openssl x509 -req -in " + name + ".csr -CA ca.crt -CAkey ca.key -CAcreateserial -out " + name +
       ".crt -days 2 -extfile " + name + ".ext");
}

void test_pki::sh(const std::string& command) const {
    const std::string line = "cd " + dir_.path().string() + " && " + command + " >/dev/null 2>&1";
    if (std::system(line.c_str()) != 0) throw std::runtime_error("failed: " + command);
}

std::string test_pki::listener_config() const {
    return "cafile " + file("ca.crt") + "\ncertfile " + file("server.crt") + "\nkeyfile " + file("server.key") +
           "\nrequire_certificate true\n";
}

std::string control_exchange(client& c, const std::string& message) {
    if (c.publish("$CONTROL/gdpr/v1", message, 1) != 0) return "";
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    for (auto now = std::chrono::steady_clock::now(); now < until; now = std::chrono::steady_clock::now()) {
        auto msg = c.next(std::chrono::duration_cast<std::chrono::milliseconds>(until - now));
        if (msg && msg->get_topic() == "$CONTROL/gdpr/v1/response") return msg->to_string();
        if (!msg) break;
    }
    return "";
}

std::pair<int, std::string> run_command(const std::string& command, bool with_stderr) {
    std::string out;
    FILE* p = ::popen((command + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
    if (!p) throw std::runtime_error("cannot run: " + command);
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

} // namespace itest
