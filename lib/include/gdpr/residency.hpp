#pragma once
// Residency rules (GDPR Chapter V): which regions exist, which regions may receive data resident
// in which, where clients sit, and which bridges carry topics to which region. Loaded from the
// file named by plugin_opt_residency_file at start and on a reload (see carry_over); format in
// the top-level README ("Residency").
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gdpr/plugin_options.hpp"
#include "gdpr/schema_loader.hpp"

namespace gdpr {

// Who a connection is, as far as placing it in a region goes.
struct client_identity {
    std::string_view client_id;
    std::string_view username;
    std::string_view address;      // the peer's IP address as the broker reports it
    std::string_view certificate_cn;
};

// One placement rule: every criterion it names must match (glob patterns with * and ?, addresses
// as CIDR blocks); the first matching rule places the client.
struct placement_rule {
    std::string client_id;
    std::string username;
    std::string certificate_cn;
    std::string address;  // as written, e.g. "10.20.0.0/16"
    std::int32_t region = 0;

    // Parsed address block (IPv4 addresses are held as IPv4-mapped IPv6).
    bool has_address = false;
    unsigned char network[16] = {};
    int prefix_bits = 0;

    bool matches(const client_identity& who) const;
};

// A bridge from this broker: the topics (local topic filters) it carries out to its remote region.
struct bridge_route {
    std::string name;
    std::int32_t region = -1;  // -1: the bridge's region is not declared (may receive no resident data)
    std::vector<std::string> topics;
    std::string declared_in;   // "residency file" or "<conf file>:<line>", for messages
    std::string refusal_reason;  // built once: recorded with every publish this bridge stops
};

// What a reload of the residency file changes, by name, each list sorted.
struct residency_changes {
    std::vector<std::string> regions_added;
    std::vector<std::string> regions_removed;
    // "eu -> us": data resident in the first region may now go to the second (GDPR Art. 45, 46).
    std::vector<std::string> transfers_added;
    std::vector<std::string> transfers_removed;
    std::string default_region;           // "eu -> ch" when it changed
    bool placements_changed = false;      // the "clients" rules, as written
    std::vector<std::string> bridge_regions;  // "to-us: ch -> us": a running bridge declared with another region
    std::vector<std::string> bridge_topics_added;  // "to-us: fleet/#": checked on the bridge from now on
    std::vector<std::string> bridges_added;   // new in the files: checked from now on
    // Every change that lets resident data reach a region it could not reach before: a new
    // transfer ("transfer eu -> us"), unplaced clients in a region that may receive more
    // ("defaultRegion us -> eu"), a bridge declared to such a region ("bridge to-us: us -> eu"), a
    // schema whose data may go to more regions ("schema vehicle-telemetry: eu -> (none)"), topics
    // going to a schema whose data may ("topics fleet/acme/#: vehicle-telemetry (eu) -> acme
    // (none)", or "-> no schema" where unmatched topics pass), a client
    // rule placing clients where they may receive more ("clients clientId us-*: us -> eu").
    std::vector<std::string> widened;
    // Bridges removed, or topics removed from a bridge, in the residency file or brokerConfig: the
    // broker still runs them, so they are still checked until the next restart. Listed when the
    // list changes (bridges_not_applied_changed).
    std::vector<std::string> bridges_not_applied;
    bool bridges_not_applied_changed = false;
    std::string broker_config_problem;    // brokerConfig could not be read now; the bridges stay
    bool any() const {
        return !regions_added.empty() || !regions_removed.empty() || !transfers_added.empty() ||
               !transfers_removed.empty() || !default_region.empty() || placements_changed ||
               !bridge_regions.empty() || !bridge_topics_added.empty() || !bridges_added.empty() ||
               !widened.empty() || bridges_not_applied_changed;
    }
};

nlohmann::json to_json(const residency_changes& changes);

class residency_rules {
public:
    static constexpr std::int32_t NO_REGION = -1;

    // Reads and checks `path`. Every schema's residency must be a declared region. Bridges come
    // from the file's "bridges" and, when it names "brokerConfig", from that mosquitto.conf's
    // `connection` sections (and the files its include_dir lines pull in). Throws config_error
    // for option "residency_file" naming the file and the problem.
    // On a reload (`reloading`), a brokerConfig that cannot be read is noted, not refused: the
    // broker keeps running the bridges it started with.
    static residency_rules load(const std::string& path, const schema_set& schemas, bool reloading = false);

    // Each schema's region, and the bridges that could carry its topics where it may not go,
    // worked out for a schema set (holding pointers to its schemas).
    class schema_bindings;
    // For a schema reload: binds `schemas` without changing the rules in use. Throws
    // config_error as load() does when a schema declares a region the file does not.
    schema_bindings bind(const schema_set& schemas) const;
    // Puts bindings made by bind() in use (the schemas they point to must be the ones in use).
    void use(schema_bindings&& bindings) noexcept;
    void bind_schemas(const schema_set& schemas);  // bind() then use()

