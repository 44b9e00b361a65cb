#include "gdpr/schema_loader.hpp"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <set>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "gdpr/errors.hpp"
#include "gdpr/field_path.hpp"
#include "gdpr/topic_filter.hpp"
#include "json_file.hpp"

namespace gdpr {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace json_file;

std::string_view to_string(field_action a) {
    switch (a) {
    case field_action::keep: return "keep";
    case field_action::drop: return "drop";
    case field_action::mask: return "mask";
    case field_action::pseudonymise: return "pseudonymise";
    case field_action::generalise: return "generalise";
    }
    return "?";
}

const field_rule* rule_covering(const schema& s, const std::vector<std::string>& tokens) {
    std::int32_t node = 0;
    for (const auto& token : tokens) {
        if (const std::int32_t rule = s.tree.nodes[static_cast<std::size_t>(node)].rule; rule != field_tree::NONE)
            return &s.fields[static_cast<std::size_t>(rule)];
        node = s.tree.child(node, token);
        if (node == field_tree::NONE) return nullptr;
    }
    const std::int32_t rule = s.tree.nodes[static_cast<std::size_t>(node)].rule;
    return rule == field_tree::NONE ? nullptr : &s.fields[static_cast<std::size_t>(rule)];
}

std::string_view to_string(time_unit u) {
    switch (u) {
    case time_unit::second: return "second";
    case time_unit::minute: return "minute";
    case time_unit::hour: return "hour";
    case time_unit::day: return "day";
    case time_unit::month: return "month";
    case time_unit::year: return "year";
    }
    return "?";
}

std::optional<lawful_basis> parse_lawful_basis(std::string_view t) {
    if (t == "consent") return lawful_basis::consent;
    if (t == "contract") return lawful_basis::contract;
    if (t == "legal_obligation") return lawful_basis::legal_obligation;
    if (t == "vital_interests") return lawful_basis::vital_interests;
    if (t == "public_task") return lawful_basis::public_task;
    if (t == "legitimate_interests") return lawful_basis::legitimate_interests;
    return std::nullopt;
}

std::string_view to_string(lawful_basis b) {
    switch (b) {
    case lawful_basis::consent: return "consent";
    case lawful_basis::contract: return "contract";
    case lawful_basis::legal_obligation: return "legal_obligation";
    case lawful_basis::vital_interests: return "vital_interests";
    case lawful_basis::public_task: return "public_task";
    case lawful_basis::legitimate_interests: return "legitimate_interests";
    }
    return "?";
}

bool schema_set::needs_pseudonym_key() const {
    for (const auto& s : schemas) {
        for (const auto& f : s.fields) {
            if (f.action == field_action::pseudonymise) return true;
        }
    }
    return false;
}

namespace {

const std::regex& name_pattern() {
    static const std::regex re("^[a-z0-9][a-z0-9._-]{0,63}$");
    return re;
}
const std::regex& region_pattern() {
    static const std::regex re("^[a-z][a-z0-9-]{0,31}$");
    return re;
}

std::int64_t as_int(const json& v, std::int64_t min, std::int64_t max, const std::string& where,
                    const std::string& file) {
    if (!v.is_number_integer())
        throw schema_error(file, where + ": must be an integer");
    const auto n = v.get<std::int64_t>();
    if (n < min || n > max)
        throw schema_error(file, where + ": must be between " + std::to_string(min) + " and " + std::to_string(max));
    return n;
}

std::optional<field_action> parse_action(std::string_view t) {
    if (t == "keep") return field_action::keep;
    if (t == "drop") return field_action::drop;
    if (t == "mask") return field_action::mask;
    if (t == "pseudonymise") return field_action::pseudonymise;
    if (t == "generalise") return field_action::generalise;
    return std::nullopt;
}

std::optional<time_unit> parse_time_unit(std::string_view t) {
    if (t == "second") return time_unit::second;
    if (t == "minute") return time_unit::minute;
    if (t == "hour") return time_unit::hour;
    if (t == "day") return time_unit::day;
    if (t == "month") return time_unit::month;
    if (t == "year") return time_unit::year;
    return std::nullopt;
}

field_rule parse_field(const std::string& pointer, const json& spec, const std::string& file,
                       const purpose_registry& purposes) {
    const std::string where = "fields[\"" + pointer + "\"]";
    if (!spec.is_object()) throw schema_error(file, where + ": must be an object");
    only_keys(spec, where, {"category", "personal", "purpose", "action", "mask", "decimals", "truncate", "epoch"}, file);
    field_rule r;
    r.pointer = pointer;
    r.category = as_string(require(spec, "category", where, file), where + ".category", file);
    if (r.category.empty()) throw schema_error(file, where + ".category: must not be empty");
    const json& personal = require(spec, "personal", where, file);
    if (!personal.is_boolean()) throw schema_error(file, where + ".personal: must be true or false");
    r.personal = personal.get<bool>();
    if (auto it = spec.find("purpose"); it != spec.end()) {
        r.purpose = as_string(*it, where + ".purpose", file);
        if (!purposes.find(r.purpose))
            throw schema_error(file, where + ".purpose: \"" + r.purpose + "\" is not declared in purposes.json");
        r.consent_bit = purposes.consent_bit(r.purpose);
    } else if (r.personal) {
        // GDPR Art. 5(1)(b): personal data is processed only for specified purposes.
        throw schema_error(file, where + ": a personal field must name its \"purpose\"");
    }
    if (r.personal && !spec.contains("action"))
        throw schema_error(file, where + ": a personal field must state its \"action\" (keep, drop, mask, pseudonymise, generalise)");
    if (auto it = spec.find("action"); it != spec.end()) {
        const auto text = as_string(*it, where + ".action", file);
        auto a = parse_action(text);
        if (!a) throw schema_error(file, where + ".action: \"" + text + "\" is not one of keep, drop, mask, pseudonymise, generalise");
        r.action = *a;
    }
    const bool has_mask = spec.contains("mask"), has_dec = spec.contains("decimals"),
               has_trunc = spec.contains("truncate"), has_epoch = spec.contains("epoch");
    if (has_mask && r.action != field_action::mask)
        throw schema_error(file, where + ".mask: only allowed with action \"mask\"");
    if ((has_dec || has_trunc) && r.action != field_action::generalise)
        throw schema_error(file, where + ": \"decimals\" and \"truncate\" are only allowed with action \"generalise\"");
    if (has_epoch && !has_trunc)
        throw schema_error(file, where + ".epoch: only allowed together with \"truncate\"");
    if (r.action == field_action::mask && has_mask) r.mask_json = spec["mask"].dump();
    if (r.action == field_action::generalise) {
        if (has_dec == has_trunc)
            throw schema_error(file, where + ": action \"generalise\" needs exactly one of \"decimals\" or \"truncate\"");
        if (has_dec) r.decimals = static_cast<int>(as_int(spec["decimals"], 0, 15, where + ".decimals", file));
        if (has_trunc) {
            const auto text = as_string(spec["truncate"], where + ".truncate", file);
            r.truncate = parse_time_unit(text);
            if (!r.truncate)
                throw schema_error(file, where + ".truncate: \"" + text + "\" is not one of second, minute, hour, day, month, year");
        }
        if (has_epoch) {
            const auto text = as_string(spec["epoch"], where + ".epoch", file);
            if (text != "s" && text != "ms") throw schema_error(file, where + ".epoch: must be \"s\" or \"ms\"");
            r.epoch_millis = text == "ms";
        }
    }
    return r;
}

// Makes the rules under `src` (a "*" node) apply at `dst` (a literal sibling) too. A rule the
// literal path states itself wins ("exact beats *"); a rule that would end up nested under another
// rule is a conflict.
void merge_wildcard(schema& s, std::int32_t dst, std::int32_t src, const std::string& file) {
    auto node = [&](std::int32_t i) -> field_tree::node& { return s.tree.nodes[static_cast<std::size_t>(i)]; };
    const std::int32_t src_rule = node(src).rule;
    if (node(dst).rule != field_tree::NONE) return;  // the exact rule covers the whole value
    if (src_rule != field_tree::NONE) {
        if (!node(dst).members.empty() || node(dst).wildcard != field_tree::NONE)
            throw schema_error(file, "fields[\"" + s.fields[static_cast<std::size_t>(src_rule)].pointer +
                                         "\"]: overlaps rules on a literal path beside its \"*\"; a rule may not be "
                                         "nested under another rule");
        node(dst).rule = src_rule;
        return;
    }
    const auto members = node(src).members;  // copy: nodes may be appended below
    for (const auto& [token, child] : members) {
        std::int32_t target = field_tree::NONE;
        for (const auto& m : node(dst).members) if (m.first == token) target = m.second;
        if (target == field_tree::NONE) {
            target = static_cast<std::int32_t>(s.tree.nodes.size());
            node(dst).members.emplace_back(token, target);
            s.tree.nodes.emplace_back();
        }
        merge_wildcard(s, target, child, file);
    }
    if (node(src).wildcard != field_tree::NONE) {
        if (node(dst).wildcard == field_tree::NONE) {
            const auto created = static_cast<std::int32_t>(s.tree.nodes.size());
            s.tree.nodes.emplace_back();
            node(dst).wildcard = created;
        }
        merge_wildcard(s, node(dst).wildcard, node(src).wildcard, file);
    }
}

void build_tree(schema& s, const std::string& file) {
    for (std::size_t i = 0; i < s.fields.size(); ++i) {
        field_path path;
        if (auto problem = parse_field_path(s.fields[i].pointer, path); !problem.empty())
            throw schema_error(file, "fields[\"" + s.fields[i].pointer + "\"]: " + problem);
        std::int32_t at = 0;
        for (const auto& token : path.tokens) {
            if (s.tree.nodes[static_cast<std::size_t>(at)].rule != field_tree::NONE)
                throw schema_error(file, "fields[\"" + s.fields[i].pointer + "\"]: is nested under the rule for \"" +
                                             s.fields[static_cast<std::size_t>(s.tree.nodes[static_cast<std::size_t>(at)].rule)].pointer +
                                             "\"; a rule may not be nested under another rule");
            std::int32_t next = field_tree::NONE;
            auto& node = s.tree.nodes[static_cast<std::size_t>(at)];
            if (token == field_path::WILDCARD) {
                next = node.wildcard;
            } else {
                for (const auto& m : node.members) if (m.first == token) next = m.second;
            }
            if (next == field_tree::NONE) {
                next = static_cast<std::int32_t>(s.tree.nodes.size());
                if (token == field_path::WILDCARD) {
                    s.tree.nodes[static_cast<std::size_t>(at)].wildcard = next;
                } else {
                    s.tree.nodes[static_cast<std::size_t>(at)].members.emplace_back(token, next);
                }
                s.tree.nodes.emplace_back();
            }
            at = next;
        }
        auto& leaf = s.tree.nodes[static_cast<std::size_t>(at)];
        if (leaf.rule != field_tree::NONE)
            throw schema_error(file, "fields[\"" + s.fields[i].pointer + "\"]: duplicates the rule for \"" +
                                         s.fields[static_cast<std::size_t>(leaf.rule)].pointer + "\"");
        if (!leaf.members.empty() || leaf.wildcard != field_tree::NONE)
            throw schema_error(file, "fields[\"" + s.fields[i].pointer + "\"]: other rules are nested under it; a rule may not be nested under another rule");
        leaf.rule = static_cast<std::int32_t>(i);
    }
    // Children are always appended after their parent, so one pass in index order also reaches
    // the nodes the merges create.
    for (std::size_t i = 0; i < s.tree.nodes.size(); ++i) {
        const std::int32_t wildcard = s.tree.nodes[i].wildcard;
        if (wildcard == field_tree::NONE) continue;
        const auto members = s.tree.nodes[i].members;
        for (const auto& m : members) merge_wildcard(s, m.second, wildcard, file);
    }
    for (auto& node : s.tree.nodes) {
        node.object_only = node.rule == field_tree::NONE && node.wildcard == field_tree::NONE && !node.members.empty() &&
                           std::none_of(node.members.begin(), node.members.end(),
                                        [](const auto& m) { return is_array_index_token(m.first); });
    }
}

} // namespace

bool is_schema_id(const std::string& name) { return std::regex_match(name, name_pattern()); }

purpose_registry load_purposes(const std::string& path) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
        throw schema_error(path, ec && ec != std::errc::no_such_file_or_directory
                                     ? "purposes file cannot be accessed: " + ec.message()
                                     : "purposes file does not exist or is not a regular file");
    const std::string text = read_file(path);
    const json doc = parse_json(text, path);
    if (!doc.is_object()) throw schema_error(path, "must be a JSON object");
    only_keys(doc, "(top level)", {"$schema", "purposes", "description"}, path);
    const json& list = require(doc, "purposes", "(top level)", path);
    if (!list.is_object()) throw schema_error(path, "purposes: must be an object mapping purpose names to their lawful basis");
    purpose_registry reg;
    for (auto it = list.begin(); it != list.end(); ++it) {
        const std::string where = "purposes[\"" + it.key() + "\"]";
        if (!std::regex_match(it.key(), name_pattern()))
            throw schema_error(path, where + ": purpose names use a-z, 0-9, '.', '_', '-' (at most 64)");
        if (!it->is_object()) throw schema_error(path, where + ": must be an object");
        only_keys(*it, where, {"lawfulBasis", "description"}, path);
        purpose p;
        p.name = it.key();
        const auto basis_text = as_string(require(*it, "lawfulBasis", where, path), where + ".lawfulBasis", path);
        auto basis = parse_lawful_basis(basis_text);
        if (!basis)
            throw schema_error(path, where + ".lawfulBasis: \"" + basis_text +
                                         "\" is not a GDPR Art. 6(1) basis (consent, contract, legal_obligation, "
                                         "vital_interests, public_task, legitimate_interests)");
        p.basis = *basis;
        if (auto d = it->find("description"); d != it->end()) p.description = as_string(*d, where + ".description", path);
        reg.add(std::move(p));
    }
    return reg;
}

