#pragma once
// Which topics a schema reload hands from one schema to another, or to none: found by routing
// example topics through the schemas in use and the new ones. Broker thread, once per reload.
#include <functional>
#include <string>
#include <vector>

#include "gdpr/plugin_options.hpp"
#include "gdpr/schema_loader.hpp"

namespace gdpr {

struct topic_move {
    const schema* from;  // in `before`
    const schema* to;    // in `after`, with another id; null: the topics match no schema now
    std::string filter;  // the first topics found going from one to the other
};

// One entry per pair of schemas. Followed are the filters of the schemas in `before` that
// `followed` accepts, and their overlaps with other schemas' new filters; one example topic per
// shape of each (a "+" as a level no filter of either set names, a trailing '#' as each number of
// such levels up to one past the deepest filter that overlaps it). Overlaps come first: they name
// the topics another schema takes more closely. Topics that match no schema now are moves only
// where `unmatched` lets them pass and their schema is still in `after`: where they are refused
// nothing leaves, and a removed schema's topics matching nothing is the removal itself, which has
// a permission of its own.
std::vector<topic_move> find_topic_moves(const schema_set& before, const schema_set& after, unmatched_policy unmatched,
                                         const std::function<bool(const schema&)>& followed);

} // namespace gdpr
