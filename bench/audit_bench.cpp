// How many records per second the audit writer sustains on this machine: publish records with a
// ~200-byte forwarded payload sealed for one of many subjects (AES-256-GCM), hash-chained and
// written in batched transactions; the appending thread plays the broker (block policy: nothing
// is dropped). Also times a full `verify` of the result.
//
//   build/bench/audit_bench [--records N] [--subjects N] [--deliveries N] [--dir DIR]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "gdpr/audit_log.hpp"
#include "gdpr/audit_reader.hpp"

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

const char* PAYLOAD =
    R"({"driver_id":"3f9a8c21d0b47e65a1c2d3e4f5a6b7c8","gps":{"lat":48.14,"lon":11.58},"speed":87.5,)"
    R"("heading":271,"odometer":184233.4,"engine":{"rpm":2450,"coolant_c":88},"fuel_pct":63,"ts":1795460000})";

} // namespace

int main(int argc, char** argv) {
    long records = 500000, subjects = 10000, deliveries = 0;
    std::string dir = std::filesystem::temp_directory_path().string();
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--records") records = std::atol(argv[i + 1]);
        else if (a == "--subjects") subjects = std::atol(argv[i + 1]);
        else if (a == "--deliveries") deliveries = std::atol(argv[i + 1]);
        else if (a == "--dir") dir = argv[i + 1];
        else {
            std::fprintf(stderr, "usage: audit_bench [--records N] [--subjects N] [--deliveries N] [--dir DIR]\n");
            return 2;
        }
    }
    const std::string path = dir + "/audit-bench-" + std::to_string(::getpid()) + ".db";
    gdpr::audit_options o;
    o.path = path;
    auto keys = std::make_shared<gdpr::audit_keys>(std::string(32, 'b'));
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t appended = 0;
    {
        auto log = gdpr::audit_log::open(o, keys);
        for (long i = 0; i < records; ++i) {
            gdpr::audit_record r;
            r.at_ms = now_ms();
            r.kind = gdpr::audit_kind::publish;
            r.session = 2;
            r.client_id = "car-" + std::to_string(i % 1000);
            r.schema = "vehicle-telemetry@3";
            r.detail = R"({"topic":"fleet/acme/vehicle/v42/telemetry","qos":0,"retain":false,"size":231,"forwarded_size":180,)"
                       R"("fields":{"/driver_id":"pseudonymised","/gps/lat":"generalised","/gps/lon":"generalised"},"subjects":1,"payload":"sealed"})";
            r.personal = std::string(R"({"payload":)") + PAYLOAD + "}";
            r.subjects = {"driver-" + std::to_string(i % subjects)};
            const auto seq = log->append(std::move(r));
            ++appended;
            for (long d = 0; d < deliveries; ++d) {
                gdpr::audit_record del;
                del.at_ms = now_ms();
                del.kind = gdpr::audit_kind::delivery;
                del.session = 3;
                del.client_id = "dashboard-" + std::to_string(d);
                del.detail = R"({"topic":"fleet/acme/vehicle/v42/telemetry","qos":0,"publish_seq":)" + std::to_string(seq) + "}";
                log->append(std::move(del));
                ++appended;
            }
        }
        if (!log->flush()) {
            std::fprintf(stderr, "writer failed: %s\n", log->stats().last_error.c_str());
            return 1;
        }
        const auto t1 = std::chrono::steady_clock::now();
        const double s = std::chrono::duration<double>(t1 - t0).count();
        const auto st = log->stats();
        std::printf("{\"records\":%llu,\"written\":%llu,\"dropped\":%llu,\"batches\":%llu,\"seconds\":%.3f,\"records_per_s\":%.0f",
                    static_cast<unsigned long long>(appended), static_cast<unsigned long long>(st.written),
                    static_cast<unsigned long long>(st.dropped), static_cast<unsigned long long>(st.batches), s,
                    static_cast<double>(appended) / s);
    }
    {
        const auto t2 = std::chrono::steady_clock::now();
        gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
        const auto rep = gdpr::verify_audit_trail(db);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t2).count();
        std::printf(",\"verify_seconds\":%.3f,\"verify_intact\":%s,\"db_bytes\":%llu}\n", s, rep.intact() ? "true" : "false",
                    static_cast<unsigned long long>(std::filesystem::file_size(path)));
    }
    std::filesystem::remove(path);
    std::filesystem::remove(path + "-wal");
    std::filesystem::remove(path + "-shm");
    return 0;
}
