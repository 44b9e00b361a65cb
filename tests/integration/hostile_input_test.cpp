// The hostile-input catalogue: every case goes through a real broker with the plugin, has one
// defined outcome (reason code and exact forwarded payload, a closed connection, or a control API
// error), and after every case the broker must still serve other clients. The audit trail is on,
// so every refusal is also recorded; the log must never carry the payloads' values.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "broker_fixture.hpp"
#include "gdpr/pseudonymiser.hpp"

using namespace std::chrono_literals;

namespace {

const std::string KEY = "hostile-input-key-0123456789abcdef0123456789";
const std::string TOPIC = "fleet/acme/vehicle/v1/telemetry";
constexpr std::size_t SIZE_LIMIT = 1048576;  // message_size_limit of the broker under test

std::string pseudonym(const std::string& id) { return gdpr::pseudonymiser(KEY).pseudonym(id); }
std::string repeat(const std::string& s, std::size_t n) {
    std::string out;
    out.reserve(s.size() * n);
    for (std::size_t i = 0; i < n; ++i) out += s;
    return out;
}

constexpr int REFUSED = 135;
struct payload_case {
    std::string name;
    std::string payload;
    int reason;                // PUBACK reason code
    std::string forwarded;     // exact payload the subscriber gets when accepted
    std::string secret = {};   // a value that must reach neither subscriber nor log
};

std::vector<payload_case> payload_cases() {
    const std::string pad_key = R"({"speed":1,"pad":")";
    const std::string at_limit = pad_key + std::string(SIZE_LIMIT - pad_key.size() - 2, 'x') + "\"}";
    return {
        {"deep nesting, 100,000 objects", repeat(R"({"a":)", 100000) + "1" + repeat("}", 100000), REFUSED, ""},
        {"deep nesting, 100,000 arrays", repeat("[", 100000) + repeat("]", 100000), REFUSED, ""},
        {"nesting at the limit (128 levels)", repeat(R"({"a":)", 128) + "1" + repeat("}", 128), 0, "{}"},
        {"nesting one level past the limit", repeat(R"({"a":)", 129) + "1" + repeat("}", 129), REFUSED, ""},
        {"nesting within the limit, unclassified", R"({"speed":2,"a":)" + repeat(R"({"a":)", 100) + "1" + repeat("}", 101),
         0, R"({"speed":2})"},
        {"payload at the broker's size limit", at_limit, 0, R"({"speed":1})"},
        {"invalid UTF-8 in a value", "{\"driver_id\":\"D-\xff\xfe\"}", REFUSED, "", "D-"},
        {"invalid UTF-8 in a key", "{\"dr\xc3\x28iver\":\"x\"}", REFUSED, ""},
        {"overlong UTF-8 encoding", "{\"speed\":1,\"n\":\"\xc0\x80\"}", REFUSED, ""},
        {"UTF-8 encoded surrogate", "{\"n\":\"\xed\xa0\x80\"}", REFUSED, ""},
        {"duplicate classified keys", R"({"driver_id":"D-111","driver_id":"D-222","speed":3})", 0,
         R"({"driver_id":")" + pseudonym("D-111") + R"(","driver_id":")" + pseudonym("D-222") + R"(","speed":3})", "D-111"},
        {"duplicate dropped keys", R"({"driver_name":"Ann Secret","driver_name":"Ann Secret","speed":3})", 0,
         R"({"speed":3})", "Ann Secret"},
        {"huge exponent", R"({"speed":1e999999999})", 0, R"({"speed":1e999999999})"},
        {"huge integer", R"({"speed":)" + std::string(400, '9') + "}", 0, R"({"speed":)" + std::string(400, '9') + "}"},
        {"huge negative exponent", R"({"fuel":-1.5E-999999})", 0, R"({"fuel":-1.5E-999999})"},
        {"NaN", R"({"speed":NaN})", REFUSED, ""},
        {"Infinity", R"({"speed":Infinity})", REFUSED, ""},
        {"-Infinity", R"({"speed":-Infinity})", REFUSED, ""},
        {"escaped key equal to a classified field", R"({"\u0064river_id":"D-333"})", 0,
         R"({"\u0064river_id":")" + pseudonym("D-333") + R"("})", "D-333"},
        {"escaped key of a dropped field", R"({"driver\u005fname":"Bob Secret","speed":4})", 0, R"({"speed":4})",
         "Bob Secret"},
        {"escaped value of a pseudonymised field", R"({"driver_id":"D-\u0034\u0034\u0034"})", 0,
         R"({"driver_id":")" + pseudonym("D-444") + R"("})", "D-\\u0034"},
        {"JSON with a byte-order mark", "\xef\xbb\xbf{\"speed\":1}", REFUSED, ""},
        {"trailing garbage", R"({"speed":1} x)", REFUSED, ""},
        {"two documents", R"({"speed":1}{"speed":2})", REFUSED, ""},
        {"trailing whitespace is kept byte for byte", "{\"speed\":1}  \n", 0, "{\"speed\":1}  \n"},
        {"empty payload", "", 0, ""},
        {"top-level number", "42", REFUSED, ""},
        {"top-level string", R"("D-555")", REFUSED, "", "D-555"},
        {"top-level null", "null", REFUSED, ""},
        {"top-level array where the rules describe an object", R"([{"driver_id":"D-666"}])", REFUSED, "", "D-666"},
        {"unterminated string", R"({"driver_id":"D-777)", REFUSED, "", "D-777"},
        {"raw control character in a string", "{\"n\":\"a\x01b\"}", REFUSED, ""},
        {"NUL byte inside the payload", std::string("{\"n\":\"a\0b\"}", 11), REFUSED, ""},
        {"escaped NUL in a pseudonymised value", R"({"driver_id":"D\u0000888"})", 0,
         R"({"driver_id":")" + pseudonym(std::string("D\0" "888", 5)) + R"("})"},
        {"leading zero", R"({"speed":01})", REFUSED, ""},
        {"plus sign", R"({"speed":+1})", REFUSED, ""},
        {"bare fraction", R"({"speed":.5})", REFUSED, ""},
        {"single quotes", R"({'speed':1})", REFUSED, ""},
        {"comment", R"({"speed":1 /* c */})", REFUSED, ""},
        {"classified identifier as an object", R"({"driver_id":{"id":"D-999"},"speed":5})", 0, R"({"speed":5})", "D-999"},
        {"classified identifier as an array", R"({"driver_id":["D-999"],"speed":5})", 0, R"({"speed":5})", "D-999"},
        {"position in the wrong shape", R"({"gps":[48.1371,11.5761],"speed":6})", 0, R"({"speed":6})", "48.1371"},
        {"timestamp that is not one", R"({"ts":"yesterday at noon","speed":7})", 0, R"({"speed":7})", "yesterday"},
        {"very long unclassified key", R"({")" + std::string(60000, 'k') + R"(":1,"speed":8})", 0, R"({"speed":8})"},
        {"10,000 members", "{" + [] {
             std::string m;
             for (int i = 0; i < 10000; ++i) m += "\"m" + std::to_string(i) + "\":" + std::to_string(i) + ",";
             return m;
         }() + R"("speed":9})", 0, R"({"speed":9})"},
    };
}

