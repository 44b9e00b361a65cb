// MOSQ_EVT_BASIC_AUTH, MOSQ_EVT_DISCONNECT and MOSQ_EVT_TICK: connection boundaries, tracked so
// that a will can be told from an ordinary publish. The plugin never grants or refuses a login
// (that is the broker's authentication): BASIC_AUTH always defers.
#include <chrono>

#include "context.hpp"

namespace gdpr_plugin {

namespace {

void mark_ending(plugin_context& ctx, const mosquitto* client, std::string_view client_id, bool provisional) {
    const bool v5 = mosquitto_client_protocol_version(client) == 5;
    auto [it, inserted] = ctx.ending.try_emplace(client, ending_connection{std::string(client_id), provisional, ctx.ticks, v5});
    if (!inserted) {
        if (it->second.provisional && !provisional) --ctx.provisional_marks;
        it->second = ending_connection{std::string(client_id), provisional && it->second.provisional, ctx.ticks, v5};
    } else if (provisional) {
        ++ctx.provisional_marks;
    }
}

void unmark(plugin_context& ctx, const mosquitto* client) {
    auto it = ctx.ending.find(client);
    if (it == ctx.ending.end()) return;
    if (it->second.provisional) --ctx.provisional_marks;
    ctx.ending.erase(it);
}

} // namespace

void set_live(plugin_context& ctx, const std::string& client_id, const mosquitto* client) {
    if (auto held = ctx.live_client_ids.find(client); held != ctx.live_client_ids.end() && held->second != client_id) {
        auto other = ctx.live_by_client_id.find(held->second);
        if (other != ctx.live_by_client_id.end() && other->second == client) ctx.live_by_client_id.erase(other);
    }
    auto [it, inserted] = ctx.live_by_client_id.try_emplace(client_id, client);
    if (!inserted && it->second != client) {
        ctx.live_client_ids.erase(it->second);
        it->second = client;
    }
    ctx.live_client_ids[client] = client_id;
}

void connection_acted(plugin_context& ctx, const mosquitto* client) {
    ctx.loop_ran = true;
    if (!ctx.options.track_logins) {
        // Without observed logins a connection's first act is the nearest thing to its login;
        // later ones are no sign that it came back, and must not send an unanswered erase command
        // again at once (the retry schedule decides).
        if (ctx.acted_without_login.insert(client).second) erasure_client_seen(ctx, client_id_of(client));
        return;
    }
    if (ctx.live_client_ids.count(client)) return;  // its login was seen
    const std::string_view id = client_id_of(client);
    if (id.empty()) return;
    if (const auto mark = ctx.ending.find(client); mark != ctx.ending.end()) {
        // Taken over in this very pass, still acting: the newer connection holds the id.
        if (mark->second.provisional) return;
        // An ended connection does not act: this one was placed in its memory (a listener whose
        // logins the broker does not show), and the mark is stale.
        unmark(ctx, client);
    }
    ctx.ended_connections.erase(client);
    set_live(ctx, std::string(id), client);
    erasure_client_seen(ctx, id);
}

namespace {

// `newer` ended in the pass of the broker's loop whose login made it seem to take over an older
// connection: its login failed, and the older one (still marked as ending provisionally, its
// DISCONNECT not seen) holds the client id again.
void undo_takeover(plugin_context& ctx, const mosquitto* newer, const std::string& client_id) {
    const auto takeover = ctx.takeovers.find(newer);
    if (takeover == ctx.takeovers.end()) return;
    const mosquitto* older = takeover->second;
    ctx.takeovers.erase(takeover);
    const auto mark = ctx.ending.find(older);
    if (mark == ctx.ending.end() || !mark->second.provisional || mark->second.client_id != client_id) return;
    unmark(ctx, older);
    set_live(ctx, client_id, older);
}

void forget_live(plugin_context& ctx, const mosquitto* client) {
    const auto held = ctx.live_client_ids.find(client);
    if (held == ctx.live_client_ids.end()) return;
    const std::string client_id = std::move(held->second);
    ctx.live_client_ids.erase(held);
    const auto live = ctx.live_by_client_id.find(client_id);
    if (live == ctx.live_by_client_id.end() || live->second != client) return;
    ctx.live_by_client_id.erase(live);
    undo_takeover(ctx, client, client_id);
}

// The broker's re-checks after a SIGHUP run in one go, right after its reload event.
constexpr std::chrono::seconds RECHECK_PASS_AT_MOST{2};

} // namespace

int on_basic_auth(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        const auto& auth = *static_cast<mosquitto_evt_basic_auth*>(event_data);
        // SIGHUP: the broker checks every client it holds again, offline persistent sessions
        // too. One not connected stays ended: no session is opened for it, and the mark that
        // its delayed will is a will stays.
        // Where the broker fires no tick (per_listener_settings), nothing else would end the pass.
        if (ctx.rechecking_logins && std::chrono::steady_clock::now() - ctx.rechecking_since > RECHECK_PASS_AT_MOST)
            ctx.rechecking_logins = false;
        if (ctx.rechecking_logins && !ctx.live_client_ids.count(auth.client)) {
            // Ended in this process under the same id, or restored from the broker's persistence
            // file at start (such a session has no network address): an offline session. A
            // websocket login read in the same pass has an address, and is a login.
            const auto ended = ctx.ended_connections.find(auth.client);
            if ((ended != ctx.ended_connections.end() && ended->second == client_id_of(auth.client)) ||
                mosquitto_client_address(auth.client) == nullptr)
                return MOSQ_ERR_PLUGIN_DEFER;
        }
        ctx.ended_connections.erase(auth.client);
        forget_sent_will(ctx);
        ctx.gateway_checked.erase(auth.client);  // recognised afresh, certificate included
        unmark(ctx, auth.client);  // a new connection may reuse an old one's memory
        if (ctx.residency) ctx.residency->forget_connection(auth.client);  // placed afresh, certificate included
        const std::string_view id = client_id_of(auth.client);
        session_for(ctx, auth.client, "connect");  // again on SIGHUP: the same session goes on
        erasure_client_seen(ctx, id);
        if (!id.empty()) {
            const auto it = ctx.live_by_client_id.find(std::string(id));
            // Session takeover: the broker sends the older connection's will right after this
            // authentication, before that connection's DISCONNECT event.
            if (it != ctx.live_by_client_id.end() && it->second != auth.client) {
                mark_ending(ctx, it->second, id, true);
                ctx.takeovers[auth.client] = it->second;
            }
            set_live(ctx, std::string(id), auth.client);
        }
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while tracking a connection", e.what());
    } catch (...) {
        log_internal_error(ctx, "while tracking a connection", nullptr);
    }
    return MOSQ_ERR_PLUGIN_DEFER;
}

