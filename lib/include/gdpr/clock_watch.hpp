#pragma once
// Notices when the wall clock is set (an NTP step at a gateway's boot, an operator's `date`): the
// time since boot keeps counting through it, so the gap between the two moves only when the wall
// clock is stepped. What schedules by wall time (erasure retries, pacing and deadlines) shifts by
// the step, so that a clock set back does not pause it and one set forward does not cut it short.
// Broker thread only.
#include <chrono>
#include <cstdint>

namespace gdpr {

class clock_watch {
public:
    // A gap that moves by less than `tolerance` between two readings is drift being slewed away,
    // not a step.
    explicit clock_watch(std::chrono::milliseconds tolerance = std::chrono::seconds(1));

    struct reading {
        std::int64_t wall_ms;  // milliseconds since the epoch
        std::int64_t step_ms;  // how far the wall clock was set since the previous reading; 0: not set
    };
    reading read();
    // read() at given clock values: the wall clock's and the time since boot, in milliseconds.
    reading read_at(std::int64_t wall_ms, std::int64_t boot_ms);

private:
    std::int64_t tolerance_ms_;
    bool started_ = false;
    std::int64_t gap_ms_ = 0;  // wall minus time since boot at the previous reading
};

} // namespace gdpr
