#pragma once
// Reading the JSON definition files (schemas, purposes, processing details): every problem is a
// schema_error that names the file and the JSON path.
#include <filesystem>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace gdpr::json_file {

std::string read_file(const std::filesystem::path& path);
// A member name given twice in one object of a definition file: with the last one winning, a
// copy-paste or a merge could quietly undo a rule, so such a file is refused.
struct duplicate_key : std::runtime_error {
    explicit duplicate_key(const std::string& key)
        : std::runtime_error("the key \"" + key + "\" appears twice in one object"), key(key) {}
    std::string key;
};
// nlohmann::json::parse that throws duplicate_key (names compared once unescaped: "a\u0062" is "ab").
nlohmann::json parse_unique_keys(std::string_view text);
// Parses `text`; a syntax error names its line and column.
nlohmann::json parse_json(std::string_view text, const std::string& file);
// Checks an object's keys against the allowed set.
void only_keys(const nlohmann::json& obj, const std::string& where, std::initializer_list<const char*> allowed,
               const std::string& file);
const nlohmann::json& require(const nlohmann::json& obj, const char* key, const std::string& where, const std::string& file);
std::string as_string(const nlohmann::json& v, const std::string& where, const std::string& file);

} // namespace gdpr::json_file
