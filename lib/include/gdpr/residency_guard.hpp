#pragma once
// Applies the residency rules to live traffic (GDPR Art. 44): the region of each connection
// (placed once, cached), the residency of the publish being delivered, and refusal counts per
// region pair. Broker thread only.
#include <cstdint>
#include <cstring>
#include <map>
#include <tuple>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gdpr/residency.hpp"

namespace gdpr {

struct residency_refusal_count {
    std::string from;  // region the data is resident in
    std::string to;    // region that was refused it
    std::string via;   // "delivery" or "bridge <name>"
    std::uint64_t count;
};

class residency_guard {
public:
    explicit residency_guard(residency_rules rules) : rules_(std::move(rules)) {}
    const residency_rules& rules() const { return rules_; }
    // A schema reload that leaves the residency rules as they are (see residency_rules::bind).
    void use(residency_rules::schema_bindings&& bindings) noexcept { rules_.use(std::move(bindings)); }
    // A reload of the residency file (rules made by residency_rules::carry_over: the running
    // bridges, then any new ones), in two steps so that a reload can prepare everything before it
    // changes anything:
    // prepare_rules may throw and changes nothing; use_rules puts them in use. Counts stay with
    // their regions by name; those of a region the new rules lack are kept under its name, and
    // count on if it comes back. Every connection is placed again at its next check, every
    // payload classified again; shared-subscription groups are forgotten when placements changed.
    struct prepared_rules;
    prepared_rules prepare_rules(residency_rules&& next, bool placements_changed) const;
    void use_rules(prepared_rules&& prepared) noexcept;

    // The region of a connection: placed by `identity()` the first time a connection is seen, and
    // again when the broker's memory for it now holds another client id, username or address.
    template <class IdentityFn>
    std::int32_t region_of(const void* connection, std::string_view client_id, std::string_view username,
                           std::string_view address, IdentityFn&& identity) {
        auto it = placed_.find(connection);
        if (it != placed_.end() && it->second.client_id == client_id && it->second.username == username &&
            it->second.address == address)
            return it->second.region;
        const std::int32_t region = rules_.place(identity());
        auto& p = placed_[connection];
        p.client_id.assign(client_id);
        p.username.assign(username);
        p.address.assign(address);
        p.region = region;
        return region;
    }
    void forget_connection(const void* connection) { placed_.erase(connection); }

    // The publish the broker is about to deliver: its forwarded payload, topic and the region of
    // the personal data it carries (NO_REGION when none). Deliveries of any other payload (retained,
    // queued for an offline client, a will) are classified again by the caller, who may remember
    // the answer with note_reclassified: a retained message or a queue often goes to many clients.
    void note_publish(const void* payload, std::size_t size, std::string_view topic, std::int32_t region) {
        remember(current_, payload, size, topic, region);
    }
    void forget_publish() { current_.payload = nullptr; }
    // The bytes are kept too: a later message may occupy the same address with the same size and
    // topic (the broker frees and reuses memory between events), and must not inherit this answer.
    void note_reclassified(const void* payload, std::size_t size, std::string_view topic, std::int32_t region) {
        remember(reclassified_, payload, size, topic, region);
        reclassified_bytes_.assign(static_cast<const char*>(payload), payload ? size : 0);
    }
    // Forgets both: from here on a payload at a known address may be another message (a will).
    void forget_payloads() { current_.payload = reclassified_.payload = nullptr; }
    bool is_known_payload(const void* payload, std::size_t size, std::string_view topic, std::int32_t& region) const {
        if (current_.matches(payload, size, topic, region)) return true;
        return reclassified_.matches(payload, size, topic, region) &&
               (size == 0 || std::memcmp(payload, reclassified_bytes_.data(), size) == 0);
    }

    // Counts a delivery of resident data to another region that may receive it (GDPR Art. 45/46).
    void note_transfer(std::int32_t data_region, std::int32_t receiver) { ++transfers_[{data_region, receiver}]; }
    std::vector<residency_refusal_count> transfers() const;

    // Counts a refused delivery and returns the reason to record (stable until the next
    // residency reload).
    std::string_view refuse_delivery(std::int32_t data_region, std::int32_t receiver);
    // Counts a publish refused because `bridge` would carry it to a region that may not have it.
    void refuse_bridged(std::int32_t data_region, const bridge_route& bridge);
    std::vector<residency_refusal_count> refusals() const;
    std::uint64_t refusal_total() const { return total_; }

    // A shared subscription loses a message for the whole group when one member is refused it
    // (Mosquitto 2.0): returns a warning the first time a group (name and filter) has members in
    // two regions. `shown`: the filter as the warning may name it (a subject's topic level hidden).
    std::string note_shared_subscription(std::string_view filter, std::int32_t region, std::string_view shown = {});

private:
    struct placed {
        std::string client_id;
        std::string username;
        std::string address;
        std::int32_t region;
    };
    struct known_payload {
        const void* payload = nullptr;
        std::size_t size = 0;
        std::string topic;
        std::int32_t region = residency_rules::NO_REGION;
        bool matches(const void* p, std::size_t n, std::string_view t, std::int32_t& r) const {
            if (!payload || p != payload || n != size || t != topic) return false;
            r = region;
            return true;
        }
    };
    static void remember(known_payload& k, const void* payload, std::size_t size, std::string_view topic,
                         std::int32_t region) {
        k.payload = payload;
        k.size = size;
        k.topic.assign(topic);
        k.region = region;
    }
    struct counter {
        std::string reason;
        std::uint64_t count = 0;
    };
    residency_rules rules_;
    std::unordered_map<const void*, placed> placed_;
    known_payload current_;
    known_payload reclassified_;
    std::string reclassified_bytes_;
    std::map<std::pair<std::int32_t, std::int32_t>, std::uint64_t> transfers_;
    // (data region, receiver region, bridge index or -1) -> count; node-based so reasons stay put.
    std::map<std::tuple<std::int32_t, std::int32_t, std::int32_t>, counter> counts_;
    std::uint64_t total_ = 0;
    std::map<std::string, std::set<std::int32_t>, std::less<>> share_groups_;
    // Counts of regions a reload removed, by name.
    std::vector<residency_refusal_count> retired_refusals_;
    std::vector<residency_refusal_count> retired_transfers_;

public:
    struct prepared_rules {
        residency_rules rules;
        decltype(residency_guard::counts_) counts;
        decltype(residency_guard::transfers_) transfers;
        decltype(residency_guard::share_groups_) share_groups;
        std::vector<residency_refusal_count> retired_refusals;
        std::vector<residency_refusal_count> retired_transfers;
    };
};

} // namespace gdpr
