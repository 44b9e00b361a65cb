#pragma once
// MQTT topic name / topic filter syntax (MQTT 3.1.1 §4.7, MQTT 5 §4.7).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gdpr {

// Returns an empty string when `filter` is a valid subscription filter, else the problem.
// Rules: non-empty, at most 65535 bytes, no NUL, '#' only as the whole last level,
// '+' only as a whole level.
std::string topic_filter_problem(std::string_view filter);

// True when `topic` is a valid topic name for a PUBLISH: non-empty, no NUL, no wildcards.
bool is_valid_topic_name(std::string_view topic);

// A shared subscription "$share/<group>/<filter>" (MQTT 5 §4.8.2): its group, and the filter the
// broker matches (empty when nothing follows the group). Nothing for any other filter.
struct shared_subscription {
    std::string_view group;
    std::string_view filter;
};
std::optional<shared_subscription> parse_shared_subscription(std::string_view filter);

// Splits on '/', keeping empty levels ("a//b" has three levels, "/a" has two).
std::vector<std::string_view> split_topic_levels(std::string_view topic);

// True when `filter` matches `topic` with MQTT semantics; a leading wildcard never matches a
// topic that starts with '$'. Both must be valid.
bool topic_matches(std::string_view filter, std::string_view topic);

} // namespace gdpr