schema parse_schema(std::string_view json_text, const std::string& file, const purpose_registry& purposes) {
    const json doc = parse_json(json_text, file);
    if (!doc.is_object()) throw schema_error(file, "a schema must be a JSON object");
    only_keys(doc, "(top level)", {"$schema", "id", "version", "description", "topics", "subject", "residency",
                                   "retentionDays", "unclassified", "fields"}, file);
    schema s;
    s.source_file = file;
    // Of what decides the rules: layout, key order and the description do not count.
    json rules = doc;
    rules.erase("description");
    rules.erase("$schema");
    s.content_hash = std::hash<std::string>{}(rules.dump());
    s.id = as_string(require(doc, "id", "(top level)", file), "id", file);
    if (!std::regex_match(s.id, name_pattern()))
        throw schema_error(file, "id: \"" + s.id + "\" must match ^[a-z0-9][a-z0-9._-]{0,63}$");
    s.version = as_int(require(doc, "version", "(top level)", file), 1, INT32_MAX, "version", file);
    if (auto it = doc.find("description"); it != doc.end()) s.description = as_string(*it, "description", file);

    const json& topics = require(doc, "topics", "(top level)", file);
    if (!topics.is_array() || topics.empty()) throw schema_error(file, "topics: must be a non-empty array of topic filters");
    for (std::size_t i = 0; i < topics.size(); ++i) {
        const std::string where = "topics[" + std::to_string(i) + "]";
        auto filter = as_string(topics[i], where, file);
        if (auto problem = topic_filter_problem(filter); !problem.empty())
            throw schema_error(file, where + ": \"" + filter + "\": " + problem);
        if (std::find(s.topics.begin(), s.topics.end(), filter) != s.topics.end())
            throw schema_error(file, where + ": \"" + filter + "\" is listed twice");
        s.topics.push_back(std::move(filter));
    }

    if (auto it = doc.find("subject"); it != doc.end()) {
        const json& subj = *it;
        if (!subj.is_object() || subj.size() != 1)
            throw schema_error(file, "subject: must be an object with exactly one of \"field\", \"topicLevel\", \"binding\"");
        only_keys(subj, "subject", {"field", "topicLevel", "binding"}, file);
        if (subj.contains("field")) {
            s.subject.kind = subject_kind::field;
            s.subject.pointer = as_string(subj["field"], "subject.field", file);
            field_path p;
            if (auto problem = parse_field_path(s.subject.pointer, p); !problem.empty())
                throw schema_error(file, "subject.field: " + problem);
            if (std::find(p.tokens.begin(), p.tokens.end(), std::string(field_path::WILDCARD)) != p.tokens.end())
                throw schema_error(file, "subject.field: must name one value; \"*\" is not allowed here");
            s.subject.pointer_tokens = std::move(p.tokens);
        } else if (subj.contains("topicLevel")) {
            s.subject.kind = subject_kind::topic_level;
            s.subject.topic_level = static_cast<int>(as_int(subj["topicLevel"], 0, 1024, "subject.topicLevel", file));
            for (const auto& filter : s.topics) {
                const auto levels = split_topic_levels(filter);
                const auto idx = static_cast<std::size_t>(s.subject.topic_level);
                for (std::size_t l = 0; l <= idx; ++l) {
                    if (l >= levels.size() || levels[l] == "#")
                        throw schema_error(file, "subject.topicLevel: topic filter \"" + filter + "\" has no level " +
                                                     std::to_string(idx) + " (levels count from 0)");
                }
            }
        } else {
            const auto b = as_string(subj["binding"], "subject.binding", file);
            if (b != "client") throw schema_error(file, "subject.binding: must be \"client\"");
            s.subject.kind = subject_kind::binding;
        }
    }
    if (auto it = doc.find("residency"); it != doc.end()) {
        s.residency = as_string(*it, "residency", file);
        if (!std::regex_match(s.residency, region_pattern()))
            throw schema_error(file, "residency: \"" + s.residency + "\" must match ^[a-z][a-z0-9-]{0,31}$");
    }
    if (auto it = doc.find("retentionDays"); it != doc.end())
        s.retention_days = as_int(*it, 1, 36500, "retentionDays", file);
    if (auto it = doc.find("unclassified"); it != doc.end()) {
        const auto text = as_string(*it, "unclassified", file);
        if (text == "drop") s.unclassified = unclassified_policy::drop;
        else if (text == "keep") s.unclassified = unclassified_policy::keep;
        else throw schema_error(file, "unclassified: must be \"drop\" or \"keep\"");
    }
    const json& fields = require(doc, "fields", "(top level)", file);
    if (!fields.is_object()) throw schema_error(file, "fields: must be an object mapping JSON pointers to rules");
    for (auto it = fields.begin(); it != fields.end(); ++it) s.fields.push_back(parse_field(it.key(), *it, file, purposes));
    build_tree(s, file);
    s.tag_text = s.id + "@" + std::to_string(s.version);
    s.needs_consent = std::any_of(s.fields.begin(), s.fields.end(), [](const field_rule& r) { return r.consent_bit >= 0; });
    s.has_personal = std::any_of(s.fields.begin(), s.fields.end(), [](const field_rule& r) { return r.personal; });
    return s;
}

