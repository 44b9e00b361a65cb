#pragma once
// Routes a published topic to the schema whose topic filter matches it most specifically.
//
// Specificity is decided level by level from the left: a literal level beats '+', '+' beats '#',
// and a filter that ends exactly at the topic's last level beats a trailing '#' (which may match
// zero levels). The first level where two matching filters differ decides, so the result never
// depends on the order in which schemas were loaded. Filters starting with a wildcard never match
// topics starting with '$' (MQTT 5 §4.7.2).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gdpr {

class topic_router {
public:
    static constexpr std::int32_t NO_ROUTE = -1;

    topic_router();
    ~topic_router();
    topic_router(topic_router&&) noexcept;
    topic_router& operator=(topic_router&&) noexcept;

    // Adds `filter` routing to `target` (>= 0). Throws std::invalid_argument when the filter is
    // invalid or already routed (to any target): two schemas may not claim the same filter.
    void add(std::string_view filter, std::int32_t target);

    // Returns the target of the most specific matching filter, or NO_ROUTE. `topic` must be a
    // valid topic name (no wildcards). Allocation-free.
    std::int32_t route(std::string_view topic) const;

    std::size_t size() const { return count_; }

private:
    struct node;
    std::int32_t match(const node& n, std::string_view rest, bool at_end, bool at_root,
                       bool dollar) const;
    std::unique_ptr<node> root_;
    std::size_t count_ = 0;
};

// Negative when `a` is more specific than `b`, positive when less, 0 when identical, by the rule
// above. Used to explain overlaps.
int compare_filter_specificity(std::string_view a, std::string_view b);

// True when some topic name matches both filters.
bool filters_overlap(std::string_view a, std::string_view b);

// Topic filters arranged so that those overlapping a given filter are found without trying each
// one. Holds views of the filters added: they must outlive the index.
class overlap_index {
public:
    overlap_index();
    ~overlap_index();
    overlap_index(const overlap_index&) = delete;
    overlap_index& operator=(const overlap_index&) = delete;

    // `filter` must be valid.
    void add(std::string_view filter, std::size_t target);
    // Calls visit(filter, target) once for each filter added that overlaps `filter` (as
    // filters_overlap decides), in no particular order.
    void each_overlapping(std::string_view filter,
                          const std::function<void(std::string_view, std::size_t)>& visit) const;

private:
    struct node;
    std::unique_ptr<node> root_;
};

// The filter that matches exactly the topic names both filters match ("a/+/#" and "+/b" give
// "a/b"), or nothing when they share none.
std::optional<std::string> intersect_filters(std::string_view a, std::string_view b);

} // namespace gdpr
