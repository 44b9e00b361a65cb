#pragma once
// Shared helpers for unit tests: build schemas from inline JSON, temporary directories.
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "gdpr/pseudonymiser.hpp"
#include "gdpr/purposes.hpp"
#include "gdpr/schema_loader.hpp"

namespace test_support {

// A subject's name as the data map stores it under a key file (32 hex digits, like the audit
// key's reference): a name of any other form would be taken for an id written before the key.
inline std::string keyed_ref(std::string_view subject) {
    static const gdpr::pseudonymiser key(std::string(32, 'r'));
    return key.pseudonym(subject);
}

inline gdpr::purpose_registry test_purposes() {
    gdpr::purpose_registry r;
    r.add({"ops", gdpr::lawful_basis::contract, ""});
    r.add({"analytics", gdpr::lawful_basis::consent, ""});
    return r;
}

inline gdpr::schema make_schema(const std::string& json) {
    return gdpr::parse_schema(json, "inline.json", test_purposes());
}

class temp_dir {
public:
    temp_dir() {
        std::random_device rd;
        path_ = std::filesystem::temp_directory_path() / ("gdpr-unit-" + std::to_string(rd()) + std::to_string(rd()));
        std::filesystem::create_directories(path_);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::string write(const std::string& name, const std::string& content) const {
        const auto p = path_ / name;
        std::ofstream(p, std::ios::binary) << content;
        return p.string();
    }

private:
    std::filesystem::path path_;
};

} // namespace test_support
