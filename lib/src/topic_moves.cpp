#include "gdpr/topic_moves.hpp"

#include <algorithm>
#include <cstdint>
#include <set>
#include <utility>

#include "gdpr/topic_filter.hpp"
#include "gdpr/topic_router.hpp"

namespace gdpr {

namespace {

// Example topics of a filter, routed through both sets to find where its topics go: a "+" stands
// as a level no filter of either set names, and a trailing '#' as zero, one, ... such levels, up
// to one past the deepest filter that overlaps it (past that, only '#' filters match).
class example_topics {
public:
    example_topics(const schema_set& before, const schema_set& after) {
        std::set<std::string_view> named;
        for (const auto* set : {&before, &after})
            for (const auto& s : set->schemas)
                for (const auto& filter : s.topics) {
                    const auto levels = split_topic_levels(filter);
                    named.insert(levels.begin(), levels.end());
                    filters_.add(filter, levels.size());
                }
        while (named.count(unnamed_)) unnamed_ += '~';
    }

    template <class Visit> void each(std::string_view filter, const Visit& visit) const {
        auto levels = split_topic_levels(filter);
        const bool open_ended = levels.back() == "#";
        if (open_ended) levels.pop_back();
        std::string topic;
        for (std::size_t i = 0; i < levels.size(); ++i) {
            if (i) topic += '/';
            topic += levels[i] == "+" ? std::string_view(unnamed_) : levels[i];
        }
        if (!topic.empty()) visit(topic);  // "/#" leaves "", which is no topic
        if (!open_ended) return;
        std::size_t deepest = 0;
        filters_.each_overlapping(filter, [&](std::string_view, std::size_t depth) { deepest = std::max(deepest, depth); });
        for (std::size_t depth = levels.size(); depth <= deepest; ++depth) {
            topic += (depth ? "/" : "") + unnamed_;
            visit(topic);
        }
    }

private:
    std::string unnamed_ = "~";
    overlap_index filters_;  // every filter of both sets -> its number of levels
};

} // namespace

std::vector<topic_move> find_topic_moves(const schema_set& before, const schema_set& after, unmatched_policy unmatched,
                                         const std::function<bool(const schema&)>& followed) {
    std::set<std::string_view> kept_ids;
    for (const auto& s : after.schemas) kept_ids.insert(s.id);
    const example_topics examples(before, after);
    overlap_index new_filters;
    for (std::size_t i = 0; i < after.schemas.size(); ++i)
        for (const auto& filter : after.schemas[i].topics) new_filters.add(filter, i);
    std::vector<topic_move> moves;
    std::set<std::pair<std::size_t, std::size_t>> found;  // indexes into before, after (SIZE_MAX: none)
    auto check = [&](const std::string& filter) {
        examples.each(filter, [&](const std::string& topic) {
            const auto was = before.router.route(topic);
            if (was == topic_router::NO_ROUTE) return;
            const schema& old = before.schemas[static_cast<std::size_t>(was)];
            if (!followed(old)) return;
            const auto now = after.router.route(topic);
            if (now != topic_router::NO_ROUTE && after.schemas[static_cast<std::size_t>(now)].id == old.id) return;
            if (now == topic_router::NO_ROUTE && (unmatched == unmatched_policy::deny || !kept_ids.count(old.id))) return;
            const std::size_t now_index = now == topic_router::NO_ROUTE ? SIZE_MAX : static_cast<std::size_t>(now);
            if (!found.emplace(static_cast<std::size_t>(was), now_index).second) return;
            moves.push_back({&old, now_index == SIZE_MAX ? nullptr : &after.schemas[now_index], filter});
        });
    };
    for (const auto& old : before.schemas) {
        if (!followed(old)) continue;
        for (const auto& filter : old.topics) {
            new_filters.each_overlapping(filter, [&](std::string_view other_filter, std::size_t other) {
                if (after.schemas[other].id == old.id) return;
                if (auto shared = intersect_filters(filter, other_filter)) check(*shared);
            });
            check(filter);
        }
    }
    return moves;
}

} // namespace gdpr
