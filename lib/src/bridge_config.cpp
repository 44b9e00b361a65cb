// Reads the bridge sections of a mosquitto.conf: Mosquitto does not show bridge traffic to
// plugins (no ACL check runs for bridges), so the plugin must know where each bridge goes.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gdpr/errors.hpp"
#include "gdpr/residency.hpp"
#include "gdpr/topic_filter.hpp"

namespace gdpr {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& where, const std::string& problem) {
    throw config_error("residency_file", "brokerConfig " + where + ": " + problem);
}

std::vector<std::string> words(const std::string& line) {
    std::vector<std::string> out;
    std::istringstream in(line);
    std::string w;
    while (in >> w) out.push_back(w == "\"\"" ? std::string() : w);
    return out;
}

void parse_into(std::string_view text, const std::string& name, const std::string& dir,
                std::vector<configured_bridge>& bridges, int depth);

void read_into(const std::string& path, std::vector<configured_bridge>& bridges, int depth) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot be opened for reading");
    std::ostringstream text;
    text << in.rdbuf();
    const std::string dir = fs::path(path).parent_path().string();
    parse_into(text.str(), path, dir.empty() ? "." : dir, bridges, depth);
}

void parse_into(std::string_view text, const std::string& name, const std::string& dir,
                std::vector<configured_bridge>& bridges, int depth) {
    if (depth > 8) fail(name, "include_dir nests too deeply");
    std::istringstream in{std::string(text)};
    std::string line;
    int number = 0;
    // Like Mosquitto, a bridge's lines belong to the file its connection line is in.
    std::size_t current = std::string::npos;
    while (std::getline(in, line)) {
        ++number;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const auto first = line.find_first_not_of(" \t");
        if (first == std::string::npos || line[first] == '#') continue;
        const auto w = words(line);
        if (w.empty()) continue;
        const std::string where = name + ":" + std::to_string(number);
        if (w[0] == "connection") {
            if (w.size() < 2 || w[1].empty()) fail(where, "connection needs a name");
            bridges.push_back({w[1], {}, where});
            current = bridges.size() - 1;
        } else if (w[0] == "topic") {
            if (current == std::string::npos) fail(where, "topic line outside a bridge connection");
            if (w.size() < 2) fail(where, "topic needs a pattern");
            std::string direction = w.size() > 2 ? w[2] : "out";
            std::transform(direction.begin(), direction.end(), direction.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            if (direction != "out" && direction != "in" && direction != "both")
                fail(where, "topic direction \"" + direction + "\" is not in, out or both");
            if (direction == "in") continue;  // carried towards this broker, not away from it
            const std::string local_prefix = w.size() > 4 ? w[4] : "";
            const std::string filter = local_prefix + w[1];
            if (const auto problem = topic_filter_problem(filter); !problem.empty())
                fail(where, "topic \"" + filter + "\": " + problem);
            bridges[current].outbound_topics.push_back(filter);
        } else if (w[0] == "include_dir") {
            if (w.size() < 2) fail(where, "include_dir needs a directory");
            fs::path included = w[1];
            if (included.is_relative()) included = fs::path(dir) / included;
            std::error_code ec;
            std::vector<std::string> files;
            for (fs::directory_iterator it(included, ec), end; !ec && it != end; it.increment(ec)) {
                if (it->path().extension() == ".conf") files.push_back(it->path().string());
            }
            if (ec) fail(where, "include_dir " + included.string() + ": " + ec.message());
            std::sort(files.begin(), files.end());  // Mosquitto reads them in this order too
            for (const auto& f : files) read_into(f, bridges, depth + 1);
        }
    }
}

} // namespace

std::vector<configured_bridge> read_bridge_config(const std::string& path) {
    std::vector<configured_bridge> bridges;
    read_into(path, bridges, 0);
    return bridges;
}

std::vector<configured_bridge> parse_bridge_config(std::string_view text, const std::string& name,
                                                   const std::string& dir) {
    std::vector<configured_bridge> bridges;
    parse_into(text, name, dir, bridges, 0);
    return bridges;
}

} // namespace gdpr
