#pragma once
// Reading the JSON definition files (schemas, purposes, processing details): every problem is a
// schema_error that names the file and the JSON path.
#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace gdpr::json_file {

std::string read_file(const std::filesystem::path& path);
// Parses `text`; a syntax error names its line and column.
nlohmann::json parse_json(std::string_view text, const std::string& file);
// Checks an object's keys against the allowed set.
void only_keys(const nlohmann::json& obj, const std::string& where, std::initializer_list<const char*> allowed,
               const std::string& file);
const nlohmann::json& require(const nlohmann::json& obj, const char* key, const std::string& where, const std::string& file);
std::string as_string(const nlohmann::json& v, const std::string& where, const std::string& file);

} // namespace gdpr::json_file
