#pragma once

#include <string_view>

namespace gdpr {

// Called first thing on each of the plugin's own threads. Names the thread (visible in top -H,
// ps -L and /proc/<pid>/task/*/comm) and, when it runs under the normal policy, moves it to
// SCHED_BATCH: the same share of the CPU as the broker thread, but its wake-ups do not preempt
// the broker thread, so a packet is not held up behind the start of a transaction where they
// share a core. Best effort: where the policy cannot be changed the thread runs as created.
void become_background_thread(std::string_view name);

} // namespace gdpr
