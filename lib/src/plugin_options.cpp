#include "gdpr/plugin_options.hpp"

#include <set>

#include "gdpr/control_api.hpp"
#include "gdpr/erasure.hpp"
#include "gdpr/errors.hpp"

namespace gdpr {

const std::vector<std::string>& known_option_keys() {
    static const std::vector<std::string> keys = {"schemas",           "purposes",           "unmatched_topics",
                                                  "pseudonym_key_file", "acl_default",        "database",
                                                  "db_synchronous",    "operator_usernames", "operator_client_ids",
                                                  "operator_cert_cns", "track_logins",
                                                  "gateway_usernames", "gateway_client_ids", "gateway_cert_cns",
                                                  "audit_key_file",    "record_deliveries",  "record_flush_ms",
                                                  "record_queue",      "record_overflow",    "retention_days",
                                                  "retention_sweep_seconds", "alert_topic",
                                                  "erase_topic",       "erase_deadline_seconds",
                                                  "erase_retry_seconds", "erase_rate_limit_seconds",
                                                  "erase_send_rate",   "new_subjects_per_minute",
                                                  "new_subjects_burst", "residency_file", "processing_details_file",
                                                  "gateway_new_subjects_per_minute", "gateway_new_subjects_burst"};
    return keys;
}

namespace {
// "a, b,c" -> {"a", "b", "c"}; empty items are an error.
std::vector<std::string> split_list(const std::string& key, const std::string& value) {
    std::vector<std::string> items;
    std::size_t start = 0;
    while (start <= value.size()) {
        auto comma = value.find(',', start);
        if (comma == std::string::npos) comma = value.size();
        std::string item = value.substr(start, comma - start);
        const auto first = item.find_first_not_of(" \t");
        const auto last = item.find_last_not_of(" \t");
        item = first == std::string::npos ? std::string() : item.substr(first, last - first + 1);
        if (item.empty()) throw config_error(key, "the comma-separated list has an empty item");
        items.push_back(std::move(item));
        start = comma + 1;
    }
    return items;
}

std::int64_t parse_int(const std::string& key, const std::string& value, std::int64_t min, std::int64_t max) {
    std::size_t used = 0;
    long long v = 0;
    try {
        v = std::stoll(value, &used, 10);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != value.size() || value.find_first_not_of("0123456789") != std::string::npos || v < min || v > max)
        throw config_error(key, "'" + value + "' is not a whole number from " + std::to_string(min) + " to " +
                                    std::to_string(max));
    return v;
}

std::string one_of(const std::string& key, const std::string& value, const std::vector<std::string>& allowed) {
    std::string list;
    for (const auto& a : allowed) {
        if (a == value) return value;
        list += (list.empty() ? "" : ", ") + a;
    }
    throw config_error(key, "'" + value + "' is not one of " + list);
}

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
        } else if (key == "database") {
            o.database = value;
        } else if (key == "db_synchronous") {
            if (value != "OFF" && value != "NORMAL" && value != "FULL")
                throw config_error(key, "'" + value + "' is not one of OFF, NORMAL, FULL");
            o.db_synchronous = value;
        } else if (key == "track_logins") {
            if (value == "true") o.track_logins = true;
            else if (value == "false") o.track_logins = false;
            else throw config_error(key, "'" + value + "' is not one of true, false");
        } else if (key == "operator_usernames") {
            o.operator_usernames = split_list(key, value);
        } else if (key == "operator_client_ids") {
            o.operator_client_ids = split_list(key, value);
        } else if (key == "operator_cert_cns") {
            o.operator_cert_cns = split_list(key, value);
        } else if (key == "gateway_usernames") {
            o.gateway_usernames = split_list(key, value);
        } else if (key == "gateway_client_ids") {
            o.gateway_client_ids = split_list(key, value);
        } else if (key == "gateway_cert_cns") {
            o.gateway_cert_cns = split_list(key, value);
        } else if (key == "audit_key_file") {
            o.audit_key_file = value;
        } else if (key == "record_deliveries") {
            o.record_deliveries = one_of(key, value, {"all", "refusals", "none"});
        } else if (key == "record_flush_ms") {
            o.record_flush_ms = parse_int(key, value, 10, 60000);
        } else if (key == "record_queue") {
            o.record_queue = parse_int(key, value, 100, 10000000);
        } else if (key == "record_overflow") {
            o.record_overflow = one_of(key, value, {"block", "drop"});
        } else if (key == "retention_days") {
            o.retention_days = parse_int(key, value, 1, 36500);
        } else if (key == "retention_sweep_seconds") {
            o.retention_sweep_seconds = parse_int(key, value, 1, 86400);
        } else if (key == "alert_topic") {
            if (value.find_first_of("+#") != std::string::npos || value.find('\0') != std::string::npos)
                throw config_error(key, "a topic to publish to cannot contain '+' or '#'");
            if (value == CONTROL_TOPIC || value == CONTROL_RESPONSE_TOPIC)
                throw config_error(key, "'" + value + "' is the control API's own topic: nothing published there reaches operators");
            o.alert_topic = value;
        } else if (key == "erase_topic") {
            try {
                erase_topics check(value);
            } catch (const std::invalid_argument& e) {
                throw config_error(key, "'" + value + "': " + e.what());
            }
            o.erase_topic = value;
        } else if (key == "erase_deadline_seconds") {
            o.erase_deadline_seconds = parse_int(key, value, 1, 90LL * 86400);
        } else if (key == "erase_retry_seconds") {
            o.erase_retry_seconds = parse_int(key, value, 1, 86400);
        } else if (key == "erase_rate_limit_seconds") {
            o.erase_rate_limit_seconds = parse_int(key, value, 0, 365LL * 86400);
        } else if (key == "erase_send_rate") {
            o.erase_send_rate = parse_int(key, value, 10, 1000000);
        } else if (key == "new_subjects_per_minute") {
            o.new_subjects_per_minute = parse_int(key, value, 0, 10000000);
        } else if (key == "new_subjects_burst") {
            o.new_subjects_burst = parse_int(key, value, 1, 10000000);
        } else if (key == "gateway_new_subjects_per_minute") {
            o.gateway_new_subjects_per_minute = parse_int(key, value, 0, 10000000);
        } else if (key == "gateway_new_subjects_burst") {
            o.gateway_new_subjects_burst = parse_int(key, value, 1, 10000000);
        } else if (key == "residency_file") {
            o.residency_file = value;
        } else if (key == "processing_details_file") {
            o.processing_details_file = value;
        } else {
            throw config_error(key, "unknown option plugin_opt_" + key + " (known: " + joined_keys() + ")");
        }
    }
    if (o.schemas_dir.empty()) throw config_error("schemas", "required option plugin_opt_schemas is missing");
    if (o.purposes_file.empty()) o.purposes_file = o.schemas_dir + "/purposes.json";
    return o;
}

} // namespace gdpr