int on_disconnect(int, void* event_data, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        const auto& ev = *static_cast<mosquitto_evt_disconnect*>(event_data);
        if (ev.client) {
            ctx.gateway_checked.erase(ev.client);
            ctx.acted_without_login.erase(ev.client);
            ctx.askers.erase(ev.client);
            const std::string_view id = client_id_of(ev.client);
            mark_ending(ctx, ev.client, id, false);
            if (ctx.recorder) ctx.recorder->end_session(ev.client, "disconnected");
            if (ctx.residency) ctx.residency->forget_connection(ev.client);
            forget_current_payloads(ctx);
            // By connection: after a refused login the id is freed before this event.
            forget_live(ctx, ev.client);
            ctx.takeovers.erase(ev.client);
            if (!id.empty()) ctx.ended_connections[ev.client] = std::string(id);
        }
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while recording a disconnect", e.what());
    } catch (...) {
        log_internal_error(ctx, "while recording a disconnect", nullptr);
    }
    return MOSQ_ERR_SUCCESS;
}

// Also: a takeover mark that no will check consumed before the broker went back to its event loop
// belonged to a takeover that did not happen (the newer connection failed to authenticate).
int on_tick(int, void*, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    if (ctx.ticks == 0) watch_stop_signals(ctx);
    ++ctx.ticks;
    ctx.rechecking_logins = false;
    try {
        drain_completions(ctx);
        if (ctx.recorder) ctx.recorder->forget_last_publish();
        if (ctx.map) ctx.map->forget_last_publish();
        forget_stored_checks(ctx);
        forget_sent_will(ctx);
        if (ctx.residency) {
            ctx.residency->forget_publish();
            residency_tick(ctx);
        }
        erasure_tick(ctx);
        const auto now = std::chrono::steady_clock::now();
        report_stored_consent(ctx, now);
        if (ctx.pseudonym_index_due && now - ctx.last_index_attempt >= std::chrono::seconds(5)) {
            ctx.last_index_attempt = now;
            try {
                index_stored_pseudonyms(ctx);
            } catch (const std::exception& e) {
                log_internal_error(ctx, "while indexing subjects by pseudonym (retried in 5 s)", e.what());
            }
        }
        if (ctx.audit && now - ctx.last_audit_check >= std::chrono::milliseconds(200)) {
            ctx.last_audit_check = now;
            report_audit_problems(ctx);
        }
        // Withdrawals that could not be written are retried every few seconds (own clock: the
        // tick's time fields are not filled in by the broker).
        if (ctx.consent && ctx.consent->pending_withdrawals() > 0 && now - ctx.last_retry >= std::chrono::seconds(5)) {
            ctx.last_retry = now;
            ctx.log.warning(std::to_string(ctx.consent->pending_withdrawals()) +
                            " consent withdrawal(s) in force but not yet recorded: retrying");
            ctx.consent->retry_pending();
        }
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while finishing background work", e.what());
    } catch (...) {
        log_internal_error(ctx, "while finishing background work", nullptr);
    }
    ctx.takeovers.clear();
    if (ctx.provisional_marks > 0) {
        for (auto it = ctx.ending.begin(); it != ctx.ending.end();) {
            it = it->second.provisional ? ctx.ending.erase(it) : std::next(it);
        }
        ctx.provisional_marks = 0;
    }
    // After everything that may answer (and after the marks of takeovers that did not happen
    // are gone): the broker looks the answers' client ids up right after this pass.
    try {
        send_due_answers(ctx);
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while sending control answers", e.what());
    } catch (...) {
        log_internal_error(ctx, "while sending control answers", nullptr);
    }
    // Last: the broker decides whether to go on right after this returns. A signal that lands
    // in between ends the loop unseen; its wills are then taken for publishes, as before.
    ctx.loop_ended = stop_signalled();
    return MOSQ_ERR_SUCCESS;
}

} // namespace gdpr_plugin
