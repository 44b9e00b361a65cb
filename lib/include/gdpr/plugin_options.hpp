#pragma once
// The plugin's configuration, parsed from mosquitto.conf `plugin_opt_<key> <value>` lines.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace gdpr {

// What happens to a publish on a topic that no schema covers.
enum class unmatched_policy { pass, deny };

// How the plugin answers an ACL check it has no objection to (SPEC 8). `defer` lets the broker's
// other ACL sources (acl_file, other plugins) decide — with no other source the broker then
// denies everything. `allow` grants it, overriding acl_file.
enum class acl_fallback { defer, allow };

struct plugin_options {
    std::string schemas_dir;
    std::string purposes_file;        // default: <schemas_dir>/purposes.json
    unmatched_policy unmatched = unmatched_policy::pass;
    std::string pseudonym_key_file;   // required when a schema pseudonymises
    acl_fallback acl = acl_fallback::defer;
    std::string database = "/var/lib/mosquitto/gdpr.db";  // consent, bindings (created if missing)
    std::string db_synchronous = "NORMAL";                 // SQLite PRAGMA synchronous: OFF, NORMAL, FULL
    std::vector<std::string> operator_usernames;           // may use the control API
    std::vector<std::string> operator_client_ids;
    std::vector<std::string> operator_cert_cns;
    std::vector<std::string> gateway_usernames;  // publish for many subjects: no new-subject allowance
    std::vector<std::string> gateway_client_ids;
    std::vector<std::string> gateway_cert_cns;
    // Observe logins through the broker's password check (always answering "defer") to follow
    // session takeovers. Mosquitto 2.0 refuses a client that sends a username when no source
    // answers that check, so brokers without password_file or auth plugin must turn this off.
    bool track_logins = true;

    // Session recording (the audit trail). On when audit_key_file is set.
    std::string audit_key_file;             // master key: at least 32 random bytes, mode 0600
    std::string record_deliveries = "all";  // all, refusals, none
    std::int64_t record_flush_ms = 200;     // how often the writer commits (bounds loss on a crash)
    std::int64_t record_queue = 100000;     // records waiting for the writer before overflow
    std::string record_overflow = "block";  // block (never lose a record) or drop (count, alert, gap)
    std::int64_t retention_days = 365;      // records not covered by a schema's retentionDays
    std::int64_t retention_sweep_seconds = 3600;
    std::string alert_topic = "$CONTROL/gdpr/v1/alerts";  // operator alerts (problems, overflow)

    // Erasure (GDPR Art. 17): where each client gets its erase commands ("%c": its client id; it
    // acknowledges on <topic>/ack), how long a request may take, how soon an unanswered command is
    // sent again (doubling each time), how often one subject may be erased (0: no limit), and how
    // fast commands go out.
    std::string erase_topic = "gdpr/erase/%c";
    std::int64_t erase_deadline_seconds = 86400;
    std::int64_t erase_retry_seconds = 10;
    std::int64_t erase_rate_limit_seconds = 86400;
    std::int64_t erase_send_rate = 2000;  // erase commands per second, all requests together
    // Data subjects the broker has not seen that one client may bring in: a burst, refilled per
    // minute (0: no limit). Publishes past it are refused (the data map stays bounded).
    std::int64_t new_subjects_per_minute = 1000;
    std::int64_t new_subjects_burst = 10000;
    // The allowance of each client named in gateway_*: larger, still bounded and alerted.
    std::int64_t gateway_new_subjects_per_minute = 100000;
    std::int64_t gateway_new_subjects_burst = 1000000;

    // Residency (GDPR Chapter V): regions, the transfer table, client placement and bridges. Without
    // it messages are still tagged with their schema's residency, but no transfer is refused.
    std::string residency_file;

    // The record of processing activities' controller, data protection officer, categories of
    // data subjects and recipients, organisational measures (GDPR Art. 30(1)); see processing_details.
    std::string processing_details_file;
};

// The option keys this plugin understands, for documentation and error messages.
const std::vector<std::string>& known_option_keys();

// Parses options as the broker passes them (key without the "plugin_opt_" prefix, value).
// Throws config_error naming the option for an unknown key, a key given twice, an empty or bad
// value, or a missing required option ("schemas").
plugin_options parse_plugin_options(const std::vector<std::pair<std::string, std::string>>& options);

} // namespace gdpr
