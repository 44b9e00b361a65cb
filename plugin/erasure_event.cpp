// Erasure glue (GDPR Art. 17): the data map fed from publishes and deliveries, the erase topics
// guarded, acknowledgements taken in, and the erasure manager's effects carried out on the broker.
#include <algorithm>
#include <chrono>
#include <string>

#include "context.hpp"
#include "gdpr/errors.hpp"
#include "gdpr/topic_filter.hpp"
#include "gdpr/topic_router.hpp"

namespace gdpr_plugin {

namespace {

// How a subject is named where it must outlive its erasure (the data map, the finished register):
// a keyed hash under the audit key, else under the pseudonymisation key; with neither, the id.
gdpr::data_map::subject_ref_fn subject_ref_for(plugin_context& ctx) {
    if (ctx.audit_keys) return [keys = ctx.audit_keys](std::string_view subject) { return keys->subject_ref(subject); };
    if (!ctx.engine->pseudonym_of("probe").empty())
        return [&ctx](std::string_view subject) { return "p:" + ctx.engine->pseudonym_of(subject); };
    return nullptr;
}

// The names the data map used before the one in use, when a key file was configured later:
// holders written then are still found by erasures and exports (GDPR Art. 15, 17(2)).
void name_earlier_holders(plugin_context& ctx, const key_file_bytes& keys) {
    const bool pseudonyms = !keys.pseudonym.empty();
    if (ctx.audit_keys && pseudonyms && ctx.map->loaded_by_pseudonym() > 0)
        ctx.map->also_named([&ctx](std::string_view subject) { return "p:" + ctx.engine->pseudonym_of(subject); });
    ctx.control->attach_data_map_names([&ctx](std::string_view subject) {
        return ctx.map ? ctx.map->names_of(subject) : std::vector<std::string>{};
    });
}

// Asks the broker to clear the retained message on `topic`. The broker takes it in at the start of
// its loop's next pass; a stop before then loses it, so the pass is noted (clears_reached_store).
// `at_start`: from plugin init, before the loop's first pass.
void clear_retained(plugin_context& ctx, const std::string& topic, bool at_start) {
    ctx.last_clear_tick = ctx.ticks;
    if (!at_start) ctx.cleared_while_running = true;
    if (mosquitto_broker_publish_copy(nullptr, topic.c_str(), 0, nullptr, 1, true, nullptr) != MOSQ_ERR_SUCCESS) {
        ctx.clear_failed = true;  // its note stays: the next start tries again
        ctx.log.error("could not clear the retained message on '" + ctx.engine->loggable_topic(topic) + "'");
    }
}

// GDPR Art. 17: the broker restores its retained messages from its persistence file, which it
// writes only now and then (autosave_interval) and when it stops cleanly. A message an erasure
// cleared before a crash comes back from there: every clear an earlier run noted and did not see
// saved is made again, before the broker takes its first client.
void clear_unsaved_again(plugin_context& ctx) {
    const std::vector<std::string> topics = ctx.map->clears_unsaved();
    for (const auto& topic : topics) {
        clear_retained(ctx, topic, true);
        ctx.map->retained_cleared(topic);
    }
    if (!topics.empty())
        ctx.log.notice("erasure: cleared " + std::to_string(topics.size()) +
                       " retained topic(s) again that erasures cleared before the broker last stopped without saving "
                       "its retained messages (its persistence file may have brought them back)");
    if (const std::size_t unreadable = ctx.map->unreadable_clears())
        ctx.log.warning("erasure: " + std::to_string(unreadable) +
                        " retained topic(s) that erasures cleared before the broker last stopped without saving are "
                        "sealed under a key the configured key files cannot open: they are not cleared again");
}

gdpr::erasure_effects effects_for(plugin_context& ctx, const key_file_bytes& keys) {
    gdpr::erasure_effects fx;
    fx.subject_ref = subject_ref_for(ctx);
    // Requests finished before the audit key named their subject by pseudonym, whether or not the
    // data map still holds anything under that name.
    if (ctx.audit_keys && !keys.pseudonym.empty())
        fx.earlier_subject_refs.push_back([&ctx](std::string_view subject) { return "p:" + ctx.engine->pseudonym_of(subject); });
    if (ctx.options.track_logins) {
        // Without observed logins the plugin cannot tell who is connected: every target is sent to.
        fx.is_connected = [&ctx](const std::string& client_id) { return ctx.live_by_client_id.count(client_id) > 0; };
    }
    fx.pseudonym = [&ctx](const std::string& subject) { return ctx.engine->pseudonym_of(subject); };
    fx.send = [&ctx](const std::string& client_id, const std::string& topic, const std::string& payload) {
        // Addressed to the client itself: no subscription is needed and nobody else receives it.
        if (mosquitto_broker_publish_copy(client_id.c_str(), topic.c_str(), static_cast<int>(payload.size()),
                                          payload.data(), 1, false, nullptr) != MOSQ_ERR_SUCCESS)
            ctx.log.error("could not queue an erase command on " + topic);
    };
    fx.clear_retained = [&ctx](const std::string& topic) { clear_retained(ctx, topic, false); };
    fx.remove_consent = [&ctx](const std::string& subject, const std::string& operator_id,
                               gdpr::consent_store::erase_done_fn done) {
        ctx.consent->erase_subject(subject, operator_id, std::move(done));
    };
    fx.shred_key = [&ctx](const std::string& subject, std::function<void()> durable) {
        if (!ctx.audit) return false;
        ctx.shreds_waiting.emplace_back(ctx.audit->shred_subject(subject), std::move(durable));
        return true;
    };
    fx.loggable_topic = [&ctx](const std::string& topic) { return ctx.engine->loggable_topic(topic); };
    fx.record = [&ctx](std::string_view step, const std::string&, const std::string& detail) {
        if (ctx.recorder) ctx.recorder->erasure(step, detail);
    };
    fx.alert = [&ctx](std::string_view kind, const std::string& text) {
        ctx.log.warning(text);
        publish_alert(ctx, kind, text);
    };
    return fx;
}

// Retained topics that name a subject in a level are stored sealed under the key the subject's
// reference comes from, so that an erasure after a restart still clears them (GDPR Art. 17).
std::unique_ptr<gdpr::topic_sealer> topic_sealer_for(const key_file_bytes& keys) {
    if (!keys.audit.empty()) return std::make_unique<gdpr::topic_sealer>(keys.audit, "audit_key_file");
    if (!keys.pseudonym.empty()) return std::make_unique<gdpr::topic_sealer>(keys.pseudonym, "pseudonym_key_file");
    return nullptr;
}

} // namespace

void open_erasure(plugin_context& ctx, const key_file_bytes& keys) {
    const auto& o = ctx.options;
    gdpr::erasure_options eo;
    eo.deadline_ms = o.erase_deadline_seconds * 1000;
    eo.first_retry_ms = o.erase_retry_seconds * 1000;
    eo.max_retry_ms = std::max<std::int64_t>(eo.first_retry_ms, 15 * 60 * 1000);
    eo.rate_limit_ms = o.erase_rate_limit_seconds * 1000;
    eo.send_rate_per_s = o.erase_send_rate;
    try {
        gdpr::data_map::subject_ref_fn ref = subject_ref_for(ctx);
        std::unique_ptr<gdpr::topic_sealer> sealer = topic_sealer_for(keys);
        gdpr::data_map::topic_check_fn in_clear;
        if (sealer) {
            // A topic that names a subject in one of its levels is stored sealed.
            in_clear = [&ctx](std::string_view topic) { return ctx.engine->loggable_topic(topic) == topic; };
        } else {
            ctx.log.warning("erasure: no audit_key_file or pseudonym_key_file, so subject ids are kept in clear in " +
                            o.database + " (data map, erasure register, retained topics that name a subject)");
        }
        // Topics sealed under the pseudonymisation key before an audit key was configured.
        std::unique_ptr<gdpr::topic_sealer> earlier_sealer =
            !keys.audit.empty() && !keys.pseudonym.empty() ? std::make_unique<gdpr::topic_sealer>(keys.pseudonym, "pseudonym_key_file")
                                                           : nullptr;
        ctx.map = gdpr::data_map::open(o.database, o.db_synchronous, std::move(ref), std::move(in_clear), std::move(sealer),
                                       std::move(earlier_sealer));
        if (const std::size_t renamed = ctx.map->renamed_from_id())
            ctx.log.notice("erasure: " + std::to_string(renamed) +
                           " data subject(s) in the data map, stored by id before a key file was configured, are now "
                           "stored under their keyed name");
        name_earlier_holders(ctx, keys);
        // GDPR Art. 25(1): an erase command names the subject by pseudonym to a client that never
        // received its id, which needs pseudonyms.
        ctx.map->names_by_pseudonym(!ctx.engine->pseudonym_of("probe").empty());
        if (!keys.audit.empty() && !keys.pseudonym.empty())  // a separate instance: used on the export thread
            ctx.control->attach_earlier_topic_opener(std::make_shared<gdpr::topic_sealer>(keys.pseudonym, "pseudonym_key_file"));
        if (const std::size_t unreadable = ctx.map->unreadable_topics())
            ctx.log.warning("erasure: the data map holds " + std::to_string(unreadable) +
                            " sealed retained topic(s) that the configured key files cannot open (sealed under "
                            "another key); an erasure will not clear their retained messages");
        clear_unsaved_again(ctx);
        ctx.erasure = gdpr::erasure_manager::open(o.database, gdpr::erase_topics(o.erase_topic), eo, *ctx.map,
                                                  effects_for(ctx, keys), o.db_synchronous);
        if (const std::size_t renamed = ctx.erasure->requests_renamed())
            ctx.log.notice("erasure: " + std::to_string(renamed) +
                           " erasure request(s), made under no key file or an earlier one, now name their subject as "
                           "the key files in use do");
    } catch (const gdpr::storage_error& e) {
        throw gdpr::config_error("database", e.what());
    }
    ctx.engine->keep_subjects(true);
    ctx.engine->prefetch_subjects_with([map = ctx.map.get()](std::string_view subject) { map->prefetch(subject); });
    ctx.control->attach_erasure(ctx.erasure.get());
    ctx.subject_quota = std::make_unique<gdpr::subject_quota>(static_cast<std::uint32_t>(o.new_subjects_per_minute),
                                                              static_cast<std::uint32_t>(o.new_subjects_burst));
    ctx.gateways = gdpr::named_clients{o.gateway_usernames, o.gateway_client_ids, o.gateway_cert_cns};
    if (!ctx.gateways.empty()) {
        ctx.gateway_quota = std::make_unique<gdpr::subject_quota>(static_cast<std::uint32_t>(o.gateway_new_subjects_per_minute),
                                                                  static_cast<std::uint32_t>(o.gateway_new_subjects_burst));
        ctx.log.notice("gateways (" + std::to_string(ctx.gateways.usernames.size() + ctx.gateways.client_ids.size() +
                                                     ctx.gateways.certificate_cns.size()) +
                       " named) bring in new data subjects from their own allowance: " +
                       (ctx.gateway_quota->limited() ? std::to_string(ctx.gateway_quota->burst()) + " each, then " +
                                                           std::to_string(ctx.gateway_quota->per_minute()) + " per minute"
                                                     : std::string("no limit")));
        warn_weak_names(ctx, ctx.gateways, "gateways", "the larger allowance of new data subjects", "gateway_cert_cns");
    }
    ctx.control->attach_subject_quota(ctx.subject_quota.get(), ctx.gateway_quota.get());
    if (!ctx.subject_quota->limited())
        ctx.log.warning("new_subjects_per_minute 0: a client may bring in any number of new data subjects, and the "
                        "data map grows with them without bound");
    ctx.log.notice("erasure: commands on " + o.erase_topic + " (acknowledged on " + o.erase_topic + "/ack), deadline " +
                   std::to_string(o.erase_deadline_seconds) + " s, first retry after " +
                   std::to_string(o.erase_retry_seconds) + " s, at most " + std::to_string(o.erase_send_rate) +
                   " commands/s; data map holds " + std::to_string(ctx.map->subjects()) + " subjects (new ones: " +
                   (ctx.subject_quota->limited()
                        ? std::to_string(ctx.subject_quota->burst()) + " per client, then " +
                              std::to_string(ctx.subject_quota->per_minute()) + " per minute"
                        : std::string("no limit")) +
                   "); " + std::to_string(ctx.erasure->in_progress()) + " request(s) resume");
}

bool clears_reached_store(const plugin_context& ctx) {
    if (ctx.clear_failed) return false;
    // Two ticks after the last: a pass of the loop began in between, whose start took it in.
    if (ctx.ticks > 0) return ctx.ticks >= ctx.last_clear_tick + 2;
    // No ticks (per_listener_settings true, or a broker stopped before its first tick): only
    // clears made at start are known to have been taken in, and only once a client's act shows
    // that the loop began a pass; one made since may have come in its last.
    return !ctx.cleared_while_running && ctx.loop_ran;
}

void erasure_step_without_ticks(plugin_context& ctx) {
    if (!ctx.erasure || ctx.ticks > 0) return;  // the broker ticks: erasure_tick runs there
    const auto now = std::chrono::steady_clock::now();
    if (now - ctx.last_untimed_erasure_step < std::chrono::milliseconds(100)) return;
    ctx.last_untimed_erasure_step = now;
    erasure_tick(ctx);
}

std::int64_t erasure_now(plugin_context& ctx) {
    const auto now = ctx.wall_clock.read();
    if (now.step_ms != 0 && ctx.erasure) {
        ctx.erasure->clock_set(now.step_ms);
        if (ctx.erasure->in_progress() > 0)
            ctx.log.warning("erasure: the wall clock was set " + std::string(now.step_ms > 0 ? "forward" : "back") + " by " +
                            std::to_string((now.step_ms > 0 ? now.step_ms : -now.step_ms) / 1000) + " s; the " +
                            std::to_string(ctx.erasure->in_progress()) +
                            " request(s) in progress keep the time their retries and deadlines had left");
    }
    return now.wall_ms;
}

void erasure_tick(plugin_context& ctx) {
    if (!ctx.erasure) return;
    const auto now = std::chrono::steady_clock::now();
    report_quota_refusals(ctx, now);
    if (ctx.subject_quota) ctx.subject_quota->prune(now);
    if (ctx.gateway_quota) ctx.gateway_quota->prune(now);
    ctx.map->flush();
    if (ctx.map->has_write_failures()) {
        const auto [failed, error] = ctx.map->take_write_failures();
        const std::string text = "data map: " + std::to_string(failed) +
                                 " holder record(s) could not be written (kept in memory; a restart would forget them): " +
                                 error;
        ctx.log.error(text);
        publish_alert(ctx, "data_map", text);
    }
    if (const auto [failed, error] = ctx.map->take_forget_failures(); failed > 0) {
        ctx.forget_failures_unreported += failed;
        ctx.forget_last_error = error;
    }
    if (ctx.forget_failures_unreported > 0 &&
        (ctx.forget_alerted == std::chrono::steady_clock::time_point{} || now - ctx.forget_alerted >= std::chrono::minutes(1))) {
        const std::string text = "data map: " + std::to_string(ctx.forget_failures_unreported) +
                                 " failed attempt(s) to remove erased subjects' holders from disk or to note the "
                                 "retained topics an erasure cleared (tried again every 5 s while the broker runs; a "
                                 "restart before one succeeds recalls the holders, or leaves a topic uncleared should "
                                 "the broker's file bring its message back): " +
                                 ctx.forget_last_error;
        ctx.log.error(text);
        publish_alert(ctx, "data_map", text);
        ctx.forget_failures_unreported = 0;
        ctx.forget_alerted = now;
    }
    if (!ctx.shreds_waiting.empty() && ctx.audit) {
        const std::int64_t wiped = ctx.audit->shredded_through();
        std::vector<std::function<void()>> ready;
        auto& waiting = ctx.shreds_waiting;
        for (auto it = waiting.begin(); it != waiting.end();) {
            if (it->first > wiped) {
                ++it;
                continue;
            }
            ready.push_back(std::move(it->second));
            it = waiting.erase(it);
        }
        for (auto& done : ready) done();
    }
    ctx.erasure->tick(erasure_now(ctx));
}

void erasure_client_seen(plugin_context& ctx, std::string_view client_id) {
    if (ctx.erasure && ctx.erasure->in_progress() > 0 && !client_id.empty())
        ctx.erasure->client_connected(std::string(client_id), erasure_now(ctx));
}

decision check_erase_topic(plugin_context& ctx, const mosquitto_evt_acl_check& acl, std::string_view topic) {
    if (!ctx.erasure || topic.empty()) return decision::no_objection;
    const auto& topics = ctx.erasure->topics();
    const std::string_view own = client_id_of(acl.client);
    if (acl.access == MOSQ_ACL_SUBSCRIBE || acl.access == MOSQ_ACL_UNSUBSCRIBE) {
        // A filter naming another client's erase topic is refused; wildcard filters are allowed,
        // and what they would match of other clients' erase topics is refused at delivery. The
        // caller passes a shared subscription's filter without "$share/<group>/".
        if (topic.find_first_of("+#") != std::string_view::npos) return decision::no_objection;
        const auto a = topics.parse(topic);
        return a && a->client_id != own ? decision::deny : decision::no_objection;
    }
    const auto a = topics.parse(topic);
    if (!a) return decision::no_objection;
    if (acl.access == MOSQ_ACL_WRITE) {
        // Only the plugin sends erase commands; only the addressed client acknowledges them.
        return a->ack && a->client_id == own ? decision::no_objection : decision::deny;
    }
    return a->client_id == own ? decision::no_objection : decision::deny;  // READ
}

bool handle_erase_ack(plugin_context& ctx, const mosquitto_evt_message& msg, std::string_view topic) {
    if (!ctx.erasure) return false;
    const auto a = ctx.erasure->topics().parse(topic);
    if (!a || !a->ack || a->client_id != client_id_of(msg.client)) return false;
    const std::string_view payload(static_cast<const char*>(msg.payload), msg.payload ? msg.payloadlen : 0);
    const std::string error = ctx.erasure->acknowledge(a->client_id, payload, erasure_now(ctx));
    if (!error.empty()) ctx.log.warning("ignored an erase acknowledgement on " + std::string(topic) + ": " + error);
    return true;
}

} // namespace gdpr_plugin
