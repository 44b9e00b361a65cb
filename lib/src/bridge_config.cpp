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
    std::error_code ec;
    if (!fs::exists(path, ec)) fail(path, "does not exist");
    if (!fs::is_regular_file(path, ec)) fail(path, "is not a regular file");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot be opened for reading");
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) fail(path, "could not be read");
    const std::string dir = fs::path(path).parent_path().string();
    parse_into(text.str(), path, dir.empty() ? "." : dir, bridges, depth);
}

void parse_into(std::string_view text, const std::string& name, const std::string& dir,
                std::vector<configured_bridge>& bridges, int depth) {
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
        auto w = words(line);
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
            // Like Mosquitto, a word from the QoS on that starts with '#' begins a comment: in
            // "topic home/# out # to the partner", "to" is no local prefix.
            const auto comment = std::find_if(w.begin() + std::min<std::size_t>(w.size(), 3), w.end(),
                                              [](const std::string& word) { return !word.empty() && word[0] == '#'; });
            w.erase(comment, w.end());
            const std::string local_prefix = w.size() > 4 ? w[4] : "";
            std::string filter = local_prefix + w[1];
            // The bridge subscribes to its local topic as any client would: "$share/<group>/"
            // makes it one member of a shared subscription to the rest.
            if (const auto shared = parse_shared_subscription(filter)) {
                if (shared->group.empty() || shared->filter.empty())
                    fail(where, "topic \"" + filter + "\": a shared subscription needs a group and a filter");
                filter = std::string(shared->filter);
            }
            if (const auto problem = topic_filter_problem(filter); !problem.empty())
                fail(where, "topic \"" + filter + "\": " + problem);
            bridges[current].outbound_topics.push_back(filter);
        } else if (w[0] == "include_dir") {
            // Mosquitto follows include_dir in its main file only, and takes the rest of the line.
            if (depth > 0) continue;
            std::string rest = line.substr(first + std::string("include_dir").size());
            rest.erase(0, rest.find_first_not_of(" \t"));
            rest.erase(rest.find_last_not_of(" \t") + 1);
            if (rest.empty()) fail(where, "include_dir needs a directory");
            fs::path included = rest;
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
