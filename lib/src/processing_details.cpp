#include "gdpr/processing_details.hpp"

#include <algorithm>

#include "gdpr/errors.hpp"
#include "gdpr/schema_loader.hpp"
#include "json_file.hpp"

namespace gdpr {

using json = nlohmann::json;
using namespace json_file;

namespace {

std::string non_empty_text(const json& v, const std::string& where, const std::string& file) {
    std::string text = as_string(v, where, file);
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) throw schema_error(file, where + ": must not be empty");
    return text;
}

party party_of(const json& v, const std::string& where, const std::string& file) {
    if (!v.is_object()) throw schema_error(file, where + ": must be an object with \"name\" (and \"contact\")");
    only_keys(v, where, {"name", "contact"}, file);
    party p;
    p.name = non_empty_text(require(v, "name", where, file), where + ".name", file);
    if (auto c = v.find("contact"); c != v.end()) p.contact = non_empty_text(*c, where + ".contact", file);
    return p;
}

std::vector<std::string> texts_of(const json& v, const std::string& where, const std::string& file) {
    if (!v.is_array()) throw schema_error(file, where + ": must be an array of strings");
    std::vector<std::string> out;
    for (std::size_t i = 0; i < v.size(); ++i) out.push_back(non_empty_text(v[i], where + "[" + std::to_string(i) + "]", file));
    return out;
}

// A key of dataSubjects or recipients: a schema id, or "*". Another form could never name a loaded
// schema, so its entry would describe nothing, silently.
void check_schema_key(const std::string& key, const std::string& where, const std::string& file) {
    if (key != processing_details::EVERY_SCHEMA && !is_schema_id(key))
        throw schema_error(file, where + ": \"" + key + "\" is not a schema id (^[a-z0-9][a-z0-9._-]{0,63}$) or \"*\"");
}

} // namespace

std::string processing_details::data_subjects_of(const std::string& id) const {
    if (auto it = data_subjects.find(id); it != data_subjects.end()) return it->second;
    if (auto it = data_subjects.find(EVERY_SCHEMA); it != data_subjects.end()) return it->second;
    return {};
}

std::vector<std::string> processing_details::recipients_of(const std::string& id) const {
    std::vector<std::string> out;
    for (const std::string& key : {std::string(EVERY_SCHEMA), id})
        if (auto it = recipients.find(key); it != recipients.end())
            for (const auto& r : it->second)
                if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
    return out;
}

processing_details load_processing_details(const std::string& path) {
    const json doc = parse_json(read_file(path), path);
    if (!doc.is_object()) throw schema_error(path, "must be a JSON object");
    only_keys(doc, "(top level)",
              {"$schema", "description", "controller", "jointControllers", "representative", "dataProtectionOfficer",
               "dataSubjects", "recipients", "organisationalMeasures"},
              path);
    for (const char* text : {"$schema", "description"})
        if (auto it = doc.find(text); it != doc.end()) as_string(*it, text, path);
    processing_details d;
    d.file = path;
    d.controller = party_of(require(doc, "controller", "(top level)", path), "controller", path);
    if (auto it = doc.find("jointControllers"); it != doc.end()) {
        if (!it->is_array()) throw schema_error(path, "jointControllers: must be an array");
        for (std::size_t i = 0; i < it->size(); ++i)
            d.joint_controllers.push_back(party_of((*it)[i], "jointControllers[" + std::to_string(i) + "]", path));
    }
    if (auto it = doc.find("representative"); it != doc.end()) d.representative = party_of(*it, "representative", path);
    if (auto it = doc.find("dataProtectionOfficer"); it != doc.end())
        d.data_protection_officer = party_of(*it, "dataProtectionOfficer", path);
    if (auto it = doc.find("dataSubjects"); it != doc.end()) {
        if (!it->is_object()) throw schema_error(path, "dataSubjects: must map schema ids (or \"*\") to who the data subjects are");
        for (auto s = it->begin(); s != it->end(); ++s) {
            const std::string where = "dataSubjects[\"" + s.key() + "\"]";
            check_schema_key(s.key(), where, path);
            d.data_subjects[s.key()] = non_empty_text(*s, where, path);
        }
    }
    if (auto it = doc.find("recipients"); it != doc.end()) {
        if (!it->is_object())
            throw schema_error(path, "recipients: must map schema ids (or \"*\") to categories of recipients");
        for (auto r = it->begin(); r != it->end(); ++r) {
            const std::string where = "recipients[\"" + r.key() + "\"]";
            check_schema_key(r.key(), where, path);
            d.recipients[r.key()] = texts_of(*r, where, path);
        }
    }
    if (auto it = doc.find("organisationalMeasures"); it != doc.end())
        d.organisational_measures = texts_of(*it, "organisationalMeasures", path);
    return d;
}

} // namespace gdpr
