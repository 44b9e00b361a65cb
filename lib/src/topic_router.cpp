#include "gdpr/topic_router.hpp"

#include <algorithm>
#include <map>
#include <stdexcept>

#include "gdpr/topic_filter.hpp"

namespace gdpr {

struct topic_router::node {
    std::string name;  // owns the key this node is filed under in its parent's `literal`
    std::unordered_map<std::string_view, std::unique_ptr<node>> literal;
    std::unique_ptr<node> plus;
    std::int32_t exact = NO_ROUTE;  // a filter ends at this node
    std::int32_t hash = NO_ROUTE;   // a filter continues with '#' at this node
};

topic_router::topic_router() : root_(std::make_unique<node>()) {}
topic_router::~topic_router() = default;
topic_router::topic_router(topic_router&&) noexcept = default;
topic_router& topic_router::operator=(topic_router&&) noexcept = default;

void topic_router::add(std::string_view filter, std::int32_t target) {
    if (target < 0) throw std::invalid_argument("route target must be >= 0");
    if (auto problem = topic_filter_problem(filter); !problem.empty())
        throw std::invalid_argument(problem);
    node* n = root_.get();
    for (auto level : split_topic_levels(filter)) {
        if (level == "#") {
            if (n->hash != NO_ROUTE) throw std::invalid_argument("topic filter is already routed");
            n->hash = target;
            ++count_;
            return;
        }
        if (level == "+") {
            if (!n->plus) n->plus = std::make_unique<node>();
            n = n->plus.get();
            continue;
        }
        auto it = n->literal.find(level);
        if (it == n->literal.end()) {
            auto child = std::make_unique<node>();
            child->name = std::string(level);
            const std::string_view key = child->name;
            it = n->literal.emplace(key, std::move(child)).first;
        }
        n = it->second.get();
    }
    if (n->exact != NO_ROUTE) throw std::invalid_argument("topic filter is already routed");
    n->exact = target;
    ++count_;
}

// `rest` holds the unconsumed levels; `at_end` is true once every level has been consumed
// (distinguishes "a/" with an empty last level from "a").
std::int32_t topic_router::match(const node& n, std::string_view rest, bool at_end, bool at_root,
                                 bool dollar) const {
    if (at_end) {
        if (n.exact != NO_ROUTE) return n.exact;
        return (at_root && dollar) ? NO_ROUTE : n.hash;
    }
    const auto slash = rest.find('/');
    const std::string_view level = rest.substr(0, slash);
    const std::string_view next = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    const bool next_at_end = slash == std::string_view::npos;

    if (!n.literal.empty()) {
        auto it = n.literal.find(level);
        if (it != n.literal.end()) {
            auto r = match(*it->second, next, next_at_end, false, dollar);
            if (r != NO_ROUTE) return r;
        }
    }
    const bool wildcard_allowed = !(at_root && dollar);
    if (wildcard_allowed && n.plus) {
        auto r = match(*n.plus, next, next_at_end, false, dollar);
        if (r != NO_ROUTE) return r;
    }
    return wildcard_allowed ? n.hash : NO_ROUTE;
}

std::int32_t topic_router::route(std::string_view topic) const {
    if (topic.empty()) return NO_ROUTE;
    return match(*root_, topic, false, true, topic.front() == '$');
}

namespace {
int level_rank(std::string_view level, bool present) {
    if (!present) return 1;       // filter ended: exact end beats '#'
    if (level == "#") return 3;
    if (level == "+") return 2;
    return 0;
}
} // namespace

int compare_filter_specificity(std::string_view a, std::string_view b) {
    const auto la = split_topic_levels(a);
    const auto lb = split_topic_levels(b);
    const std::size_t n = std::max(la.size(), lb.size());
    for (std::size_t i = 0; i < n; ++i) {
        const bool pa = i < la.size(), pb = i < lb.size();
        const int ra = level_rank(pa ? la[i] : std::string_view{}, pa);
        const int rb = level_rank(pb ? lb[i] : std::string_view{}, pb);
        if (ra != rb) return ra < rb ? -1 : 1;
        if (pa && pb && ra == 0 && la[i] != lb[i]) return la[i] < lb[i] ? -1 : 1;
    }
    return 0;
}

bool filters_overlap(std::string_view a, std::string_view b) {
    const auto la = split_topic_levels(a);
    const auto lb = split_topic_levels(b);
    // A leading wildcard never matches '$' topics, but a literal '$' level could still only be
    // matched by the other filter's literal, so comparing level by level covers it.
    const std::size_t n = std::max(la.size(), lb.size());
    for (std::size_t i = 0; i < n; ++i) {
        const bool pa = i < la.size(), pb = i < lb.size();
        if (pa && la[i] == "#") {
            return !(i == 0 && pb && !lb[0].empty() && lb[0].front() == '$');
        }
        if (pb && lb[i] == "#") {
            return !(i == 0 && pa && !la[0].empty() && la[0].front() == '$');
        }
        if (!pa || !pb) return false;
        if (la[i] == "+" || lb[i] == "+") {
            if (i == 0) {
                const auto& other = la[i] == "+" ? lb[i] : la[i];
                if (!other.empty() && other.front() == '$') return false;
            }
            continue;
        }
        if (la[i] != lb[i]) return false;
    }
    return true;
}

struct overlap_index::node {
    struct entry {
        std::string_view filter;
        std::size_t target;
    };
    std::map<std::string_view, std::unique_ptr<node>> literal;
    std::unique_ptr<node> plus;
    std::vector<entry> ends;    // filters ending at this node
    std::vector<entry> hashes;  // filters with '#' after this node
};

overlap_index::overlap_index() : root_(std::make_unique<node>()) {}
overlap_index::~overlap_index() = default;

void overlap_index::add(std::string_view filter, std::size_t target) {
    node* n = root_.get();
    for (const auto level : split_topic_levels(filter)) {
        if (level == "#") {
            n->hashes.push_back({filter, target});
            return;
        }
        auto& next = level == "+" ? n->plus : n->literal[level];
        if (!next) next = std::make_unique<node>();
        n = next.get();
    }
    n->ends.push_back({filter, target});
}

namespace {

using visitor = std::function<void(std::string_view, std::size_t)>;

bool starts_with_dollar(std::string_view level) { return !level.empty() && level.front() == '$'; }

template <class Node> void visit_all(const std::vector<typename Node::entry>& entries, const visitor& visit) {
    for (const auto& e : entries) visit(e.filter, e.target);
}

// Every filter at or below `n`. A leading wildcard never matches a '$' topic (MQTT 5 §4.7.2), so
// at the root a wildcard does not meet '$' levels.
template <class Node> void visit_subtree(const Node& n, bool root, const visitor& visit) {
    visit_all<Node>(n.ends, visit);
    visit_all<Node>(n.hashes, visit);
    for (const auto& [level, child] : n.literal)
        if (!(root && starts_with_dollar(level))) visit_subtree(*child, false, visit);
    if (n.plus) visit_subtree(*n.plus, false, visit);
}

template <class Node>
void visit_overlapping(const Node& n, const std::vector<std::string_view>& levels, std::size_t i, const visitor& visit) {
    const bool root = i == 0;
    if (i == levels.size()) {  // "a" meets "a" and "a/#"
        visit_all<Node>(n.ends, visit);
        visit_all<Node>(n.hashes, visit);
        return;
    }
    const auto level = levels[i];
    if (level == "#") return visit_subtree(n, root, visit);
    const bool dollar = root && starts_with_dollar(level);
    if (!dollar) visit_all<Node>(n.hashes, visit);
    if (level == "+") {
        for (const auto& [name, child] : n.literal)
            if (!(root && starts_with_dollar(name))) visit_overlapping(*child, levels, i + 1, visit);
    } else if (const auto it = n.literal.find(level); it != n.literal.end()) {
        visit_overlapping(*it->second, levels, i + 1, visit);
    }
    if (n.plus && !dollar) visit_overlapping(*n.plus, levels, i + 1, visit);
}

} // namespace

void overlap_index::each_overlapping(std::string_view filter, const visitor& visit) const {
    visit_overlapping(*root_, split_topic_levels(filter), 0, visit);
}

std::optional<std::string> intersect_filters(std::string_view a, std::string_view b) {
    if (!filters_overlap(a, b)) return std::nullopt;
    const auto la = split_topic_levels(a);
    const auto lb = split_topic_levels(b);
    std::vector<std::string_view> levels;
    for (std::size_t i = 0;; ++i) {
        const bool pa = i < la.size(), pb = i < lb.size();
        // '#' matches whatever the other filter has left (the parent level included).
        if (pa && la[i] == "#") {
            levels.insert(levels.end(), lb.begin() + static_cast<std::ptrdiff_t>(std::min(i, lb.size())), lb.end());
            break;
        }
        if (pb && lb[i] == "#") {
            levels.insert(levels.end(), la.begin() + static_cast<std::ptrdiff_t>(std::min(i, la.size())), la.end());
            break;
        }
        if (!pa || !pb) break;  // they overlap, so both end here
        levels.push_back(la[i] == "+" ? lb[i] : la[i]);
    }
    std::string shared;
    for (std::size_t i = 0; i < levels.size(); ++i) {
        if (i) shared += '/';
        shared.append(levels[i]);
    }
    return shared;
}

} // namespace gdpr
