#include "gdpr/residency_guard.hpp"

#include <algorithm>
#include <tuple>

#include "gdpr/topic_filter.hpp"

namespace gdpr {

namespace {

// Adds `count` to the entry of the same region pair and path, or as a new entry.
void add_count(std::vector<residency_refusal_count>& counts, const residency_refusal_count& count) {
    const auto same = std::find_if(counts.begin(), counts.end(), [&](const residency_refusal_count& o) {
        return o.from == count.from && o.to == count.to && o.via == count.via;
    });
    if (same != counts.end()) same->count += count.count;
    else counts.push_back(count);
}

} // namespace

std::string_view residency_guard::refuse_delivery(std::int32_t data_region, std::int32_t receiver) {
    auto& c = counts_[std::make_tuple(data_region, receiver, -1)];
    if (c.reason.empty()) {
        c.reason = "residency: " + rules_.region_name(data_region) + "-resident personal data may not go to " +
                   (receiver < 0 ? std::string("a client without a region") : "region " + rules_.region_name(receiver));
    }
    ++c.count;
    ++total_;
    return c.reason;
}

void residency_guard::refuse_bridged(std::int32_t data_region, const bridge_route& bridge) {
    const auto index = static_cast<std::int32_t>(&bridge - rules_.bridges().data());
    ++counts_[std::make_tuple(data_region, bridge.region, index)].count;
    ++total_;
}

residency_guard::prepared_rules residency_guard::prepare_rules(residency_rules&& next, bool placements_changed) const {
    prepared_rules p;
    // Counts by region and bridge name.
    const auto region_in = [&](const std::string& name) {
        return name == "(none)" ? residency_rules::NO_REGION : next.region_index(name);
    };
    const auto known = [&](const std::string& name) { return name == "(none)" || next.region_index(name) >= 0; };
    const auto bridge_index = [&](const std::string& via) -> std::int32_t {
        if (via == "delivery") return -1;
        const auto& bridges = next.bridges();
        for (std::size_t i = 0; i < bridges.size(); ++i)
            if ("bridge " + bridges[i].name == via) return static_cast<std::int32_t>(i);
        return -2;
    };
    // Every count by name first, the retired ones too, so that a region back under its name
    // counts on where it left off and no pair is listed twice.
    std::vector<residency_refusal_count> refusals = retired_refusals_, transfers = retired_transfers_;
    for (const auto& [key, c] : counts_) {
        const auto [from, to, bridge] = key;
        refusals.push_back({rules_.region_name(from), rules_.region_name(to),
                            bridge < 0 ? "delivery" : "bridge " + rules_.bridges()[static_cast<std::size_t>(bridge)].name,
                            c.count});
    }
    for (const auto& [key, count] : transfers_)
        transfers.push_back({rules_.region_name(key.first), rules_.region_name(key.second), "delivery", count});
    for (const auto& r : refusals) {
        const auto bridge = bridge_index(r.via);
        if (known(r.from) && known(r.to) && bridge != -2) {
            p.counts[std::make_tuple(region_in(r.from), region_in(r.to), bridge)].count += r.count;
            continue;
        }
        add_count(p.retired_refusals, r);
    }
    for (const auto& t : transfers) {
        if (known(t.from) && known(t.to)) {
            p.transfers[std::make_pair(region_in(t.from), region_in(t.to))] += t.count;
            continue;
        }
        add_count(p.retired_transfers, t);  // every transfer's path is "delivery"
    }
    // A group's members are placed again too; until they subscribe again only the regions they
    // were in are known, and those may be wrong once placements changed.
    if (!placements_changed) {
        for (const auto& [group, regions] : share_groups_) {
            auto& now = p.share_groups[group];
            for (const auto r : regions)
                if (known(rules_.region_name(r))) now.insert(region_in(rules_.region_name(r)));
        }
    }
    p.rules = std::move(next);
    return p;
}

void residency_guard::use_rules(prepared_rules&& p) noexcept {
    rules_ = std::move(p.rules);
    counts_ = std::move(p.counts);
    transfers_ = std::move(p.transfers);
    share_groups_ = std::move(p.share_groups);
    retired_refusals_ = std::move(p.retired_refusals);
    retired_transfers_ = std::move(p.retired_transfers);
    placed_.clear();
    forget_payloads();
}

std::vector<residency_refusal_count> residency_guard::refusals() const {
    std::vector<residency_refusal_count> out = retired_refusals_;
    for (const auto& [key, c] : counts_) {
        const auto [from, to, bridge] = key;
        std::string via = bridge < 0 ? "delivery" : "bridge " + rules_.bridges()[static_cast<std::size_t>(bridge)].name;
        out.push_back({rules_.region_name(from), to < 0 ? std::string("(none)") : rules_.region_name(to), std::move(via),
                       c.count});
    }
    return out;
}

std::vector<residency_refusal_count> residency_guard::transfers() const {
    std::vector<residency_refusal_count> out = retired_transfers_;
    for (const auto& [key, count] : transfers_)
        out.push_back({rules_.region_name(key.first), rules_.region_name(key.second), "delivery", count});
    return out;
}

std::string residency_guard::note_shared_subscription(std::string_view filter, std::int32_t region,
                                                      std::string_view shown) {
    if (!parse_shared_subscription(filter)) return {};
    // Mosquitto keeps one group per name and filter: "$share/g/a" and "$share/g/b" are two groups.
    auto it = share_groups_.find(filter);
    if (it == share_groups_.end()) it = share_groups_.emplace(std::string(filter), std::set<std::int32_t>{}).first;
    auto& regions = it->second;
    const bool was_mixed = regions.size() > 1;
    regions.insert(region);
    if (was_mixed || regions.size() < 2) return {};
    std::string names;
    for (const auto r : regions) names += (names.empty() ? "" : ", ") + rules_.region_name(r);
    const auto named = parse_shared_subscription(shown.empty() ? filter : shown).value_or(shared_subscription{});
    return "shared subscription group '" + std::string(named.group) + "' on '" + std::string(named.filter) +
           "' has members in regions " + names +
           ": Mosquitto drops a message for the whole group when one member is refused it, so resident data may "
           "reach none of them; keep each region's members in a group of their own";
}

} // namespace gdpr
