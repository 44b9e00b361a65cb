// Microbenchmarks of the per-message hot path (parse + filter + serialise) on a ~200-byte
// vehicle telemetry message, with the JSON libraries the filter was measured against.
//
//   cmake --build build --target filter_bench && build/bench/filter_bench
//
// The consent benchmarks first record consent for 100,000 subjects in a temporary SQLite file.
// The simdjson and RapidJSON variants do the drop-only part of the work (no pseudonymisation or
// generalisation) and are compared with the same drop-only schema on our scanner.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unordered_set>

#include <unistd.h>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <simdjson.h>

#include "gdpr/classifier.hpp"
#include "gdpr/consent_store.hpp"
#include "gdpr/data_map.hpp"
#include "gdpr/payload_filter.hpp"
#include "gdpr/pseudonymiser.hpp"
#include "gdpr/schema_changes.hpp"
#include "gdpr/schema_loader.hpp"
#include "gdpr/topic_router.hpp"

namespace {

constexpr std::uint64_t ALL_CONSENT = ~std::uint64_t{0};

const std::string MESSAGE =
    R"({"driver_id":"D-1234","driver_name":"Ann Example","phone":"+49 170 1234567",)"
    R"("gps":{"lat":48.137154,"lon":11.576124,"alt":519},"speed":52.5,"fuel":0.61,)"
    R"("ts":"2026-11-23T16:41:55.250Z","vin":"WVW-123","odometer":128440})";

gdpr::purpose_registry purposes() {
    return gdpr::load_purposes(std::string(GDPR_SOURCE_DIR) + "/schemas/purposes.json");
}

const gdpr::schema_set& example_schemas() {
    static const gdpr::schema_set set = gdpr::load_schema_directory(std::string(GDPR_SOURCE_DIR) + "/schemas", purposes());
    return set;
}

const gdpr::schema& vehicle_schema() { return *example_schemas().route("fleet/acme/vehicle/v1/telemetry"); }

// Drop-only rules equivalent to what the library variants below do by hand.
const gdpr::schema& drop_only_schema() {
    static const gdpr::schema s = gdpr::parse_schema(R"({"id":"drop-only","version":1,"topics":["t"],"unclassified":"drop",
      "fields":{
        "/driver_id":{"category":"identifier","personal":true,"purpose":"fleet-operations","action":"drop"},
        "/driver_name":{"category":"identifier","personal":true,"purpose":"fleet-operations","action":"drop"},
        "/phone":{"category":"contact","personal":true,"purpose":"fleet-operations","action":"drop"},
        "/gps/lat":{"category":"location","personal":true,"purpose":"route-analytics","action":"keep"},
        "/gps/lon":{"category":"location","personal":true,"purpose":"route-analytics","action":"keep"},
        "/speed":{"category":"telemetry","personal":false},
        "/fuel":{"category":"telemetry","personal":false},
        "/odometer":{"category":"telemetry","personal":false},
        "/ts":{"category":"time","personal":true,"purpose":"fleet-operations","action":"keep"}
      }})", "bench", purposes());
    return s;
}

void run_scanner(benchmark::State& state, const gdpr::schema& schema, const gdpr::pseudonymiser* ps) {
    gdpr::payload_filter filter(ps);
    std::string out;
    out.reserve(512);
    if (filter.run(schema, ALL_CONSENT, MESSAGE, out).status != gdpr::filter_status::ok) {
        state.SkipWithError("the benchmark message does not pass the filter");
        return;
    }
    for (auto _ : state) {
        auto r = filter.run(schema, ALL_CONSENT, MESSAGE, out);
        benchmark::DoNotOptimize(r);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(MESSAGE.size()));
    state.counters["in_bytes"] = static_cast<double>(MESSAGE.size());
    state.counters["out_bytes"] = static_cast<double>(out.size());
}

void BM_scanner_vehicle_schema(benchmark::State& state) {
    gdpr::pseudonymiser ps(std::string(32, 'k'));
    run_scanner(state, vehicle_schema(), &ps);
}
BENCHMARK(BM_scanner_vehicle_schema);

void BM_scanner_drop_only(benchmark::State& state) { run_scanner(state, drop_only_schema(), nullptr); }
BENCHMARK(BM_scanner_drop_only);

