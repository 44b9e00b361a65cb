#pragma once
// How many data subjects the broker has not seen before one client may bring in. Every new
// subject costs an entry in the data map, rows for its writer and a data key in the audit trail,
// kept for as long as the subject's data is held (GDPR Art. 17(2), 30); a client publishing for
// ever-new subject ids, by fault or by design, would grow them without bound. Each client gets a
// token bucket: `burst` new subjects at once, refilled at `per_minute`. Broker thread only.
#include <chrono>
#include <cstdint>
#include <string_view>

#include "gdpr/subject_table.hpp"

namespace gdpr {

class subject_quota {
public:
    using clock = std::chrono::steady_clock;

    // per_minute 0: no limit. A publish bringing more than `burst` new subjects is never admitted.
    subject_quota(std::uint32_t per_minute, std::uint32_t burst);

    bool limited() const { return per_minute_ > 0; }
    // Takes `count` new subjects from the client's allowance at `now`. False, and nothing taken,
    // when the allowance is short: the publish that brings them is refused, not cut down.
    bool take(std::string_view client_id, std::uint32_t count, clock::time_point now);

    std::uint32_t per_minute() const { return per_minute_; }
    std::uint32_t burst() const { return burst_; }
    std::uint64_t refused() const { return refused_; }
    // New subjects admitted through this allowance (the plugin counts the gateways').
    void count_admitted(std::uint32_t count) { admitted_ += count; }
    std::uint64_t admitted() const { return admitted_; }
    // Clients whose allowance may not be full (a refilled client is forgotten at the next prune).
    std::size_t clients_tracked() const { return allowances_.size(); }
    // Forgets clients whose allowance has refilled, at most once a minute (take() calls it too;
    // the plugin also calls it from its tick). The table keeps its peak capacity.
    void prune(clock::time_point now);

private:
    struct allowance {
        double tokens = 0;
        clock::time_point at{};
    };
    double refilled(const allowance& a, clock::time_point now) const;

    std::uint32_t per_minute_;
    std::uint32_t burst_;
    subject_table<allowance> allowances_;  // keyed by client id
    clock::time_point next_prune_{};
    std::uint64_t refused_ = 0;
    std::uint64_t admitted_ = 0;
};

} // namespace gdpr
