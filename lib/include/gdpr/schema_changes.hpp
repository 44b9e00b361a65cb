#pragma once
// What a schema reload would change, worked out before anything changes, so that a reload can be
// refused or reported. Broker thread, once per reload; never on the per-message path.
#include <string>
#include <vector>

#include "gdpr/plugin_options.hpp"
#include "gdpr/purposes.hpp"
#include "gdpr/residency.hpp"
#include "gdpr/schema_loader.hpp"

namespace gdpr {

// What a schema reload changes, by tag ("id@version"), each list sorted.
struct schema_changes {
    std::vector<std::string> added;             // ids not in use before
    std::vector<std::string> removed;           // ids no longer in the directory
    std::vector<std::string> new_versions;      // "id@old -> id@new"
    std::vector<std::string> edited_unversioned;  // same id and version, other rules
    std::vector<std::string> older_versions;      // "id@old -> id@new" with new < old
    // Fields that needed consent to a purpose and would pass without it: GDPR Art. 6(1), 7.
    //  - "id /pointer (purpose)": the purpose left consent;
    //  - "id /pointer (purpose -> other purpose | other purpose (consent) | not personal |
    //    unclassified, kept)": the same schema's rules changed;
    //  - "id /pointer (purpose -> other-id[: ...]) on filter": topics matching `filter` go to
    //    another schema now, which does not gate the field by the same consent;
    //  - "id /pointer (purpose -> no schema, passed) on filter": they match no schema now and
    //    unmatched topics pass.
    std::vector<std::string> fields_leaving_consent;
    purpose_changes purposes;                   // purposes.json, read again with the schemas
    residency_changes residency;                // the residency file, read again when enforced
    std::size_t schemas = 0;                    // in the new set
    std::size_t topic_filters = 0;              // in the new set
};

// `unmatched` is the policy for topics no schema covers (it does not change on a reload). Topics
// of a removed schema that match no schema afterwards are reported as the removal, not as fields
// leaving consent. Which schema topics go to is found by routing example topics of every old
// filter, and of its overlaps with other schemas' new filters, through both sets.
schema_changes compare_schema_sets(const schema_set& before, const schema_set& after,
                                   unmatched_policy unmatched = unmatched_policy::pass);

// Changes a reload makes only when asked for explicitly (a SIGHUP never asks).
struct reload_permissions {
    bool removals = false;       // schemas whose files are gone may go
    bool basis_changes = false;  // a purpose may stop resting on consent
    bool transfer_changes = false;  // resident data may go to a region it could not go to
};

} // namespace gdpr
