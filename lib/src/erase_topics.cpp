#include <stdexcept>

#include "gdpr/erasure.hpp"

namespace gdpr {

erase_topics::erase_topics(std::string pattern) : pattern_(std::move(pattern)) {
    if (pattern_.find_first_of("+#") != std::string::npos || pattern_.find('\0') != std::string::npos)
        throw std::invalid_argument("the erase topic may not hold wildcards");
    std::size_t level_start = 0, found = std::string::npos, count = 0;
    for (std::size_t i = 0; i <= pattern_.size(); ++i) {
        if (i == pattern_.size() || pattern_[i] == '/') {
            if (std::string_view(pattern_).substr(level_start, i - level_start) == "%c") {
                found = level_start;
                ++count;
            }
            level_start = i + 1;
        }
    }
    if (count != 1 || pattern_.find("%c") != found || pattern_.find("%c", found + 2) != std::string::npos)
        throw std::invalid_argument("the erase topic must hold \"%c\" (the client id) exactly once, as a whole level");
    prefix_ = pattern_.substr(0, found);
    suffix_ = pattern_.substr(found + 2);
    if (prefix_.empty() && suffix_.empty())
        throw std::invalid_argument("the erase topic needs a level besides \"%c\": alone, every one-level topic would "
                                    "be an erase topic that only the client of that name may use");
    // Mosquitto hands every publish under $CONTROL/ to its control handlers, never to subscribers
    // or to the plugin's message check: no acknowledgement would arrive.
    if (pattern_.rfind("$CONTROL/", 0) == 0)
        throw std::invalid_argument("the erase topic may not lie under $CONTROL/, where the broker takes every publish "
                                    "for a control command");
    space_ = {prefix_ + "+" + suffix_, prefix_ + "+" + suffix_ + "/ack"};
}

std::string erase_topics::command_topic(std::string_view client_id) const {
    if (client_id.empty() || client_id.find_first_of(std::string_view("/+#\0", 4)) != std::string_view::npos) return {};
    std::string topic = prefix_;
    topic.append(client_id);
    topic.append(suffix_);
    return topic;
}

std::optional<erase_topics::addressed> erase_topics::parse(std::string_view topic) const {
    if (topic.size() <= prefix_.size() || topic.substr(0, prefix_.size()) != prefix_) return std::nullopt;
    std::string_view rest = topic.substr(prefix_.size());
    const auto ends_with = [](std::string_view s, std::string_view end) {
        return s.size() >= end.size() && s.substr(s.size() - end.size()) == end;
    };
    addressed a;
    const std::string ack_end = suffix_ + "/ack";
    if (ends_with(rest, ack_end)) {
        a.ack = true;
        rest.remove_suffix(ack_end.size());
    } else if (ends_with(rest, suffix_)) {
        rest.remove_suffix(suffix_.size());
    } else {
        return std::nullopt;
    }
    if (rest.empty() || rest.find('/') != std::string_view::npos) return std::nullopt;
    a.client_id = std::string(rest);
    return a;
}

} // namespace gdpr
