#pragma once
// Shared by the libFuzzer targets: the rules they run with, built once per process.
#include <string>

#include "gdpr/purposes.hpp"
#include "gdpr/schema_loader.hpp"

namespace fuzz_support {

inline gdpr::purpose_registry purposes() {
    gdpr::purpose_registry r;
    r.add({"ops", gdpr::lawful_basis::contract, ""});
    r.add({"analytics", gdpr::lawful_basis::consent, ""});
    r.add({"safety", gdpr::lawful_basis::vital_interests, ""});
    return r;
}

// Every action, nested objects, array wildcards and positions, a payload subject, both unclassified
// policies.
inline const char* const SCHEMAS[] = {
    R"({"id":"telemetry","version":1,"topics":["fleet/+/telemetry"],"subject":{"field":"/driver_id"},
        "residency":"eu","unclassified":"drop","fields":{
        "/driver_id":{"category":"identifier","personal":true,"purpose":"ops","action":"pseudonymise"},
        "/driver_name":{"category":"identifier","personal":true,"purpose":"ops","action":"drop"},
        "/phone":{"category":"contact","personal":true,"purpose":"safety","action":"mask","mask":"***"},
        "/gps/lat":{"category":"location","personal":true,"purpose":"analytics","action":"generalise","decimals":2},
        "/gps/lon":{"category":"location","personal":true,"purpose":"analytics","action":"generalise","decimals":2},
        "/ts":{"category":"time","personal":true,"purpose":"ops","action":"generalise","truncate":"minute"},
        "/speed":{"category":"telemetry","personal":false}}})",
    R"({"id":"vitals","version":1,"topics":["health/+/vitals"],"subject":{"topicLevel":1},"unclassified":"keep",
        "fields":{
        "/readings/*/hr":{"category":"health","personal":true,"purpose":"analytics","action":"keep"},
        "/readings/*/ts":{"category":"time","personal":true,"purpose":"ops","action":"generalise","truncate":"hour","epoch":"ms"},
        "/readings/0/note":{"category":"health","personal":true,"purpose":"ops","action":"drop"},
        "/*/serial":{"category":"identifier","personal":true,"purpose":"ops","action":"pseudonymise"},
        "/battery":{"category":"device","personal":false}}})",
    // Rules that name array positions, some resting on consent: removals keep positions.
    R"({"id":"positions","version":1,"topics":["pos/+"],"unclassified":"drop","fields":{
        "/p/0":{"category":"location","personal":true,"purpose":"analytics","action":"keep"},
        "/p/1":{"category":"identifier","personal":true,"purpose":"ops","action":"keep"},
        "/p/2":{"category":"location","personal":true,"purpose":"analytics","action":"generalise","decimals":1},
        "/p/3/x":{"category":"health","personal":true,"purpose":"analytics","action":"keep"},
        "/p/3/y":{"category":"device","personal":false}}})",
};

inline const std::string& key() {
    static const std::string k = "fuzzing-key-0123456789abcdef0123456789";
    return k;
}

} // namespace fuzz_support
