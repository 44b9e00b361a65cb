#include "gdpr/plugin_options.hpp"

#include <set>

#include "gdpr/errors.hpp"

namespace gdpr {

const std::vector<std::string>& known_option_keys() {
    static const std::vector<std::string> keys = {"schemas", "purposes", "unmatched_topics", "pseudonym_key_file",
                                                  "acl_default"};
    return keys;
}

namespace {
std::string joined_keys() {
    std::string s;
    for (const auto& k : known_option_keys()) s += (s.empty() ? "" : ", ") + k;
    return s;
}
} // namespace

plugin_options parse_plugin_options(const std::vector<std::pair<std::string, std::string>>& options) {
    plugin_options o;
    std::set<std::string> seen;
    for (const auto& [key, value] : options) {
        if (!seen.insert(key).second) throw config_error(key, "option is given more than once");
        if (value.empty()) throw config_error(key, "value is empty");
        if (key == "schemas") {
            o.schemas_dir = value;
        } else if (key == "purposes") {
            o.purposes_file = value;
        } else if (key == "unmatched_topics") {
            if (value == "pass") o.unmatched = unmatched_policy::pass;
            else if (value == "deny") o.unmatched = unmatched_policy::deny;
            else throw config_error(key, "'" + value + "' is not one of pass, deny");
        } else if (key == "pseudonym_key_file") {
            o.pseudonym_key_file = value;
        } else if (key == "acl_default") {
            if (value == "defer") o.acl = acl_fallback::defer;
            else if (value == "allow") o.acl = acl_fallback::allow;
            else throw config_error(key, "'" + value + "' is not one of defer, allow");
        } else {
            throw config_error(key, "unknown option plugin_opt_" + key + " (known: " + joined_keys() + ")");
        }
    }
    if (o.schemas_dir.empty()) throw config_error("schemas", "required option plugin_opt_schemas is missing");
    if (o.purposes_file.empty()) o.purposes_file = o.schemas_dir + "/purposes.json";
    return o;
}

} // namespace gdpr
