// MOSQ_EVT_CONTROL on $CONTROL/gdpr/v1: operator commands. Responses go straight to the client
// that asked, on $CONTROL/gdpr/v1/response.
#include <string>

#include "context.hpp"

namespace gdpr_plugin {

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
        const std::string operator_id = ctx.operators.identify(who);
        ctx.control->handle(who, payload, [&ctx, reply_to, connection, operator_id](const std::string& response,
                                                                                 const gdpr::control_api::command_outcomes& outcomes) {
            try {
                if (ctx.recorder) ctx.recorder->control(reply_to, operator_id, outcomes);
            } catch (const std::exception& e) {
                log_internal_error(ctx, "while recording a control command", e.what());
            }
            // Answers that come later (once a change is durable) go only to the connection that
            // asked: if it is gone, or another connection has taken its client id, the answer is
            // dropped rather than handed to whoever holds that id now.
            // A mark under another client id is an earlier connection's whose memory the asking
            // one reuses (its login was not seen: no BASIC_AUTH on that listener).
            const auto mark = ctx.ending.find(connection);
            if (mark != ctx.ending.end() && mark->second.client_id == reply_to) return;
            auto live = ctx.live_by_client_id.find(reply_to);
            if (live != ctx.live_by_client_id.end()) {
                if (live->second != connection) return;
                // The same address may be a newer connection that reused the asker's memory and
                // took its client id: it must be the same operator (an export holds personal data).
                if (ctx.operators.identify(requester_of(live->second)) != operator_id) return;
            }
            const std::string topic(gdpr::CONTROL_RESPONSE_TOPIC);
            if (mosquitto_broker_publish_copy(reply_to.c_str(), topic.c_str(), static_cast<int>(response.size()),
                                              response.data(), 1, false, nullptr) != MOSQ_ERR_SUCCESS)
                ctx.log.error("could not queue a control response");
        });
        return MOSQ_ERR_SUCCESS;
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while handling a control message", e.what());
    } catch (...) {
        log_internal_error(ctx, "while handling a control message", nullptr);
    }
    return MOSQ_ERR_UNKNOWN;
}

} // namespace gdpr_plugin
