// libFuzzer target: the control API's command parser and commands, as an operator would send
// them, against a real consent store and audit trail (SQLite in a temporary file), with exports
// read by a real export worker. Every message must be answered exactly once with a JSON document
// that has one response and one outcome per command.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "gdpr/audit_log.hpp"
#include "gdpr/classifier.hpp"
#include "gdpr/consent_store.hpp"
#include "gdpr/control_api.hpp"
#include "gdpr/pseudonymiser.hpp"
#include "gdpr/storage_worker.hpp"

namespace {

struct rig {
    gdpr::purpose_registry purposes = fuzz_support::purposes();
    std::string db = (std::filesystem::temp_directory_path() / ("gdpr-fuzz-" + std::to_string(::getpid()) + ".db")).string();
    std::unique_ptr<gdpr::consent_store> store;
    std::shared_ptr<gdpr::audit_keys> keys = std::make_shared<gdpr::audit_keys>(std::string(32, 'k'));
    std::unique_ptr<gdpr::audit_log> trail;
    std::unique_ptr<gdpr::storage_worker> exports;
    std::unique_ptr<gdpr::classifier> engine;
    gdpr::logger log;
    std::unique_ptr<gdpr::control_api> api;
    rig() {
        store = gdpr::consent_store::open(db, purposes, "OFF");
        gdpr::audit_options o;
        o.path = db;
        trail = gdpr::audit_log::open(o, keys);
        // Something to export: the corpus asks for D-1 and D-2.
        for (const char* subject : {"D-1", "D-2", "D-1"}) {
            gdpr::audit_record rec;
            rec.at_ms = 1'795'000'000'000;
            rec.kind = gdpr::audit_kind::publish;
            rec.client_id = "car-1";
            rec.schema = "vehicle@1";
            rec.detail = R"({"topic":"fleet/car-1/telemetry"})";
            rec.personal = R"({"payload":{"speed":61,"driver_name":"\u00e9 \"quoted\""}})";
            rec.subjects = {subject};
            trail->append(std::move(rec));
        }
        if (!trail->flush()) std::abort();
        exports = std::make_unique<gdpr::storage_worker>(std::make_unique<gdpr::sqlite_db>(db, gdpr::sqlite_db::read_only),
                                                         "gdpr-export", gdpr::storage_worker::batching::none);
        gdpr::schema_set set;
        set.schemas.push_back(gdpr::parse_schema(fuzz_support::SCHEMAS[0], "fuzz", purposes));
        set.router.add(set.schemas[0].topics[0], 0);
        engine = std::make_unique<gdpr::classifier>(std::move(set), gdpr::unmatched_policy::pass,
                                                    std::make_unique<gdpr::pseudonymiser>(fuzz_support::key()), purposes);
        engine->attach_consent(store.get());
        api = std::make_unique<gdpr::control_api>(*engine, *store, engine->purposes(),
                                                  gdpr::named_clients{{}, {"fuzz-operator"}, {}}, log);
        api->attach_export(exports.get(), keys, gdpr::control_api::MAX_EXPORT_BYTES);
    }
    ~rig() {
        api.reset();
        exports.reset();
        trail.reset();
        store.reset();
        std::error_code ec;
        for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db + suffix, ec);
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static rig r;
    const std::string_view payload(reinterpret_cast<const char*>(data), size);
    int answers = 0;
    auto check = [&answers](const std::string& response, const gdpr::control_api::command_outcomes& outcomes) {
        ++answers;
        const auto reply = nlohmann::json::parse(response, nullptr, false);
        if (!reply.is_object() || !reply.contains("responses") || reply["responses"].size() != outcomes.size()) std::abort();
        // An export's document is spliced into the answer as text: it must come out whole.
        for (const auto& res : reply["responses"]) {
            if (!res.is_object() || res.value("command", "") != "exportSubject" || res.contains("error")) continue;
            using ptr = nlohmann::json::json_pointer;
            const auto is_array_at = [&res](const char* path) { return res.contains(ptr(path)) && res.at(ptr(path)).is_array(); };
            if (!is_array_at("/data/records") || !is_array_at("/data/consent/granted")) std::abort();
        }
    };
    // An operator (all commands run), or a stranger (all refused) when the message starts with a space.
    const bool as_operator = size == 0 || data[0] != ' ';
    r.api->handle({as_operator ? "fuzz-operator" : "stranger", "", ""}, payload, check);
    // Commands that wait for durability or an export run on from their completions, one at a time.
    for (std::size_t i = 0; answers == 0 && i <= 2 * gdpr::control_api::MAX_COMMANDS; ++i) {
        r.exports->wait_idle();
        r.exports->drain();
        r.store->wait_idle();
        r.store->drain();
    }
    if (answers != 1) std::abort();
    return 0;
}
