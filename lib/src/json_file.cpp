#include "json_file.hpp"

#include <fstream>
#include <sstream>
#include <unordered_set>
#include <vector>

#include "gdpr/errors.hpp"

namespace gdpr::json_file {

using json = nlohmann::json;

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw schema_error(path.string(), "cannot be opened for reading");
    std::ostringstream buf;
    buf << in.rdbuf();
    if (in.bad()) throw schema_error(path.string(), "read error");
    return buf.str();
}

json parse_unique_keys(std::string_view text) {
    std::vector<std::unordered_set<std::string>> names;  // per object being read
    return json::parse(text.begin(), text.end(), [&names](int, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::object_start) {
            names.emplace_back();
        } else if (event == json::parse_event_t::object_end) {
            names.pop_back();
        } else if (event == json::parse_event_t::key && !names.empty()) {
            const auto& key = parsed.get_ref<const std::string&>();
            if (!names.back().insert(key).second) throw duplicate_key(key);
        }
        return true;
    });
}

json parse_json(std::string_view text, const std::string& file) {
    try {
        return parse_unique_keys(text);
    } catch (const duplicate_key& e) {
        throw schema_error(file, e.what());
    } catch (const json::parse_error& e) {
        // e.byte is 1-based; report line and column for humans.
        std::size_t line = 1, col = 1;
        for (std::size_t i = 0; i + 1 < e.byte && i < text.size(); ++i) {
            if (text[i] == '\n') { ++line; col = 1; } else { ++col; }
        }
        throw schema_error(file, "not valid JSON at line " + std::to_string(line) + ", column " +
                                     std::to_string(col));
    } catch (const json::exception&) {  // a number beyond a double's range (1e999)
        throw schema_error(file, "holds a number out of range");
    }
}

void only_keys(const json& obj, const std::string& where, std::initializer_list<const char*> allowed,
               const std::string& file) {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        bool ok = false;
        for (const char* a : allowed) ok = ok || it.key() == a;
        if (ok) continue;
        std::string known;
        for (const char* a : allowed) known += (known.empty() ? "" : ", ") + std::string(a);
        throw schema_error(file, where + ": unknown key \"" + it.key() + "\" (known: " + known + ")");
    }
}

const json& require(const json& obj, const char* key, const std::string& where, const std::string& file) {
    auto it = obj.find(key);
    if (it == obj.end()) throw schema_error(file, where + ": missing required key \"" + key + "\"");
    return *it;
}

std::string as_string(const json& v, const std::string& where, const std::string& file) {
    if (!v.is_string()) throw schema_error(file, where + ": must be a string");
    return v.get<std::string>();
}

} // namespace gdpr::json_file
