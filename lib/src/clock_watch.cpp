#include "gdpr/clock_watch.hpp"

#include <ctime>

namespace gdpr {

clock_watch::clock_watch(std::chrono::milliseconds tolerance) : tolerance_ms_(tolerance.count()) {}

namespace {
std::int64_t clock_ms(clockid_t clock) {
    timespec ts{};
    ::clock_gettime(clock, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}
} // namespace

clock_watch::reading clock_watch::read() {
    // CLOCK_BOOTTIME counts through a suspend, which CLOCK_MONOTONIC does not: a device waking up
    // has not had its wall clock set. It is read on both sides of the wall clock, so that a thread
    // descheduled between the two reads is not taken for a step.
    for (int attempt = 0;; ++attempt) {
        const std::int64_t before = clock_ms(CLOCK_BOOTTIME);
        const std::int64_t wall = clock_ms(CLOCK_REALTIME);
        const std::int64_t after = clock_ms(CLOCK_BOOTTIME);
        if (after - before < 50 || attempt == 2) return read_at(wall, before);
    }
}

clock_watch::reading clock_watch::read_at(std::int64_t wall_ms, std::int64_t boot_ms) {
    const std::int64_t gap = wall_ms - boot_ms;
    std::int64_t step = 0;
    if (started_) {
        const std::int64_t moved = gap - gap_ms_;
        if (moved >= tolerance_ms_ || moved <= -tolerance_ms_) step = moved;
    }
    // Every reading takes the gap as it is: slewing moves it a little at a time, never a step.
    gap_ms_ = gap;
    started_ = true;
    return {wall_ms, step};
}

} // namespace gdpr
