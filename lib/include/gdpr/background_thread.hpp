#pragma once

#include <string_view>

namespace gdpr {

// Called first thing on each of the plugin's own threads. Names the thread (visible in top -H,
// ps -L and /proc/<pid>/task/*/comm) and lowers its scheduling priority below the broker
// thread's: where they share a core, the broker thread preempts the plugin's background work as
// soon as a packet arrives, instead of waiting out a time slice behind a transaction. Nothing is
// lost by it: under the block overflow policy a full queue makes the broker thread wait, and
// the background thread then has the core to itself.
void become_background_thread(std::string_view name);

// The nice value become_background_thread gives a thread (the broker thread keeps its own).
inline constexpr int BACKGROUND_NICE = 10;

} // namespace gdpr