    // For a reload, on rules just loaded for `schemas`: keeps the bridges of `running`, since
    // Mosquitto reloads no bridge on SIGHUP, with the region the file declares for each now and
    // the topics of both; binds `schemas` again and returns what differs from `running`, which is
    // bound to `running_schemas` (`unmatched`: the policy for topics no schema covers). Throws
    // config_error, changing nothing that is in use, when a running bridge's region is no longer
    // one of the regions.
    residency_changes carry_over(const residency_rules& running, const schema_set& running_schemas,
                                 const schema_set& schemas, unmatched_policy unmatched = unmatched_policy::pass);
    // The same from a parsed document (tests); `base_dir` resolves a relative brokerConfig.
    static residency_rules from_json_text(std::string_view text, const schema_set& schemas,
                                          const std::string& source = "residency file",
                                          const std::string& base_dir = ".", bool reloading = false);

    std::size_t region_count() const { return regions_.size(); }
    const std::string& region_name(std::int32_t region) const;
    std::int32_t region_index(std::string_view name) const;  // NO_REGION when unknown

    // GDPR Art. 44-45: data resident in `data_region` may go to `receiver` (its own region, or
    // one the transfer table lists for it). A receiver without a region may receive nothing.
    bool may_receive(std::int32_t data_region, std::int32_t receiver) const {
        if (receiver < 0 || data_region < 0) return data_region < 0;
        return allowed_[static_cast<std::size_t>(data_region) * regions_.size() + static_cast<std::size_t>(receiver)];
    }

    // The region a client sits in: the first matching placement rule, else the default region.
    std::int32_t place(const client_identity& who) const;
    std::int32_t default_region() const { return default_region_; }

    // The region a schema's data is resident in, NO_REGION when it declares none.
    std::int32_t residency_of(const schema& s) const;

    const std::vector<bridge_route>& bridges() const { return bridges_; }
    // The first bridge that would carry `topic`, routed to `s`, to a region that may not receive
    // the schema's resident data; null when none would. Only the bridges whose topics overlap the
    // schema's (worked out at load) are matched.
    const bridge_route* blocking_bridge(std::string_view topic, const schema& s) const;

    // Start-up lint: one line for every bridge pattern that could carry a schema's resident personal
    // data to a region that may not receive it (such publishes are refused), for every bridge whose
    // region or topics are unknown, and for every schema with personal data but no residency.
    std::vector<std::string> lint(const schema_set& schemas) const;

private:
    struct schema_residency {
        const schema* s;
        std::int32_t region;
        std::vector<std::int32_t> blocking;  // bridges that could carry its topics where it may not go
    };

public:
    class schema_bindings {
        friend class residency_rules;
        std::vector<schema_residency> entries_;  // sorted by pointer
    };

private:
    std::vector<std::string> regions_;
    std::vector<bool> allowed_;  // [data region][receiver], row-major
    std::vector<placement_rule> placements_;
    std::int32_t default_region_ = NO_REGION;
    std::vector<bridge_route> bridges_;
    const schema_residency* find(const schema& s) const;
    // Parts of carry_over: default region and client rules; schemas' residency by id; the bridges
    // to check from now on (sets unapplied_bridges_; throws when a running bridge's region is gone).
    void compare_placements(const residency_rules& running, residency_changes& c) const;
    void compare_schema_residency(const residency_rules& running, const schema_set& running_schemas,
                                  const schema_set& schemas, unmatched_policy unmatched, residency_changes& c) const;
    std::vector<bridge_route> carried_bridges(const residency_rules& running, residency_changes& c);
    schema_bindings bound_;
    std::vector<std::string> load_notes_;           // for lint(): found while loading
    std::string broker_config_problem_;             // a reload could not read brokerConfig
    std::vector<std::string> unapplied_bridges_;    // bridges_not_applied, as last reported
    std::string source_;                            // the file, for messages
};

// A message of this schema is personal data once it names its subject in the topic, or holds a
// personal field.
inline bool topic_names_subject(const schema& s) { return s.subject.kind == subject_kind::topic_level; }
// Whether messages of this schema can be personal data at all.
inline bool may_hold_personal_data(const schema& s) { return s.has_personal || topic_names_subject(s); }

// A bridge `connection` section of a mosquitto.conf, as far as residency needs it.
struct configured_bridge {
    std::string name;
    std::vector<std::string> outbound_topics;  // local topic filters of its "out" and "both" topic lines
    std::string location;                      // "<file>:<line>" of the connection line
};

// Reads the bridge sections of a mosquitto.conf, following include_dir. Throws config_error
// (option "residency_file") when a file cannot be read or a topic line cannot be understood.
std::vector<configured_bridge> read_bridge_config(const std::string& path);
// The same from text (tests); `name` appears in locations, `dir` resolves relative include_dir.
std::vector<configured_bridge> parse_bridge_config(std::string_view text, const std::string& name,
                                                   const std::string& dir);

} // namespace gdpr
