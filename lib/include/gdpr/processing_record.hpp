#pragma once
// The record of processing activities (GDPR Art. 30(1)) that the loaded definitions describe:
// purposes with their lawful basis, per schema the data subjects, the categories of personal data
// and what reaches subscribers, retention, residency and transfers, and the points a data
// protection officer should review. Built from what the broker enforces (control command
// describeProcessing) or from the files alone (gdprctl processing-record --schemas DIR).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gdpr/plugin_options.hpp"
#include "gdpr/processing_details.hpp"
#include "gdpr/purposes.hpp"
#include "gdpr/schema_loader.hpp"

namespace gdpr {

class residency_rules;

// What the broker does with the data beyond the schemas' rules, from its options
// (Art. 30(1)(g), Art. 32). Unknown when the record is built from the files alone.
struct processing_safeguards {
    unmatched_policy unmatched = unmatched_policy::pass;
    bool pseudonym_key = false;        // pseudonym_key_file is set
    bool audit_trail = false;          // session recording on (audit_key_file: sealed per subject)
    std::string record_deliveries;     // all, refusals, none
    std::int64_t default_retention_days = 0;
};

// Art. 9(1) special categories, recognised by a field's category name (lower case, '_' and ' '
// read as '-') when the name or one of its '-'-separated words starts with health, medical,
// biometric, genetic, racial, race, ethnic, political, religio, philosophical-belief, trade-union,
// sex-life or sexual.
bool is_special_category(std::string_view category);

// Art. 10 data (criminal convictions and offences), recognised the same way by the stems
// criminal, conviction, offence and offense.
bool is_criminal_offence_category(std::string_view category);

// The record as JSON (keys in camelCase, as the control API answers). `residency` may be null
// (no residency file); it must be bound to `schemas`. `safeguards` null: built from files alone.
// `details` null: no processing details file (the controller and the rest go unnamed).
nlohmann::json processing_record(const schema_set& schemas, const purpose_registry& purposes,
                                 const residency_rules* residency, const processing_safeguards* safeguards,
                                 const processing_details* details = nullptr);

// What the definition files alone leave to review (gdprctl schema lint): the record's review
// notes, less the one on a missing processing details file when `details` is null.
std::vector<std::string> definition_review_notes(const schema_set& schemas, const purpose_registry& purposes,
                                                 const residency_rules* residency,
                                                 const processing_details* details = nullptr);

// The same record as plain text for people (gdprctl without --json).
std::string processing_record_text(const nlohmann::json& record);

} // namespace gdpr
