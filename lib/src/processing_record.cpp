#include "gdpr/processing_record.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "gdpr/residency.hpp"

namespace gdpr {

using json = nlohmann::json;

namespace {

std::string normalised_category(std::string_view category) {
    std::string out;
    out.reserve(category.size());
    for (const char c : category) {
        if (c == '_' || c == ' ') out.push_back('-');
        else out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
    }
    return out;
}

std::string describe_subject(const subject_source& s) {
    switch (s.kind) {
    case subject_kind::field: return "named by the payload field " + s.pointer;
    case subject_kind::topic_level: return "named by topic level " + std::to_string(s.topic_level) + " (0-based)";
    case subject_kind::binding: return "the subject(s) bound to the publishing device (bindDevice)";
    case subject_kind::none: break;
    }
    return "not named";
}

// What subscribers get of a field under its rule.
std::string describe_delivery(const field_rule& r) {
    switch (r.action) {
    case field_action::keep: return "delivered as published";
    case field_action::drop: return "removed before delivery";
    case field_action::mask: return "replaced by a fixed value";
    case field_action::pseudonymise: return "pseudonymised (keyed HMAC-SHA256)";
    case field_action::generalise:
        if (r.truncate) return "truncated to the " + std::string(to_string(*r.truncate));
        return "rounded to " + std::to_string(r.decimals) + " decimal" + (r.decimals == 1 ? "" : "s");
    }
    return "?";
}

// Masked and removed values carry nothing about the subject; pseudonymised ones still do
// (GDPR Recital 26).
bool personal_data_delivered(field_action a) { return a != field_action::drop && a != field_action::mask; }

std::string basis_of(const purpose_registry& purposes, const std::string& name) {
    const purpose* p = purposes.find(name);
    return p ? std::string(to_string(p->basis)) : std::string("undeclared");
}

// GDPR Art. 6(1)(a): a schema that names no subject has no consent to find, so the filter removes
// every field whose purpose rests on consent.
bool never_consented(const schema& s, const field_rule& r) { return r.consent_bit >= 0 && s.subject.kind == subject_kind::none; }

// What subscribers get of a field, consent included: the filter checks consent before it applies
// the rule's action, so a field without consent is removed whatever the action.
std::string field_delivery(const schema& s, const field_rule& r) {
    if (r.consent_bit < 0 || r.action == field_action::drop) return describe_delivery(r);
    if (never_consented(s, r)) return "always removed (no data subject, so no consent)";
    return describe_delivery(r) + ", with consent (else removed)";
}

bool delivers_personal_field(const schema& s, const field_rule& r) {
    return r.personal && personal_data_delivered(r.action) && !never_consented(s, r);
}

// As the broker decides at a bridge (GDPR Art. 44): a message is resident personal data when its
// topic names the subject or a field classified personal is still in it after filtering.
bool may_deliver_personal_data(const schema& s) {
    if (topic_names_subject(s)) return true;
    return std::any_of(s.fields.begin(), s.fields.end(), [&](const field_rule& r) { return delivers_personal_field(s, r); });
}

// What a bridge to a region does with the schema's messages. A refusal is at publish time, so it
// holds the message back from every subscriber, not only the bridge.
std::string bridge_outcome(const schema& s, bool region_may_receive) {
    if (region_may_receive) return "carried";
    if (topic_names_subject(s))
        return "every publish refused, for every subscriber: the topic names the data subject (reason code 135, GDPR Art. 44)";
    if (!may_deliver_personal_data(s)) return "carried (no field classified personal is left after filtering)";
    return "publishes with a personal field left after filtering refused, for every subscriber (reason code 135, "
           "GDPR Art. 44); the rest carried";
}

json residency_of(const schema& s, const residency_rules* residency) {
    if (s.residency.empty()) return nullptr;
    json r{{"region", s.residency}};
    if (!residency) return r;
    const auto region = residency->residency_of(s);
    if (region == residency_rules::NO_REGION) return r;
    json may_go = json::array();
    for (std::int32_t to = 0; to < static_cast<std::int32_t>(residency->region_count()); ++to)
        if (residency->may_receive(region, to)) may_go.push_back(residency->region_name(to));
    r["mayReach"] = may_go;
    // Bridges whose topics can carry this schema's messages out of the broker (Art. 30(1)(d), (e)).
    json bridges = json::array();
    for (const auto& b : residency->bridges()) {
        const bool overlaps = std::any_of(b.topics.begin(), b.topics.end(), [&](const std::string& pattern) {
            return std::any_of(s.topics.begin(), s.topics.end(),
                               [&](const std::string& filter) { return filters_overlap(pattern, filter); });
        });
        if (!overlaps) continue;
        bridges.push_back({{"name", b.name},
                           {"region", b.region == residency_rules::NO_REGION ? json(nullptr) : json(residency->region_name(b.region))},
                           {"messages", bridge_outcome(s, residency->may_receive(region, b.region))}});
    }
    r["bridges"] = bridges;
    return r;
}

// What subscribers get of the value that names a message's subject.
json describe_identifier(const schema& s) {
    switch (s.subject.kind) {
    case subject_kind::topic_level:
        return "topic level " + std::to_string(s.subject.topic_level) + ": delivered as published (topics are not rewritten)";
    case subject_kind::field: {
        const field_rule* rule = rule_covering(s, s.subject.pointer_tokens);
        if (!rule)
            return "payload field " + s.subject.pointer + ", no rule: " +
                   (s.unclassified == unclassified_policy::drop ? "removed before delivery" : "delivered as published");
        if (!rule_encloses(*rule, s.subject.pointer_tokens.size()))
            return "payload field " + s.subject.pointer + ": " + field_delivery(s, *rule);
        const std::string under = "payload field " + s.subject.pointer + " (under the rule on " + rule->pointer + "): ";
        // The value holding the subject is an object, which neither action can transform: removed.
        if (rule->action == field_action::pseudonymise || rule->action == field_action::generalise)
            return under + "removed before delivery (the rule's action cannot transform an object)";
        return under + field_delivery(s, *rule);
    }
    case subject_kind::binding: return "not in the message (the device's bindings)";
    case subject_kind::none: break;
    }
    return nullptr;
}

struct purpose_use {
    std::set<std::string> schemas;
    std::set<std::string> categories;
    std::set<std::string> special;
};

// One processing activity per schema.
json activity(const schema& s, const purpose_registry& purposes, const residency_rules* residency,
              std::map<std::string, purpose_use>& uses, json& notes) {
    json personal = json::array();
    json other = json::array();
    std::set<std::string> special;
    std::map<std::string, std::set<std::string>> special_by_purpose;
    const std::string who = "schema " + s.tag() + ": ";
    for (const auto& r : s.fields) {
        if (!r.personal) {
            json entry{{"field", r.pointer}, {"category", r.category}, {"delivered", field_delivery(s, r)}};
            if (!r.purpose.empty()) {
                entry["purpose"] = r.purpose;
                entry["needsConsent"] = r.consent_bit >= 0;
                uses[r.purpose].schemas.insert(s.tag());
            }
            other.push_back(std::move(entry));
            if (is_special_category(r.category))
                notes.push_back(who + r.pointer + " has the category " + r.category + ", a special category (GDPR Art. "
                                "9(1)), but is marked not personal: check its classification (Art. 4(1))");
            continue;
        }
        const bool is_special = is_special_category(r.category);
        if (is_criminal_offence_category(r.category))
            notes.push_back(who + r.pointer + " (" + r.category + ") is data on criminal convictions or offences (GDPR "
                            "Art. 10): processed only under official authority or where Union or Member State law "
                            "authorises it");
        personal.push_back({{"field", r.pointer},
                            {"category", r.category},
                            {"specialCategory", is_special},
                            {"purpose", r.purpose},
                            {"lawfulBasis", basis_of(purposes, r.purpose)},
                            {"needsConsent", r.consent_bit >= 0},
                            {"action", to_string(r.action)},
                            {"delivered", field_delivery(s, r)},
                            {"personalDataDelivered", delivers_personal_field(s, r)}});
        purpose_use& use = uses[r.purpose];
        use.schemas.insert(s.tag());
        use.categories.insert(r.category);
        if (is_special) {
            use.special.insert(r.category);
            special.insert(r.category);
            special_by_purpose[r.purpose].insert(r.category);
        }
    }
    const bool holds_personal = may_hold_personal_data(s);
    json a{{"schema", s.tag()},
           {"description", s.description},
           {"topics", s.topics},
           {"dataSubject", describe_subject(s.subject)},
           {"subjectIdentifier", describe_identifier(s)},
           {"holdsPersonalData", holds_personal},
           {"mayDeliverPersonalData", may_deliver_personal_data(s)},
           {"personalData", personal},
           {"otherFields", other},
           {"specialCategories", json(std::vector<std::string>(special.begin(), special.end()))},
           {"unclassifiedMembers", s.unclassified == unclassified_policy::drop ? "removed before delivery" : "delivered as published"},
           {"retentionDays", s.retention_days > 0 ? json(s.retention_days) : json(nullptr)},
           {"residency", residency_of(s, residency)},
           {"file", s.source_file}};

    for (const auto& [name, categories] : special_by_purpose) {
        std::string list;
        for (const auto& c : categories) list += (list.empty() ? "" : ", ") + c;
        const purpose* p = purposes.find(name);
        if (p && p->basis == lawful_basis::consent)
            notes.push_back(who + list + " under purpose " + name + " is special-category data (GDPR Art. 9(1)): " +
                            "the consent recorded for it must be explicit (Art. 9(2)(a))");
        else
            notes.push_back(who + list + " under purpose " + name + " (" + basis_of(purposes, name) +
                            ") is special-category data (GDPR Art. 9(1)): it needs a condition of Art. 9(2) " +
                            "besides its Art. 6(1) basis");
    }
    if (holds_personal && s.retention_days <= 0)
        notes.push_back(who + "holds personal data but declares no retentionDays (GDPR Art. 5(1)(e), 30(1)(f))");
    if (holds_personal && s.unclassified == unclassified_policy::keep)
        notes.push_back(who + "members no rule names are delivered unclassified (\"unclassified\": \"keep\"); " +
                        "new personal fields in its messages would pass (GDPR Art. 5(1)(c), 25)");
    if (s.needs_consent && s.subject.kind == subject_kind::none)
        notes.push_back(who + "has fields whose purpose rests on consent but names no data subject: those fields are "
                              "always removed");
    if (s.has_personal && s.subject.kind == subject_kind::none)
        notes.push_back(who + "holds personal data but names no data subject: erasure and export cannot find its "
                              "messages' holders (GDPR Art. 15, 17)");
    if (topic_names_subject(s))
        notes.push_back(who + "the data subject's id is a topic level, which every subscriber receives as published "
                              "(topics are not rewritten): publish under a pseudonymous id if subscribers need not know "
                              "who it is (GDPR Art. 25, 32(1)(a))");
    if (s.subject.kind == subject_kind::field) {
        const field_rule* rule = rule_covering(s, s.subject.pointer_tokens);
        // An enclosing object under pseudonymise or generalise is removed, subject and all.
        const bool removed_with_object = rule && rule_encloses(*rule, s.subject.pointer_tokens.size()) &&
                                         (rule->action == field_action::pseudonymise || rule->action == field_action::generalise);
        const bool passes_as_not_personal = rule ? !rule->personal && !removed_with_object &&
                                                       personal_data_delivered(rule->action)
                                                 : s.unclassified == unclassified_policy::keep;
        if (passes_as_not_personal)
            notes.push_back(who + "the subject field " + s.subject.pointer + " reaches subscribers " +
                            (rule ? "under a rule that marks it not personal" : "unclassified, as published") +
                            ": it is not counted as personal data, so residency does not hold it back (GDPR Art. 4(1), 44)");
    }
    return a;
}

// Stems of the GDPR Art. 9(1) categories, matched at the start of a category name or of one of its
// '-'-separated words ("genetics", "patient-health", "religion", "ethnicity"): a special category
// flagged once too often costs a reviewer a glance, one missed costs a lawful basis.
constexpr std::array<std::string_view, 13> SPECIAL_STEMS = {
    "health", "medical", "biometric", "genetic", "racial", "race", "ethnic", "political",
    "religio", "philosophical-belief", "trade-union", "sex-life", "sexual"};
constexpr std::array<std::string_view, 4> CRIMINAL_STEMS = {"criminal", "conviction", "offence", "offense"};

// Whether the category name, or one of its '-'-separated words, starts with one of `stems`.
template <std::size_t N>
bool named_by_stem(std::string_view category, const std::array<std::string_view, N>& stems) {
    const std::string c = normalised_category(category);
    for (std::size_t word = 0; word < c.size();) {
        for (const auto stem : stems)
            if (c.compare(word, stem.size(), stem) == 0) return true;
        const auto dash = c.find('-', word);
        if (dash == std::string::npos) break;
        word = dash + 1;
    }
    return false;
}

json party_json(const party& p) { return {{"name", p.name}, {"contact", p.contact.empty() ? json(nullptr) : json(p.contact)}}; }

// Art. 30(1)(a) and (g): who is responsible and how to reach them; what the organisation does.
void add_controller(json& record, const schema_set& schemas, const processing_details* details, json& notes,
                    bool note_missing_details) {
    if (!details) {
        record["controller"] = nullptr;
        record["jointControllers"] = json::array();
        record["representative"] = nullptr;
        record["dataProtectionOfficer"] = nullptr;
        record["organisationalMeasures"] = json::array();
        record["processingDetailsFile"] = nullptr;
        if (note_missing_details)
            notes.push_back("no processing details file (processing_details_file): the record names no controller, data "
                        "protection officer, categories of data subjects or recipients, or organisational measures "
                        "(GDPR Art. 30(1)(a), (c), (d), (g))");
        return;
    }
    record["controller"] = party_json(details->controller);
    json joint = json::array();
    for (const auto& p : details->joint_controllers) joint.push_back(party_json(p));
    record["jointControllers"] = joint;
    record["representative"] = details->representative ? party_json(*details->representative) : json(nullptr);
    record["dataProtectionOfficer"] =
        details->data_protection_officer ? party_json(*details->data_protection_officer) : json(nullptr);
    record["organisationalMeasures"] = details->organisational_measures;
    record["processingDetailsFile"] = details->file;
    if (details->controller.contact.empty())
        notes.push_back("the controller has no contact details in " + details->file + " (GDPR Art. 30(1)(a))");
    // A schema renamed or removed leaves its entries describing nothing.
    std::set<std::string> named;
    for (const auto& [id, _] : details->data_subjects) named.insert(id);
    for (const auto& [id, _] : details->recipients) named.insert(id);
    for (const auto& id : named) {
        if (id == processing_details::EVERY_SCHEMA) continue;
        const bool loaded = std::any_of(schemas.schemas.begin(), schemas.schemas.end(),
                                        [&id](const schema& s) { return s.id == id; });
        if (!loaded) notes.push_back(details->file + " describes schema " + id + ", which is not loaded");
    }
}

// Art. 30(1)(c), (d): who the data subjects are, and who receives their data.
void describe_people(json& a, const schema& s, const processing_details* details, json& notes) {
    const std::string subjects = details ? details->data_subjects_of(s.id) : std::string();
    a["categoriesOfDataSubjects"] = subjects.empty() ? json(nullptr) : json(subjects);
    a["categoriesOfRecipients"] = details ? details->recipients_of(s.id) : std::vector<std::string>{};
    if (!details || !may_hold_personal_data(s)) return;
    const std::string who = "schema " + s.tag() + ": ";
    if (subjects.empty())
        notes.push_back(who + "holds personal data, and " + details->file +
                        " says nothing of whom it is about (dataSubjects; GDPR Art. 30(1)(c))");
    if (a["categoriesOfRecipients"].empty() && may_deliver_personal_data(s))
        notes.push_back(who + "may deliver personal data, and " + details->file +
                        " names no categories of recipients (recipients; GDPR Art. 30(1)(d))");
}

} // namespace

bool is_special_category(std::string_view category) { return named_by_stem(category, SPECIAL_STEMS); }

bool is_criminal_offence_category(std::string_view category) { return named_by_stem(category, CRIMINAL_STEMS); }

namespace {

json record_of(const schema_set& schemas, const purpose_registry& purposes, const residency_rules* residency,
               const processing_safeguards* safeguards, const processing_details* details, bool note_missing_details) {
    json notes = json::array();
    std::map<std::string, purpose_use> uses;
    json activities = json::array();
    for (const auto& s : schemas.schemas) {
        json a = activity(s, purposes, residency, uses, notes);
        describe_people(a, s, details, notes);
        activities.push_back(std::move(a));
    }

    json purpose_list = json::array();
    for (const auto& name : purposes.names()) {
        const purpose& p = *purposes.find(name);
        const purpose_use& use = uses[name];
        purpose_list.push_back({{"name", name},
                                {"lawfulBasis", to_string(p.basis)},
                                {"needsConsent", p.basis == lawful_basis::consent},  // GDPR Art. 6(1)(a)
                                {"description", p.description},
                                {"schemas", json(std::vector<std::string>(use.schemas.begin(), use.schemas.end()))},
                                {"dataCategories", json(std::vector<std::string>(use.categories.begin(), use.categories.end()))},
                                {"specialCategories", json(std::vector<std::string>(use.special.begin(), use.special.end()))}});
        if (use.schemas.empty()) notes.push_back("purpose " + name + " is declared but no schema field serves it");
    }

    json record{{"record", "processing activities (GDPR Art. 30(1))"}};
    add_controller(record, schemas, details, notes, note_missing_details);
    record["purposes"] = purpose_list;
    record["activities"] = activities;

    if (residency) {
        json transfers = json::array();
        const auto n = static_cast<std::int32_t>(residency->region_count());
        for (std::int32_t from = 0; from < n; ++from)
            for (std::int32_t to = 0; to < n; ++to)
                if (from != to && residency->may_receive(from, to))
                    transfers.push_back({{"from", residency->region_name(from)}, {"to", residency->region_name(to)}});
        json regions = json::array();
        for (std::int32_t r = 0; r < n; ++r) regions.push_back(residency->region_name(r));
        const auto d = residency->default_region();
        record["residency"] = {{"regions", regions},
                               {"transfers", transfers},  // Art. 30(1)(e)
                               {"defaultRegion", d == residency_rules::NO_REGION ? json(nullptr) : json(residency->region_name(d))}};
        for (auto& line : residency->lint(schemas)) notes.push_back(std::move(line));
    } else {
        record["residency"] = nullptr;
        for (const auto& s : schemas.schemas)
            if (may_hold_personal_data(s) && s.residency.empty())
                notes.push_back("schema " + s.tag() + ": holds personal data and declares no residency");
    }

    if (safeguards) {
        json audit = nullptr;
        if (safeguards->audit_trail)
            audit = {{"deliveriesRecorded", safeguards->record_deliveries},
                     {"hashChained", true},
                     {"personalDataSealedPerSubject", true},
                     {"defaultRetentionDays", safeguards->default_retention_days}};
        record["safeguards"] = {
            {"payloadFiltering", "every publish on a schema's topics is filtered by its rules before delivery"},
            {"pseudonymisationKey", safeguards->pseudonym_key},
            {"unmatchedTopics", safeguards->unmatched == unmatched_policy::pass ? "delivered unclassified" : "refused"},
            {"residencyEnforced", residency != nullptr},
            {"auditTrail", audit}};
        if (!safeguards->audit_trail)
            notes.push_back("session recording is off: no audit trail shows what personal data flowed where "
                            "(GDPR Art. 5(2), 30)");
        if (safeguards->unmatched == unmatched_policy::pass)
            notes.push_back("topics no schema covers are delivered unclassified (unmatched_topics pass)");
    } else {
        record["safeguards"] = nullptr;
    }
    for (const auto& w : schemas.warnings) notes.push_back(w);
    record["reviewNotes"] = notes;
    return record;
}

} // namespace

json processing_record(const schema_set& schemas, const purpose_registry& purposes, const residency_rules* residency,
                       const processing_safeguards* safeguards, const processing_details* details) {
    return record_of(schemas, purposes, residency, safeguards, details, true);
}

std::vector<std::string> definition_review_notes(const schema_set& schemas, const purpose_registry& purposes,
                                                 const residency_rules* residency, const processing_details* details) {
    const json record = record_of(schemas, purposes, residency, nullptr, details, false);
    std::vector<std::string> out;
    for (const auto& n : record.at("reviewNotes")) out.push_back(n.get<std::string>());
    return out;
}

namespace {

std::string joined(const json& list, const std::string& empty = "none") {
    std::string out;
    for (const auto& v : list) out += (out.empty() ? "" : ", ") + v.get<std::string>();
    return out.empty() ? empty : out;
}

std::string text_or(const json& v, const std::string& fallback) { return v.is_string() ? v.get<std::string>() : fallback; }

} // namespace

std::string processing_record_text(const json& record) {
    std::ostringstream out;
    out << "Record of processing activities (GDPR Art. 30(1))\n\n";
    // A broker older than this gdprctl answers without the controller's part.
    const json controller = record.value("controller", json(nullptr));
    if (!controller.is_null()) {
        const auto party_line = [&out](const char* role, const json& p) {
            out << "  " << role << ": " << p.at("name").get<std::string>();
            if (p.at("contact").is_string()) out << " (" << p.at("contact").get<std::string>() << ")";
            out << "\n";
        };
        out << "Controller (Art. 30(1)(a))\n";
        party_line("controller", controller);
        for (const auto& p : record.at("jointControllers")) party_line("joint controller", p);
        if (!record.at("representative").is_null()) party_line("representative", record.at("representative"));
        if (!record.at("dataProtectionOfficer").is_null())
            party_line("data protection officer", record.at("dataProtectionOfficer"));
        out << "\n";
    }
    out << "Purposes\n";
    for (const auto& p : record.at("purposes")) {
        out << "  " << p.at("name").get<std::string>() << " (" << p.at("lawfulBasis").get<std::string>()
            << (p.at("needsConsent").get<bool>() ? ", consent record needed" : "") << ")\n";
        if (!p.at("description").get<std::string>().empty()) out << "    " << p.at("description").get<std::string>() << "\n";
        out << "    schemas: " << joined(p.at("schemas")) << "; data: " << joined(p.at("dataCategories"));
        if (!p.at("specialCategories").empty()) out << "; special categories (Art. 9): " << joined(p.at("specialCategories"));
        out << "\n";
    }
    out << "\nActivities\n";
    for (const auto& a : record.at("activities")) {
        out << "  " << a.at("schema").get<std::string>() << "  topics: " << joined(a.at("topics")) << "\n";
        if (!a.at("description").get<std::string>().empty()) out << "    " << a.at("description").get<std::string>() << "\n";
        if (a.value("categoriesOfDataSubjects", json(nullptr)).is_string())
            out << "    categories of data subjects: " << a.at("categoriesOfDataSubjects").get<std::string>() << "\n";
        out << "    data subject: " << a.at("dataSubject").get<std::string>() << "\n";
        if (a.at("subjectIdentifier").is_string())
            out << "    subject's id: " << a.at("subjectIdentifier").get<std::string>() << "\n";
        for (const auto& f : a.at("personalData")) {
            out << "    " << f.at("field").get<std::string>() << " (" << f.at("category").get<std::string>()
                << (f.at("specialCategory").get<bool>() ? ", special category" : "") << ") for "
                << f.at("purpose").get<std::string>() << " [" << f.at("lawfulBasis").get<std::string>() << "]: "
                << f.at("delivered").get<std::string>() << "\n";
        }
        if (!a.at("otherFields").empty()) {
            std::string names;
            for (const auto& f : a.at("otherFields")) names += (names.empty() ? "" : ", ") + f.at("field").get<std::string>();
            out << "    not personal: " << names << "\n";
        }
        if (!a.value("categoriesOfRecipients", json::array()).empty())
            out << "    recipients: " << joined(a.at("categoriesOfRecipients")) << "\n";
        out << "    members no rule names: " << a.at("unclassifiedMembers").get<std::string>() << "\n";
        out << "    retention: "
            << (a.at("retentionDays").is_number() ? std::to_string(a.at("retentionDays").get<std::int64_t>()) + " days"
                                                   : std::string("not declared"))
            << "\n";
        const json& r = a.at("residency");
        if (r.is_null()) {
            out << "    residency: none declared\n";
        } else {
            out << "    residency: " << r.at("region").get<std::string>();
            if (r.contains("mayReach")) out << ", may reach " << joined(r.at("mayReach"));
            out << "\n";
            if (r.contains("bridges"))
                for (const auto& b : r.at("bridges"))
                    out << "    bridge " << b.at("name").get<std::string>() << " (to " << text_or(b.at("region"), "no region")
                        << "): " << b.at("messages").get<std::string>() << "\n";
        }
    }
    const json& residency = record.at("residency");
    if (!residency.is_null()) {
        out << "\nTransfers between regions (Art. 30(1)(e))\n";
        if (residency.at("transfers").empty()) out << "  none\n";
        for (const auto& t : residency.at("transfers"))
            out << "  " << t.at("from").get<std::string>() << " -> " << t.at("to").get<std::string>() << "\n";
        out << "  clients no rule places: " << text_or(residency.at("defaultRegion"), "no region") << "\n";
    }
    const json& safeguards = record.at("safeguards");
    if (!safeguards.is_null()) {
        out << "\nSafeguards (Art. 30(1)(g), 32)\n";
        out << "  " << safeguards.at("payloadFiltering").get<std::string>() << "\n";
        out << "  pseudonymisation key: " << (safeguards.at("pseudonymisationKey").get<bool>() ? "set" : "not set")
            << "; residency enforced: " << (safeguards.at("residencyEnforced").get<bool>() ? "yes" : "no")
            << "; topics no schema covers: " << safeguards.at("unmatchedTopics").get<std::string>() << "\n";
        const json& audit = safeguards.at("auditTrail");
        if (audit.is_null()) {
            out << "  audit trail: off\n";
        } else {
            out << "  audit trail: hash-chained, personal data sealed per subject (crypto-shredded on erasure); "
                << "deliveries recorded: " << audit.at("deliveriesRecorded").get<std::string>()
                << "; records no schema's retention covers kept " << audit.at("defaultRetentionDays").get<std::int64_t>()
                << " days\n";
        }
    }
    if (!record.value("organisationalMeasures", json::array()).empty()) {
        out << "\nOrganisational measures (Art. 30(1)(g), 32)\n";
        for (const auto& m : record.at("organisationalMeasures")) out << "  - " << m.get<std::string>() << "\n";
    }
    out << "\nFor review\n";
    if (record.at("reviewNotes").empty()) out << "  nothing\n";
    for (const auto& n : record.at("reviewNotes")) out << "  - " << n.get<std::string>() << "\n";
    return out.str();
}

} // namespace gdpr
