#pragma once
// Processing purposes and their lawful basis (GDPR Art. 6(1)), from purposes.json.
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gdpr {

enum class lawful_basis { consent, contract, legal_obligation, vital_interests, public_task, legitimate_interests };

std::optional<lawful_basis> parse_lawful_basis(std::string_view text);
std::string_view to_string(lawful_basis basis);

struct purpose {
    std::string name;
    lawful_basis basis = lawful_basis::consent;
    std::string description;
};

class purpose_registry {
public:
    void add(purpose p) { std::string key = p.name; purposes_[std::move(key)] = std::move(p); }
    const purpose* find(std::string_view name) const {
        auto it = purposes_.find(name);
        return it == purposes_.end() ? nullptr : &it->second;
    }
    std::size_t size() const { return purposes_.size(); }
    // Purpose names in sorted order.
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& entry : purposes_) out.push_back(entry.first);
        return out;
    }

    // Index of a consent-based purpose among all consent-based purposes in name order (the bit it
    // occupies in a consent mask), or -1 when the purpose needs no consent record.
    int consent_bit(std::string_view name) const {
        int bit = 0;
        for (const auto& entry : purposes_) {
            if (entry.second.basis != lawful_basis::consent) continue;
            if (entry.first == name) return bit;
            ++bit;
        }
        return -1;
    }

    // GDPR Art. 6(1)(a): only purposes resting on consent need a consent record.
    bool needs_consent(std::string_view name) const {
        const purpose* p = find(name);
        return p == nullptr || p->basis == lawful_basis::consent;
    }

private:
    std::map<std::string, purpose, std::less<>> purposes_;
};

// What a reload of purposes.json changes, each list sorted by name.
struct purpose_changes {
    std::vector<std::string> added;          // "name (basis)"
    std::vector<std::string> removed;        // names
    std::vector<std::string> basis_changed;  // "name: old -> new"
    // Purposes that rested on consent and now rest on another basis: their fields would pass
    // without a consent record (GDPR Art. 6(1), 13(1)(c)). Names.
    std::vector<std::string> leaving_consent;
    std::vector<std::string> described;  // names whose description (what subjects are told) changed
    // Filled in by whoever applies the change to the consent store (consent_store::use_purposes):
    // purpose -> grants that stopped counting, and held grants that count again.
    std::map<std::string, std::size_t> grants_held, grants_revived;
    bool any() const { return !added.empty() || !removed.empty() || !basis_changed.empty() || !described.empty(); }
};
purpose_changes compare_purposes(const purpose_registry& before, const purpose_registry& after);
// As the reloadSchemas answer and the audit trail show them: added, removed, basisChanged,
// described, grantsHeld, grantsRevived.
nlohmann::json to_json(const purpose_changes& changes);

} // namespace gdpr
