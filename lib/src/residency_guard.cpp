#include "gdpr/residency_guard.hpp"

#include <tuple>

namespace gdpr {

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

std::vector<residency_refusal_count> residency_guard::refusals() const {
    std::vector<residency_refusal_count> out;
    for (const auto& [key, c] : counts_) {
        const auto [from, to, bridge] = key;
        std::string via = bridge < 0 ? "delivery" : "bridge " + rules_.bridges()[static_cast<std::size_t>(bridge)].name;
        out.push_back({rules_.region_name(from), to < 0 ? std::string("(none)") : rules_.region_name(to), std::move(via),
                       c.count});
    }
    return out;
}

std::vector<residency_refusal_count> residency_guard::transfers() const {
    std::vector<residency_refusal_count> out;
    for (const auto& [key, count] : transfers_)
        out.push_back({rules_.region_name(key.first), rules_.region_name(key.second), "delivery", count});
    return out;
}

std::string residency_guard::note_shared_subscription(std::string_view filter, std::int32_t region) {
    constexpr std::string_view SHARE = "$share/";
    if (filter.substr(0, SHARE.size()) != SHARE) return {};
    // Mosquitto keeps one group per name and filter: "$share/g/a" and "$share/g/b" are two groups.
    auto it = share_groups_.find(filter);
    if (it == share_groups_.end()) it = share_groups_.emplace(std::string(filter), std::set<std::int32_t>{}).first;
    auto& regions = it->second;
    const bool was_mixed = regions.size() > 1;
    regions.insert(region);
    if (was_mixed || regions.size() < 2) return {};
    std::string names;
    for (const auto r : regions) names += (names.empty() ? "" : ", ") + rules_.region_name(r);
    const auto rest = filter.substr(SHARE.size());
    const auto slash = rest.find('/');
    const auto group = rest.substr(0, slash);
    const auto shared = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    return "shared subscription group '" + std::string(group) + "' on '" + std::string(shared) +
           "' has members in regions " + names +
           ": Mosquitto drops a message for the whole group when one member is refused it, so resident data may "
           "reach none of them; keep each region's members in a group of their own";
}

} // namespace gdpr
