// Tells the plugin that the broker is stopping. After its main loop, Mosquitto 2.0 sends the will
// of every client still connected without a DISCONNECT event first: the plugin would take those
// WRITE checks for ordinary publishes (which MESSAGE filters), and the wills would reach the
// retained store, the persistence file and the bridges' queues unfiltered. SIGINT and SIGTERM are
// what end the loop; the broker sets its handlers after loading plugins, so the watch goes on top
// of them at the first tick and hands every signal on.
#include <atomic>
#include <csignal>
#include <utility>

#include <dlfcn.h>

#include "context.hpp"

namespace gdpr_plugin {

namespace {

// A signal handler has no userdata: this flag, and the handlers it stands in front of, are the
// plugin's only process-wide state.
std::atomic<bool> stop_signal_seen{false};
struct sigaction broker_sigint {}, broker_sigterm {};
bool watching = false;

extern "C" void on_stop_signal(int sig, siginfo_t* info, void* ucontext) {
    const struct sigaction& next = sig == SIGINT ? broker_sigint : broker_sigterm;
    // An ignored signal stops nothing.
    if (!(next.sa_flags & SA_SIGINFO) && next.sa_handler == SIG_IGN) return;
    stop_signal_seen.store(true, std::memory_order_relaxed);
    if (next.sa_flags & SA_SIGINFO) {
        if (next.sa_sigaction) next.sa_sigaction(sig, info, ucontext);
    } else if (next.sa_handler == SIG_DFL) {
        std::signal(sig, SIG_DFL);
        std::raise(sig);
    } else if (next.sa_handler != SIG_IGN) {
        next.sa_handler(sig);
    }
}

bool ours(int sig) {
    struct sigaction now {};
    return sigaction(sig, nullptr, &now) == 0 && (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_stop_signal;
}

} // namespace

void watch_stop_signals(plugin_context& ctx) {
    if (watching) return;
    struct sigaction watch {};
    watch.sa_sigaction = on_stop_signal;
    watch.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&watch.sa_mask);
    if (sigaction(SIGINT, &watch, &broker_sigint) != 0) return ctx.log.warning("could not watch SIGINT: wills sent as the broker stops are not checked");
    if (sigaction(SIGTERM, &watch, &broker_sigterm) != 0) {
        sigaction(SIGINT, &broker_sigint, nullptr);
        return ctx.log.warning("could not watch SIGTERM: wills sent as the broker stops are not checked");
    }
    watching = true;
}

void unwatch_stop_signals() {
    if (!watching) return;
    // The module may be unloaded after this: the broker's own handlers go back in place. Where
    // something installed its own handler on top of ours since (and may hand signals on to it),
    // the module stays loaded instead, so that handler never calls into unmapped code.
    bool left_in_place = false;
    for (const auto& [sig, broker] : {std::pair<int, const struct sigaction*>{SIGINT, &broker_sigint}, {SIGTERM, &broker_sigterm}}) {
        if (ours(sig)) sigaction(sig, broker, nullptr);
        else left_in_place = true;
    }
    if (left_in_place) {
        Dl_info self{};
        if (dladdr(reinterpret_cast<void*>(&on_stop_signal), &self) != 0 && self.dli_fname)
            dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    }
    watching = false;
}

bool stop_signalled() { return stop_signal_seen.load(std::memory_order_relaxed); }

} // namespace gdpr_plugin
