#include "gdpr/purposes.hpp"

#include <nlohmann/json.hpp>

namespace gdpr {

purpose_changes compare_purposes(const purpose_registry& before, const purpose_registry& after) {
    purpose_changes c;
    for (const auto& name : after.names()) {
        const purpose& now = *after.find(name);
        const purpose* was = before.find(name);
        if (!was) {
            c.added.push_back(name + " (" + std::string(to_string(now.basis)) + ")");
        } else if (was->basis != now.basis) {
            c.basis_changed.push_back(name + ": " + std::string(to_string(was->basis)) + " -> " +
                                      std::string(to_string(now.basis)));
            if (was->basis == lawful_basis::consent) c.leaving_consent.push_back(name);
        }
        if (was && was->description != now.description) c.described.push_back(name);
    }
    for (const auto& name : before.names())
        if (!after.find(name)) c.removed.push_back(name);
    return c;  // names() is sorted, so is every list
}

nlohmann::json to_json(const purpose_changes& c) {
    return {{"added", c.added},           {"removed", c.removed},         {"basisChanged", c.basis_changed},
            {"described", c.described},   {"grantsHeld", c.grants_held},  {"grantsRevived", c.grants_revived}};
}

} // namespace gdpr