struct control_case {
    std::string name;
    std::string payload;
    std::string error;  // expected in the (first) response's error
};

std::vector<control_case> control_cases() {
    return {
        {"oversized control command", R"({"commands":[{"command":"getStats","pad":")" + std::string(300 * 1024, 'x') + "\"}]}",
         "larger than"},
        {"control command that is not JSON", "{commands:", "not valid JSON"},
        {"empty control command", "", "not valid JSON"},
        {"commands not an array", R"({"commands":{"command":"getStats"}})", "commands"},
        {"empty commands array", R"({"commands":[]})", "commands"},
        {"too many commands", R"({"commands":[)" + [] {
             std::string c;
             for (int i = 0; i < 101; ++i) c += std::string(i ? "," : "") + R"({"command":"getStats"})";
             return c;
         }() + "]}",
         "100"},
        {"control command nested too deep", R"({"commands":[{"command":"getStats","x":)" + repeat("[", 20) + repeat("]", 20) + "}]}",
         "deep"},
        {"subject of the wrong type", R"({"commands":[{"command":"setConsent","subject":42,"purpose":"route-analytics","granted":true}]})",
         "subject"},
        {"granted of the wrong type", R"({"commands":[{"command":"setConsent","subject":"D-1","purpose":"route-analytics","granted":"yes"}]})",
         "granted"},
        {"purpose of the wrong type", R"({"commands":[{"command":"setConsent","subject":"D-1","purpose":["x"],"granted":true}]})",
         "purpose"},
        {"command name of the wrong type", R"({"commands":[{"command":7}]})", "command"},
        {"unknown command", R"({"commands":[{"command":"dropAllTables"}]})", "unknown command"},
        {"correlation data of the wrong type", R"({"commands":[{"command":"getStats","correlationData":{"a":1}}]})",
         "correlationData"},
        {"unknown argument", R"({"commands":[{"command":"getStats","verbose":true}]})", "verbose"},
        {"number beyond a double's range", R"({"commands":[{"command":"getStats","correlationData":1e999}]})",
         "number out of range"},
    };
}

