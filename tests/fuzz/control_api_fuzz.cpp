// libFuzzer target: the control API's command parser and commands, as an operator would send
// them, against a real consent store (SQLite in a temporary file). Every message must be answered
// exactly once with a JSON document.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "gdpr/classifier.hpp"
#include "gdpr/consent_store.hpp"
#include "gdpr/control_api.hpp"
#include "gdpr/pseudonymiser.hpp"

namespace {

struct rig {
    gdpr::purpose_registry purposes = fuzz_support::purposes();
    std::string db = (std::filesystem::temp_directory_path() / ("gdpr-fuzz-" + std::to_string(::getpid()) + ".db")).string();
    std::unique_ptr<gdpr::consent_store> store;
    std::unique_ptr<gdpr::classifier> engine;
    gdpr::logger log;
    std::unique_ptr<gdpr::control_api> api;
    rig() {
        store = gdpr::consent_store::open(db, purposes, "OFF");
        gdpr::schema_set set;
        set.schemas.push_back(gdpr::parse_schema(fuzz_support::SCHEMAS[0], "fuzz", purposes));
        set.router.add(set.schemas[0].topics[0], 0);
        engine = std::make_unique<gdpr::classifier>(std::move(set), gdpr::unmatched_policy::pass,
                                                    std::make_unique<gdpr::pseudonymiser>(fuzz_support::key()), purposes);
        engine->attach_consent(store.get());
        api = std::make_unique<gdpr::control_api>(*engine, *store, engine->purposes(),
                                                  gdpr::operator_list{{}, {"fuzz-operator"}, {}}, log);
    }
    ~rig() {
        api.reset();
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
    };
    // An operator (all commands run) and a stranger (all refused).
    const bool as_operator = size == 0 || (data[0] & 1) == 0;
    r.api->handle({as_operator ? "fuzz-operator" : "stranger", "", ""}, payload, check);
    // Commands that wait for durability run on from the store's completions, one at a time.
    for (std::size_t i = 0; answers == 0 && i <= gdpr::control_api::MAX_COMMANDS; ++i) {
        r.store->wait_idle();
        r.store->drain();
    }
    if (answers != 1) std::abort();
    return 0;
}
