#pragma once
// The in-memory model of one classification schema (schemas/*.json; format in
// schemas/gdpr-schema.schema.json and schemas/README.md).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gdpr {

enum class field_action { keep, drop, mask, pseudonymise, generalise };
enum class time_unit { second, minute, hour, day, month, year };
enum class unclassified_policy { drop, keep };
enum class subject_kind { none, field, topic_level, binding };

std::string_view to_string(field_action a);
std::string_view to_string(time_unit u);

struct subject_source {
    subject_kind kind = subject_kind::none;
    std::string pointer;      // kind == field
    std::vector<std::string> pointer_tokens;  // kind == field, unescaped
    int topic_level = -1;     // kind == topic_level, 0-based
};

struct field_rule {
    std::string pointer;             // as written in the schema
    std::string category;
    bool personal = false;
    std::string purpose;             // empty when not given (allowed only for non-personal fields)
    field_action action = field_action::keep;
    std::string mask_json = "\"***\"";  // action == mask: the replacement, serialised JSON
    int decimals = -1;               // action == generalise: round numbers to this many decimals
    std::optional<time_unit> truncate;  // action == generalise: truncate timestamps
    bool epoch_millis = false;       // numeric timestamps are milliseconds (else seconds)
    int consent_bit = -1;            // purpose rests on consent: its bit in a consent mask; else -1
};

// Rules arranged as a tree over pointer tokens so the payload filter walks payload and rules
// together in one pass. Node 0 is the document root.
struct field_tree {
    static constexpr std::int32_t NONE = -1;
    struct node {
        std::vector<std::pair<std::string, std::int32_t>> members;  // token -> child node
        std::int32_t wildcard = NONE;  // child for "*"
        std::int32_t rule = NONE;      // index into schema::fields when a rule ends here
        // Rules below this node name only object members (no "*", no array index): a value of
        // another shape here cannot be what the schema describes.
        bool object_only = false;
    };
    std::vector<node> nodes{node{}};

    // Child of `parent` for an object member / array index token; exact tokens beat "*". The
    // loader copies the rules under "*" into every literal sibling, so an exact match still obeys
    // the wildcard's rules for members it does not name itself.
    std::int32_t child(std::int32_t parent, std::string_view token) const {
        const node& n = nodes[static_cast<std::size_t>(parent)];
        for (const auto& m : n.members) {
            // Length and first byte reject almost every non-match without a memcmp call.
            if (m.first.size() == token.size() && (token.empty() || m.first[0] == token[0]) &&
                std::string_view(m.first) == token)
                return m.second;
        }
        return n.wildcard;
    }
};

struct schema {
    std::string id;
    std::int64_t version = 0;
    std::string description;
    std::vector<std::string> topics;
    subject_source subject;
    std::string residency;          // empty: none declared
    std::int64_t retention_days = 0;  // 0: not declared
    unclassified_policy unclassified = unclassified_policy::drop;
    std::vector<field_rule> fields;
    field_tree tree;
    bool needs_consent = false;     // some rule's purpose rests on consent
    bool has_personal = false;      // some rule classifies a field as personal data
    std::string source_file;
    std::string tag_text;  // "id@version", set by the loader
    // Of the parsed rules, set by the loader: a reload tells rules edited under the same version.
    std::size_t content_hash = 0;

    // "id@version", the value of the gdpr-schema user property. Built once at load: it is read
    // for every classified publish.
    const std::string& tag() const { return tag_text; }
};

// The rule that covers the member at `tokens` (unescaped pointer tokens), wildcards included: the
// first on the way down, since a rule on an enclosing value covers all of it as the payload filter
// applies it; null when none does.
const field_rule* rule_covering(const schema& s, const std::vector<std::string>& tokens);

// Whether `r`, the rule rule_covering() found for a member `depth` tokens deep, sits on a value
// enclosing that member (rather than on the member itself, by name or through "*").
inline bool rule_encloses(const field_rule& r, std::size_t depth) {
    std::size_t rule_depth = 0;
    for (const char c : r.pointer) rule_depth += c == '/';
    return rule_depth < depth;
}

// The subject field's value goes out pseudonymised: its own rule (not one on an enclosing object,
// which pseudonymise cannot transform and so removes) pseudonymises it.
inline bool subject_pseudonymised(const schema& s, const field_rule* subject_rule) {
    return subject_rule && subject_rule->action == field_action::pseudonymise &&
           !rule_encloses(*subject_rule, s.subject.pointer_tokens.size());
}

} // namespace gdpr