void BM_pseudonymise_one_value(benchmark::State& state) {
    gdpr::pseudonymiser ps(std::string(32, 'k'));
    std::string out;
    for (auto _ : state) {
        out.clear();
        ps.append_pseudonym("D-1234", out);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_pseudonymise_one_value);

const std::unordered_set<std::string_view>& dropped_keys() {
    static const std::unordered_set<std::string_view> keys = {"driver_id", "driver_name", "phone", "vin"};
    return keys;
}

// simdjson On-Demand: copy into a padded buffer (the broker's payload is not padded), iterate,
// copy the raw text of kept members.
void BM_simdjson_drop_only(benchmark::State& state) {
    simdjson::ondemand::parser parser;
    std::string buffer(MESSAGE.size() + simdjson::SIMDJSON_PADDING, '\0');
    std::string out;
    out.reserve(512);
    for (auto _ : state) {
        std::memcpy(buffer.data(), MESSAGE.data(), MESSAGE.size());
        out.clear();
        auto doc = parser.iterate(buffer.data(), MESSAGE.size(), buffer.size());
        simdjson::ondemand::object obj = doc.get_object();
        out.push_back('{');
        bool first = true;
        for (auto field : obj) {
            std::string_view key = field.unescaped_key();
            if (dropped_keys().count(key)) continue;
            if (!first) out.push_back(',');
            first = false;
            out.append("\"").append(key).append("\":");
            if (key == "gps") {
                out.push_back('{');
                bool gfirst = true;
                for (auto g : field.value().get_object()) {
                    std::string_view gk = g.unescaped_key();
                    if (gk == "alt") continue;
                    if (!gfirst) out.push_back(',');
                    gfirst = false;
                    std::string_view raw = g.value().raw_json_token();
                    out.append("\"").append(gk).append("\":").append(raw);
                }
                out.push_back('}');
            } else {
                std::string_view raw = field.value().raw_json_token();
                out.append(raw);
            }
        }
        out.push_back('}');
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["out_bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_simdjson_drop_only);

// RapidJSON DOM: parse, remove members, write. Note it re-serialises numbers (52.50 -> 52.5), so
// it cannot keep number text byte for byte.
void BM_rapidjson_drop_only(benchmark::State& state) {
    std::string out;
    for (auto _ : state) {
        rapidjson::Document d;
        d.Parse(MESSAGE.data(), MESSAGE.size());
        for (auto k : {"driver_id", "driver_name", "phone", "vin"}) d.RemoveMember(k);
        d["gps"].RemoveMember("alt");
        rapidjson::StringBuffer sb;
        rapidjson::Writer<rapidjson::StringBuffer> w(sb);
        d.Accept(w);
        out.assign(sb.GetString(), sb.GetSize());
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["out_bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_rapidjson_drop_only);

// --- consent: 100,000 subjects with consent records ------------------------------------------

constexpr int SUBJECTS = 100000;

struct consent_fixture {
    std::string dir;
    std::unique_ptr<gdpr::consent_store> store;
    std::vector<std::string> payloads;  // vehicle messages from 4096 different drivers

    consent_fixture() {
        char tmpl[] = "/tmp/gdpr-bench-XXXXXX";
        dir = ::mkdtemp(tmpl);
        store = gdpr::consent_store::open(dir + "/bench.db", purposes(), "OFF");
        for (int i = 0; i < SUBJECTS; ++i)
            store->set_consent("D-" + std::to_string(i), "route-analytics", true, "bench", "", nullptr);
        store->wait_idle();
        store->drain();
        for (int i = 0; i < 4096; ++i) {
            std::string m = MESSAGE;
            m.replace(m.find("D-1234"), 6, "D-" + std::to_string((i * 7919) % SUBJECTS));
            payloads.push_back(std::move(m));
        }
    }
    ~consent_fixture() {
        store.reset();
        std::filesystem::remove_all(dir);
    }
};

consent_fixture& consent_data() {
    static consent_fixture f;
    return f;
}

// Baseline for the two below: the same messages, consent taken as given (no lookup).
void BM_filter_vehicle_consent_given(benchmark::State& state) {
    auto& data = consent_data();
    gdpr::pseudonymiser ps(std::string(32, 'k'));
    gdpr::payload_filter filter(&ps);
    std::string out;
    std::size_t i = 0;
    for (auto _ : state) {
        auto r = filter.run(vehicle_schema(), ALL_CONSENT, data.payloads[i++ & 4095], out);
        benchmark::DoNotOptimize(r);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_filter_vehicle_consent_given);

// Resolve the subject from the payload, look up its consent among 100,000 subjects, filter.
void BM_filter_vehicle_consent_lookup_100k(benchmark::State& state) {
    auto& data = consent_data();
    gdpr::pseudonymiser ps(std::string(32, 'k'));
    gdpr::payload_filter filter(&ps);
    const auto& schema = vehicle_schema();
    std::string out, subject;
    std::size_t i = 0;
    for (auto _ : state) {
        const auto& payload = data.payloads[i++ & 4095];
        std::uint64_t mask = 0;
        if (gdpr::payload_filter::find_scalar(payload, schema.subject.pointer_tokens, subject))
            mask = data.store->granted_mask(subject);
        auto r = filter.run(schema, mask, payload, out);
        benchmark::DoNotOptimize(r);
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["subjects"] = static_cast<double>(data.store->subjects_with_consent());
}
BENCHMARK(BM_filter_vehicle_consent_lookup_100k);

// What a schema reload that starts pseudonymising the consent subject costs the broker thread
// once: the consent store indexes every subject with consent by pseudonym (one HMAC each).
void BM_index_pseudonyms_100k(benchmark::State& state) {
    auto& data = consent_data();
    gdpr::pseudonymiser ps(std::string(32, 'k'));
    for (auto _ : state) {
        data.store->index_pseudonyms([&ps](std::string_view subject) {
            std::string out;
            ps.append_pseudonym(subject, out);
            return out;
        });
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(data.store->subjects_with_consent()));
}
BENCHMARK(BM_index_pseudonyms_100k)->Unit(benchmark::kMillisecond);

// The whole per-publish path of the plugin's core: route, resolve, look up, filter.
void BM_classify_vehicle_100k_subjects(benchmark::State& state) {
    auto& data = consent_data();
    gdpr::plugin_options o;
    o.schemas_dir = std::string(GDPR_SOURCE_DIR) + "/schemas";
    o.purposes_file = o.schemas_dir + "/purposes.json";
    gdpr::schema_set set = gdpr::load_schema_directory(o.schemas_dir, purposes());
    gdpr::classifier c(std::move(set), gdpr::unmatched_policy::pass,
                       std::make_unique<gdpr::pseudonymiser>(std::string(32, 'k')), purposes());
    c.attach_consent(data.store.get());
    std::size_t i = 0;
    for (auto _ : state) {
        auto v = c.classify("fleet/acme/vehicle/v1/telemetry", data.payloads[i++ & 4095], "vehicle-v1");
        benchmark::DoNotOptimize(v);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_classify_vehicle_100k_subjects);

// What the data map does on the broker thread for one publish of a subject's data reaching two
// subscribers, in steady state (every one of 100,000 subjects already has these holders): find
// the subject's entry, and see that the publisher and both recipients are known. With the
// argument 1, as the plugin runs with a pseudonymisation key: the forwarded payload (the example
// telemetry, its driver id pseudonymised) is searched for the subject's id, and the recipients
// are pseudonymous ones.
void BM_data_map_publish_two_deliveries_100k(benchmark::State& state) {
    char tmpl[] = "/tmp/gdpr-bench-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    {
        auto map = gdpr::data_map::open(dir + "/map.db", "OFF", [](std::string_view s) { return "ref:" + std::string(s); });
        const bool pseudonymous = state.range(0) == 1;
        map->names_by_pseudonym(pseudonymous);
        const std::string forwarded =
            R"({"driver_id":"5d41402abc4b2a76b9719d911017c592","gps":{"lat":48.14,"lon":11.58},"speed":87.5,)"
            R"("heading":270,"odometer":123456,"engine":{"rpm":2100,"coolant_c":88},"ts":"2026-12-07T10:00:00Z"})";
        const gdpr::forwarded_message seen{forwarded};
        std::vector<std::vector<std::string>> subjects;
        for (int i = 0; i < SUBJECTS; ++i) subjects.push_back({"D-" + std::to_string(i)});
        const std::string topic = "fleet/acme/vehicle/v1/telemetry";
        const auto one = [&](std::size_t i) {
            const void* identity = &subjects[i];
            map->published(subjects[i], i % 2 ? "vehicle-a" : "vehicle-b", topic, false, identity, true,
                           pseudonymous ? &seen : nullptr);
            map->delivered("dashboard-1", topic, identity);
            map->delivered("dashboard-2", topic, identity);
        };
        for (std::size_t i = 0; i < SUBJECTS; ++i) one(i);
        for (std::size_t i = 0; i < SUBJECTS; ++i) one(i);
        map->wait_idle();
        std::size_t i = 0;
        for (auto _ : state) {
            one(i);
            i = (i + 7919) % SUBJECTS;
        }
        state.SetItemsProcessed(state.iterations());
        state.counters["subjects"] = static_cast<double>(map->subjects());
    }
    std::filesystem::remove_all(dir);
}
BENCHMARK(BM_data_map_publish_two_deliveries_100k)->Arg(0)->Arg(1);

void BM_route_topic(benchmark::State& state) {
    const auto& set = example_schemas();
    for (auto _ : state) {
        auto r = set.router.route("fleet/acme/vehicle/v1/telemetry");
        benchmark::DoNotOptimize(r);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_route_topic);

// Not per message: what a schema reload costs the broker thread to compare the schemas in use
// with the new ones (compare_schema_sets), here 1,000 schemas with two filters and a consent
// field each, the new set one schema larger.
void BM_reload_comparison_1000_schemas(benchmark::State& state) {
    const auto dir = std::filesystem::temp_directory_path() / ("gdpr-bench-reload-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto write = [&](int i) {
        std::ofstream(dir / ("s" + std::to_string(i) + ".json"))
            << R"({"id":"site-)" << i << R"(","version":1,"topics":["site/)" << i << R"(/+/telemetry","org/dev-)" << i
            << R"(/#"],"subject":{"field":"/driver_id"},"fields":{)"
            << R"("/driver_id":{"category":"identifier","personal":true,"purpose":"fleet-operations","action":"keep"},)"
            << R"("/gps":{"category":"location","personal":true,"purpose":"route-analytics","action":"keep"}}})";
    };
    for (int i = 0; i < 1000; ++i) write(i);
    const auto before = gdpr::load_schema_directory(dir.string(), purposes());
    write(1000);
    const auto after = gdpr::load_schema_directory(dir.string(), purposes());
    std::filesystem::remove_all(dir);
    for (auto _ : state) {
        auto changes = gdpr::compare_schema_sets(before, after);
        benchmark::DoNotOptimize(changes);
    }
}
BENCHMARK(BM_reload_comparison_1000_schemas)->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
