#include "gdpr/subject_quota.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace gdpr {

namespace {
constexpr auto PRUNE_PERIOD = std::chrono::minutes(1);
}

subject_quota::subject_quota(std::uint32_t per_minute, std::uint32_t burst)
    : per_minute_(per_minute), burst_(std::max<std::uint32_t>(burst, 1)) {}

double subject_quota::refilled(const allowance& a, clock::time_point now) const {
    const double minutes = std::chrono::duration<double, std::ratio<60>>(now - a.at).count();
    return std::min<double>(burst_, a.tokens + std::max(0.0, minutes) * per_minute_);
}

bool subject_quota::take(std::string_view client_id, std::uint32_t count, clock::time_point now) {
    if (!limited() || count == 0) return true;
    prune(now);
    allowance* a = allowances_.find(client_id);
    const double available = a ? refilled(*a, now) : static_cast<double>(burst_);
    if (available + 1e-9 < count) {  // 1e-9: rounding in the refill must not cost a whole subject
        ++refused_;
        return false;
    }
    if (!a) a = &allowances_[client_id];
    a->tokens = available - count;
    a->at = now;
    return true;
}

void subject_quota::prune(clock::time_point now) {
    if (now < next_prune_) return;
    next_prune_ = now + PRUNE_PERIOD;
    if (allowances_.size() == 0) return;
    std::vector<std::string> full;
    allowances_.for_each([&](std::string_view client_id, const allowance& a) {
        if (refilled(a, now) >= burst_) full.emplace_back(client_id);
    });
    for (const auto& client_id : full) allowances_.erase(client_id);
}

} // namespace gdpr