// A minimal MQTT 3.1.1 client on a raw socket, to send what well-behaved client libraries refuse to.
class raw_client {
public:
    explicit raw_client(int port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("raw connect failed");
        const std::string id = "raw-hostile";
        std::string connect = std::string("\x00\x04MQTT\x04\x02\x00\x3c", 10);
        connect += static_cast<char>(0);
        connect += static_cast<char>(id.size());
        connect += id;
        send_packet(0x10, connect);
        char connack[4];
        if (!read_exact(connack, 4) || connack[0] != 0x20 || connack[3] != 0) throw std::runtime_error("no CONNACK");
    }
    ~raw_client() { ::close(fd_); }
    void publish(const std::string& topic) {
        std::string body;
        body += static_cast<char>(topic.size() >> 8);
        body += static_cast<char>(topic.size() & 0xff);
        body += topic;
        body += R"({"speed":1})";
        send_packet(0x30, body);
    }
    // True when the broker closes the connection within `timeout`.
    bool closed_by_broker(std::chrono::milliseconds timeout) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
        char b;
        return ::recv(fd_, &b, 1, 0) <= 0;
    }

private:
    void send_packet(unsigned char type, const std::string& body) {
        std::string packet(1, static_cast<char>(type));
        std::size_t len = body.size();
        do {
            unsigned char byte = len % 128;
            len /= 128;
            if (len) byte |= 0x80;
            packet += static_cast<char>(byte);
        } while (len);
        packet += body;
        ::send(fd_, packet.data(), packet.size(), MSG_NOSIGNAL);
    }
    bool read_exact(char* out, std::size_t n) {
        std::size_t got = 0;
        while (got < n) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 3000) <= 0) return false;
            const auto r = ::recv(fd_, out + got, n - got, 0);
            if (r <= 0) return false;
            got += static_cast<std::size_t>(r);
        }
        return true;
    }
    int fd_ = -1;
};

struct hostile_broker {
    itest::scratch_dir keys;
    itest::broker b;
    hostile_broker() : b(options(keys)) {}
    static itest::broker_options options(const itest::scratch_dir& keys) {
        itest::broker_options o;
        o.plugin_opts = {{"pseudonym_key_file", keys.write("p.key", KEY, 0600)},
                         {"audit_key_file", keys.write("a.key", itest::random_bytes(32), 0600)}};
        o.extra_config = "message_size_limit " + std::to_string(SIZE_LIMIT) + "\n";
        return o;
    }
};

// Another client's ordinary publish still arrives: the broker is serving.
void check_still_serving(itest::client& canary_pub, itest::client& canary_sub) {
    static int n = 0;
    const std::string payload = R"({"speed":)" + std::to_string(++n) + "}";
    REQUIRE(canary_pub.publish("fleet/acme/vehicle/canary/telemetry", payload, 1) == 0);
    const auto got = canary_sub.next();
    REQUIRE(got);
    CHECK(got->to_string() == payload);
}

} // namespace

