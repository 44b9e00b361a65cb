// A broker plugin that does nothing but keep one thread asleep. bench/compare loads it as the
// `thread` configuration: the cost, to the broker, of any plugin that owns a background thread.
// Once a process has a second thread, its file table is shared, so the kernel takes a reference
// on every socket a system call names (fdget/fput) and glibc enters and leaves a cancellation
// point around each read and write. The broker makes several such calls per message; the
// plugin's writers must run off the broker thread (disk and network never block it), so this
// cost is the floor under every configuration of mosquitto-gdpr.
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mosquitto.h>

#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>

#define IDLE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

struct sleeper {
    std::mutex mutex;
    std::condition_variable wake;
    bool stopping = false;
    std::thread thread{[this] {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [this] { return stopping; });
    }};

    ~sleeper() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            stopping = true;
        }
        wake.notify_one();
        thread.join();
    }
};

} // namespace

IDLE_EXPORT int mosquitto_plugin_version(int supported_version_count, const int* supported_versions) {
    for (int i = 0; i < supported_version_count; ++i)
        if (supported_versions[i] == 5) return 5;
    return -1;
}

IDLE_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t*, void** userdata, struct mosquitto_opt*, int) {
    try {
        *userdata = new sleeper();
        return MOSQ_ERR_SUCCESS;
    } catch (...) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "idle_thread_plugin: cannot start its thread");
        return MOSQ_ERR_UNKNOWN;
    }
}

IDLE_EXPORT int mosquitto_plugin_cleanup(void* userdata, struct mosquitto_opt*, int) {
    delete static_cast<sleeper*>(userdata);
    return MOSQ_ERR_SUCCESS;
}
