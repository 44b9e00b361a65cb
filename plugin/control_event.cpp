// MOSQ_EVT_CONTROL on $CONTROL/gdpr/v1: operator commands. Responses go straight to the client
// that asked, on $CONTROL/gdpr/v1/response.
#include <algorithm>
#include <string>

#include "context.hpp"

namespace gdpr_plugin {

namespace {

// Answers that come later (once a change is durable) go only to the connection that asked: if it
// is gone, or another connection has taken its client id, the answer is dropped rather than
// handed to whoever holds that id now.
void send_answer(plugin_context& ctx, const plugin_context::control_answer& a) {
    // A connection the broker placed in the asker's memory since has another number, or none.
    const auto asker = ctx.askers.find(a.connection);
    if (asker == ctx.askers.end() || asker->second != a.asker) return;
    // A mark under another client id is an earlier connection's whose memory the asking one
    // reuses (its login was not seen: no BASIC_AUTH on that listener).
    const auto mark = ctx.ending.find(a.connection);
    if (mark != ctx.ending.end() && mark->second.client_id == a.client_id) return;
    auto live = ctx.live_by_client_id.find(a.client_id);
    if (live != ctx.live_by_client_id.end()) {
        if (live->second != a.connection) return;
        // It must still be the same operator (an export holds personal data).
        if (ctx.operators.identify(requester_of(live->second)) != a.operator_id) return;
    }
    const std::string topic(gdpr::CONTROL_RESPONSE_TOPIC);
    if (mosquitto_broker_publish_copy(a.client_id.c_str(), topic.c_str(), static_cast<int>(a.response.size()),
                                      a.response.data(), 1, false, nullptr) != MOSQ_ERR_SUCCESS)
        ctx.log.error("could not queue a control response");
}

} // namespace

void send_due_answers(plugin_context& ctx) {
    if (ctx.answers_due.empty()) return;
    auto due = std::move(ctx.answers_due);
    ctx.answers_due.clear();
    for (const auto& a : due) {
        try {
            send_answer(ctx, a);
        } catch (const std::exception& e) {  // the others still go out
            log_internal_error(ctx, "while sending a control answer", e.what());
        }
    }
}

int on_control(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        forget_sent_will(ctx);
        drain_completions(ctx);
        erasure_step_without_ticks(ctx);
        ctx.rechecking_logins = false;  // a message is read: the SIGHUP's re-checks are over
        const auto& ev = *static_cast<mosquitto_evt_control*>(event_data);
        const gdpr::requester who = requester_of(ev.client);
        const std::string_view payload(static_cast<const char*>(ev.payload), ev.payload ? ev.payloadlen : 0);
        const std::string reply_to = who.client_id;
        const mosquitto* connection = ev.client;
        const std::uint64_t asker = ctx.askers.try_emplace(connection, ctx.last_asker + 1).first->second;
        ctx.last_asker = std::max(ctx.last_asker, asker);
        const std::string operator_id = ctx.operators.identify(who);
        ctx.control->handle(who, payload, [&ctx, reply_to, connection, asker, operator_id](
                                              const std::string& response, const gdpr::control_api::command_outcomes& outcomes) {
            try {
                if (ctx.recorder) ctx.recorder->control(reply_to, operator_id, outcomes);
            } catch (const std::exception& e) {
                log_internal_error(ctx, "while recording a control command", e.what());
            }
            plugin_context::control_answer answer{reply_to, connection, asker, operator_id,
                                                  gdpr::wiped_string(response.data(), response.size())};
            // Where the broker fires no tick (per_listener_settings true), nothing would send it later.
            if (ctx.ticks == 0) return send_answer(ctx, answer);
            ctx.answers_due.push_back(std::move(answer));
        }, export_gate(ctx, connection));
        return MOSQ_ERR_SUCCESS;
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while handling a control message", e.what());
    } catch (...) {
        log_internal_error(ctx, "while handling a control message", nullptr);
    }
    return MOSQ_ERR_UNKNOWN;
}

} // namespace gdpr_plugin