TEST_CASE("hostile-input catalogue: payloads, topics and control commands through the real broker",
          "[integration][hostile]") {
    hostile_broker hb;
    auto& b = hb.b;
    itest::client sub(b, "hostile-sub", 5);
    sub.connect();
    sub.subscribe(TOPIC, 1);
    itest::client canary_sub(b, "canary-sub", 5);
    canary_sub.connect();
    canary_sub.subscribe("fleet/acme/vehicle/canary/telemetry", 1);
    itest::client canary_pub(b, "canary-pub", 5);
    canary_pub.connect();
    itest::client pub(b, "hostile-pub", 5);
    pub.connect();
    itest::client op(b, itest::OPERATOR_CLIENT_ID, 5);
    op.connect();

    const auto payloads = payload_cases();
    const auto controls = control_cases();
    const std::vector<std::string> bad_topics = {"fleet/+/vehicle/v1/telemetry", "fleet/acme/#",
                                                 std::string("fleet/acme\0/x", 12), "fleet/\xff\xfe/x", ""};
    CHECK(payloads.size() + controls.size() + bad_topics.size() + 1 >= 40);

    std::vector<std::string> secrets;
    for (const auto& c : payloads) {
        INFO("case: " << c.name);
        CHECK(pub.publish(TOPIC, c.payload, 1) == c.reason);
        if (c.reason == 0) {
            const auto got = sub.next();
            REQUIRE(got);
            CHECK(got->to_string() == c.forwarded);
        } else {
            CHECK_FALSE(sub.next(100ms));
        }
        if (!c.secret.empty()) secrets.push_back(c.secret);
        check_still_serving(canary_pub, canary_sub);
    }

    {
        INFO("case: payload one byte over the broker's size limit");
        const std::string over = R"({"speed":1,"pad":")" + std::string(SIZE_LIMIT, 'x') + "\"}";
        const int reason = pub.publish(TOPIC, over, 1);
        CHECK(reason >= 128);  // the broker refuses it before the plugin sees it
        CHECK_FALSE(sub.next(200ms));
        check_still_serving(canary_pub, canary_sub);
    }

    for (const auto& topic : bad_topics) {
        INFO("case: raw publish on a topic that is not a valid topic name: " << topic.size() << " bytes");
        raw_client raw(b.port());
        raw.publish(topic);
        CHECK(raw.closed_by_broker(2s));  // a protocol violation: the broker drops the connection
        check_still_serving(canary_pub, canary_sub);
    }

    for (const auto& c : controls) {
        INFO("case: " << c.name);
        REQUIRE(op.publish("$CONTROL/gdpr/v1", c.payload, 1) == 0);
        const auto got = op.next();
        REQUIRE(got);
        const auto answer = nlohmann::json::parse(got->to_string());
        INFO(answer.dump());
        REQUIRE(answer.contains("responses"));
        REQUIRE_FALSE(answer["responses"].empty());
        const auto& first = answer["responses"][0];
        REQUIRE(first.contains("error"));
        CHECK_THAT(first["error"].get<std::string>(), Catch::Contains(c.error));
        check_still_serving(canary_pub, canary_sub);
    }

    // Nothing of the refused or filtered values reached the broker's log (log_type all).
    const std::string log = b.log();
    for (const auto& s : secrets) {
        INFO("value: " << s);
        CHECK(log.find(s) == std::string::npos);
    }
    // Every refused publish was recorded: the trail verifies and counts them.
    b.stop();
    const auto [status, report] = itest::run_command(std::string(GDPRCTL_PATH) + " report " +
                                                     (b.dir().path() / "gdpr.db").string() + " --json", false);
    REQUIRE(status == 0);
    std::uint64_t refused_recorded = 0;
    for (const auto& row : nlohmann::json::parse(report))
        if (row["kind"] == "publish_refused") refused_recorded += row["count"].get<std::uint64_t>();
    std::uint64_t refused_expected = 0;
    for (const auto& c : payloads) refused_expected += c.reason == REFUSED;
    CHECK(refused_recorded == refused_expected);
    const auto [verify_status, verify_out] =
        itest::run_command(std::string(GDPRCTL_PATH) + " verify " + (b.dir().path() / "gdpr.db").string(), false);
    CHECK(verify_status == 0);
}
