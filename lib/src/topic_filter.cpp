#include "gdpr/topic_filter.hpp"

namespace gdpr {

std::string topic_filter_problem(std::string_view filter) {
    if (filter.empty()) return "topic filter is empty";
    if (filter.size() > 65535) return "topic filter is longer than 65535 bytes";
    if (filter.find('\0') != std::string_view::npos) return "topic filter contains a NUL character";
    const auto levels = split_topic_levels(filter);
    for (std::size_t i = 0; i < levels.size(); ++i) {
        const auto level = levels[i];
        if (level.find('#') != std::string_view::npos) {
            if (level != "#") return "'#' must occupy a whole topic level";
            if (i + 1 != levels.size()) return "'#' must be the last topic level";
        }
        if (level.find('+') != std::string_view::npos && level != "+")
            return "'+' must occupy a whole topic level";
    }
    return {};
}

bool is_valid_topic_name(std::string_view topic) {
    if (topic.empty() || topic.size() > 65535) return false;
    for (char c : topic) {
        if (c == '\0' || c == '+' || c == '#') return false;
    }
    return true;
}

std::optional<shared_subscription> parse_shared_subscription(std::string_view filter) {
    constexpr std::string_view SHARE = "$share/";
    if (filter.substr(0, SHARE.size()) != SHARE) return std::nullopt;
    const auto rest = filter.substr(SHARE.size());
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos) return shared_subscription{rest, {}};
    return shared_subscription{rest.substr(0, slash), rest.substr(slash + 1)};
}

std::vector<std::string_view> split_topic_levels(std::string_view topic) {
    std::vector<std::string_view> levels;
    std::size_t start = 0;
    while (true) {
        const auto slash = topic.find('/', start);
        if (slash == std::string_view::npos) {
            levels.push_back(topic.substr(start));
            return levels;
        }
        levels.push_back(topic.substr(start, slash - start));
        start = slash + 1;
    }
}

bool topic_matches(std::string_view filter, std::string_view topic) {
    const auto f = split_topic_levels(filter);
    const auto t = split_topic_levels(topic);
    if (!topic.empty() && topic.front() == '$' && (f.front() == "+" || f.front() == "#")) return false;
    std::size_t i = 0;
    for (; i < f.size(); ++i) {
        if (f[i] == "#") return true;
        if (i >= t.size()) return false;
        if (f[i] != "+" && f[i] != t[i]) return false;
    }
    return i == t.size();
}

} // namespace gdpr
