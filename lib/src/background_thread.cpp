#include "gdpr/background_thread.hpp"

#include <string>

#include <pthread.h>
#include <sched.h>

namespace gdpr {

void become_background_thread(std::string_view name) {
    // A thread someone already runs under SCHED_IDLE or a real-time policy keeps it.
    if (sched_getscheduler(0) == SCHED_OTHER) {
        sched_param none{};
        sched_setscheduler(0, SCHED_BATCH, &none);  // 0: the calling thread
    }
    // Named last: a thread that shows its name has its policy too.
    const std::string short_name(name.substr(0, 15));  // Linux keeps 15 bytes
    pthread_setname_np(pthread_self(), short_name.c_str());
}

} // namespace gdpr
