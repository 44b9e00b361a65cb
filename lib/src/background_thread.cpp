#include "gdpr/background_thread.hpp"

#include <string>

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace gdpr {

void become_background_thread(std::string_view name) {
    // Linux keeps thread names to 15 bytes.
    const std::string short_name(name.substr(0, 15));
    pthread_setname_np(pthread_self(), short_name.c_str());
    // Best effort: a thread that cannot be lowered (a seccomp filter, an unusual kernel) runs at
    // the broker's priority, as it would without this call.
    sched_param none{};
    sched_setscheduler(0, SCHED_BATCH, &none);  // 0: the calling thread; no wake-up preemption of the broker
    const int self = static_cast<int>(::syscall(SYS_gettid));
    const int current = getpriority(PRIO_PROCESS, static_cast<id_t>(self));
    if (current < BACKGROUND_NICE) setpriority(PRIO_PROCESS, static_cast<id_t>(self), BACKGROUND_NICE);
}

} // namespace gdpr
