#pragma once
// Loads purposes.json and a directory of classification schemas, validating them against the
// format of schemas/gdpr-schema.schema.json. Start-up only; never on the per-message path.
#include <string>
#include <string_view>
#include <vector>

#include "gdpr/purposes.hpp"
#include "gdpr/schema.hpp"
#include "gdpr/topic_router.hpp"

namespace gdpr {

struct schema_set {
    std::vector<schema> schemas;
    topic_router router;            // topic -> index into `schemas`
    std::vector<std::string> warnings;  // e.g. overlapping topic filters (most specific wins)

    const schema* route(std::string_view topic) const {
        const auto i = router.route(topic);
        return i == topic_router::NO_ROUTE ? nullptr : &schemas[static_cast<std::size_t>(i)];
    }
    bool needs_pseudonym_key() const;
};

// Throws schema_error when `dir` is missing, not a directory, or cannot be listed and read by the
// current (broker) user. Run first, so an unreadable directory is reported as such rather than as
// a missing purposes.json inside it.
void check_schema_directory(const std::string& dir);

// Whether `name` has the form of a schema id (and a purpose name): ^[a-z0-9][a-z0-9._-]{0,63}$.
bool is_schema_id(const std::string& name);

// Reads and validates purposes.json. Throws schema_error naming the file and the problem.
purpose_registry load_purposes(const std::string& path);

// Parses one schema document. `file` is used in error messages. Throws schema_error.
schema parse_schema(std::string_view json_text, const std::string& file, const purpose_registry& purposes);

// Loads every "*.json" file in `dir` except purposes.json and "*.schema.json", in file-name order.
// Throws schema_error when the directory cannot be read, a file does not parse or does not match
// the format, two schemas share an id, or two schemas claim the same topic filter.
schema_set load_schema_directory(const std::string& dir, const purpose_registry& purposes);

} // namespace gdpr