void check_schema_directory(const std::string& dir) {
    std::error_code ec;
    const auto status = fs::status(dir, ec);
    const std::string unreadable = "cannot be read by the broker's user (uid " + std::to_string(::geteuid()) +
                                   "); mosquitto drops to user 'mosquitto' unless its config has a 'user' line";
    if (ec && ec != std::errc::no_such_file_or_directory) throw schema_error(dir, unreadable);
    if (!fs::exists(status)) throw schema_error(dir, "schemas directory does not exist");
    if (!fs::is_directory(status)) throw schema_error(dir, "is not a directory");
    if (::access(dir.c_str(), R_OK | X_OK) != 0) throw schema_error(dir, unreadable);
}

schema_set load_schema_directory(const std::string& dir, const purpose_registry& purposes) {
    check_schema_directory(dir);
    std::error_code ec;
    std::vector<fs::path> files;
    fs::directory_iterator iter(dir, ec);
    if (ec) throw schema_error(dir, "cannot read directory: " + ec.message());
    for (const auto& entry : iter) {
        const auto name = entry.path().filename().string();
        if (entry.path().extension() != ".json") continue;
        if (name == "purposes.json") continue;
        if (name.size() > 12 && name.compare(name.size() - 12, 12, ".schema.json") == 0) continue;
        files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    schema_set set;
    std::set<std::string> ids;
    std::vector<std::pair<std::string, std::size_t>> filters;  // filter -> schema index
    for (const auto& path : files) {
        schema s = parse_schema(read_file(path), path.string(), purposes);
        if (!ids.insert(s.id).second) throw schema_error(path.string(), "id \"" + s.id + "\" is used by another schema file");
        const auto index = set.schemas.size();
        for (const auto& filter : s.topics) {
            for (const auto& [other, other_index] : filters) {
                // Filters of one schema may overlap: whichever wins, the same rules apply.
                if (other_index == index) continue;
                if (other == filter)
                    throw schema_error(path.string(), "topic filter \"" + filter + "\" is already claimed by schema \"" +
                                                          set.schemas[other_index].id + "\"");
                if (filters_overlap(other, filter)) {
                    const bool mine_wins = compare_filter_specificity(filter, other) < 0;
                    set.warnings.push_back("topic filters \"" + filter + "\" (schema " + s.id + ") and \"" + other +
                                           "\" (schema " + set.schemas[other_index].id +
                                           ") overlap; on topics both match, \"" + (mine_wins ? filter : other) +
                                           "\" is more specific and wins");
                }
            }
            set.router.add(filter, static_cast<std::int32_t>(index));
            filters.emplace_back(filter, index);
        }
        set.schemas.push_back(std::move(s));
    }
    return set;
}

} // namespace gdpr
