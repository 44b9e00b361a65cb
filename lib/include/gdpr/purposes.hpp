#pragma once
// Processing purposes and their lawful basis (GDPR Art. 6(1)), from purposes.json.
#include <map>
#include <optional>
#include <string>
#include <string_view>

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

    // GDPR Art. 6(1)(a): only purposes resting on consent need a consent record.
    bool needs_consent(std::string_view name) const {
        const purpose* p = find(name);
        return p == nullptr || p->basis == lawful_basis::consent;
    }

private:
    std::map<std::string, purpose, std::less<>> purposes_;
};

} // namespace gdpr
