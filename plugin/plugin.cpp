// Entry points: version negotiation, init (options, schemas, callback registration), cleanup.
#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "context.hpp"
#include "gdpr/errors.hpp"
#include "gdpr/secret_file.hpp"

#define GDPR_EXPORT extern "C" __attribute__((visibility("default")))

namespace gdpr_plugin {
namespace {

int broker_level(gdpr::log_level level) {
    switch (level) {
    case gdpr::log_level::debug: return MOSQ_LOG_DEBUG;
    case gdpr::log_level::info: return MOSQ_LOG_INFO;
    case gdpr::log_level::notice: return MOSQ_LOG_NOTICE;
    case gdpr::log_level::warning: return MOSQ_LOG_WARNING;
    case gdpr::log_level::error: return MOSQ_LOG_ERR;
    }
    return MOSQ_LOG_ERR;
}

struct registration {
    int event;
    MOSQ_FUNC_generic_callback callback;
};
constexpr registration CALLBACKS[] = {
    {MOSQ_EVT_MESSAGE, on_message},
    {MOSQ_EVT_ACL_CHECK, on_acl_check},
    {MOSQ_EVT_DISCONNECT, on_disconnect},
    {MOSQ_EVT_TICK, on_tick},
    {MOSQ_EVT_RELOAD, on_reload},
};

const std::string CONTROL_TOPIC_TEXT(gdpr::CONTROL_TOPIC);

// Safe to call more than once and on a partly initialised context.
void unregister_all(plugin_context& ctx) {
    if (!ctx.id) return;
    for (const auto& r : CALLBACKS) mosquitto_callback_unregister(ctx.id, r.event, r.callback, nullptr);
    if (ctx.options.track_logins) mosquitto_callback_unregister(ctx.id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, nullptr);
    mosquitto_callback_unregister(ctx.id, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC_TEXT.c_str());
}

// GDPR Art. 30(1): what the record of processing needs that no schema can know.
void attach_processing_details(plugin_context& ctx) {
    if (ctx.options.processing_details_file.empty()) return;
    try {
        ctx.control->attach_processing_details(gdpr::load_processing_details(ctx.options.processing_details_file));
    } catch (const gdpr::schema_error& e) {
        throw gdpr::config_error("processing_details_file", e.what());
    }
    ctx.log.notice("record of processing (describeProcessing): controller and processing details from " +
                   ctx.options.processing_details_file);
}

void open_consent_store(plugin_context& ctx) {
    try {
        ctx.consent = gdpr::consent_store::open(ctx.options.database, ctx.engine->purposes(), ctx.options.db_synchronous);
    } catch (const std::exception& e) {
        throw gdpr::config_error("database", e.what());
    }
    ctx.engine->attach_consent(ctx.consent.get());
    index_stored_pseudonyms(ctx);
    ctx.operators = gdpr::named_clients{ctx.options.operator_usernames, ctx.options.operator_client_ids,
                                        ctx.options.operator_cert_cns};
    ctx.control = std::make_unique<gdpr::control_api>(*ctx.engine, *ctx.consent, ctx.engine->purposes(), ctx.operators, ctx.log);
    // A request stamped after a step of the wall clock finds the register already moved with it.
    ctx.control->set_clock([c = &ctx] { return erasure_now(*c); });
    gdpr::processing_safeguards safeguards;
    safeguards.unmatched = ctx.options.unmatched;
    safeguards.pseudonym_key = !ctx.options.pseudonym_key_file.empty();
    safeguards.audit_trail = !ctx.options.audit_key_file.empty();
    safeguards.record_deliveries = ctx.options.record_deliveries;
    safeguards.default_retention_days = ctx.options.retention_days;
    ctx.control->attach_safeguards(safeguards);
    attach_processing_details(ctx);
    ctx.log.notice("consent store " + ctx.options.database + ": " + std::to_string(ctx.consent->subjects_with_consent()) +
                   " subjects with consent, " + std::to_string(ctx.consent->binding_count()) + " device bindings" +
                   (ctx.consent->held_grants() ? ", " + std::to_string(ctx.consent->held_grants()) +
                                                     " consent grants held for purposes that do not rest on consent now"
                                               : std::string()));
    if (ctx.operators.empty()) {
        ctx.log.notice("no operators named (plugin_opt_operator_*): every " + std::string(gdpr::CONTROL_TOPIC) +
                       " command is refused");
    } else {
        warn_weak_names(ctx, ctx.operators, "operators", "control API access", "operator_cert_cns");
    }
}

// `audit_secret`: the bytes of audit_key_file ("" when none is configured).
void open_audit_trail(plugin_context& ctx, std::string_view audit_secret) {
    const auto& o = ctx.options;
    if (o.audit_key_file.empty()) {
        ctx.log.notice("session recording is off: set plugin_opt_audit_key_file to keep an audit trail");
        return;
    }
    std::shared_ptr<const gdpr::audit_keys> keys = std::make_shared<const gdpr::audit_keys>(audit_secret);
    ctx.audit_keys = keys;
    gdpr::audit_options ao;
    ao.path = o.database;
    ao.synchronous = o.db_synchronous;
    ao.flush_period = std::chrono::milliseconds(o.record_flush_ms);
    ao.queue_limit = static_cast<std::size_t>(o.record_queue);
    ao.overflow = o.record_overflow == "drop" ? gdpr::overflow_policy::drop : gdpr::overflow_policy::block;
    ao.default_retention_days = static_cast<std::int32_t>(o.retention_days);
    ao.sweep_period = std::chrono::seconds(o.retention_sweep_seconds);
    try {
        ctx.audit = gdpr::audit_log::open(ao, std::move(keys));
    } catch (const gdpr::storage_error& e) {
        throw gdpr::config_error("database", e.what());
    }
    const auto deliveries = o.record_deliveries == "all"        ? gdpr::delivery_recording::all
                            : o.record_deliveries == "refusals" ? gdpr::delivery_recording::refusals
                                                                : gdpr::delivery_recording::none;
    ctx.recorder = std::make_unique<gdpr::session_recorder>(*ctx.audit, *ctx.engine, deliveries);
    try {
        ctx.export_reader = std::make_unique<gdpr::storage_worker>(
            std::make_unique<gdpr::sqlite_db>(o.database, gdpr::sqlite_db::read_only), "gdpr-export",
            gdpr::storage_worker::batching::none);
    } catch (const gdpr::storage_error& e) {
        throw gdpr::config_error("database", e.what());
    }
    // The data map seals retained topics that name a subject under the audit key: exports open them.
    ctx.control->attach_export(ctx.export_reader.get(), ctx.audit_keys, gdpr::control_api::MAX_EXPORT_BYTES,
                               std::make_unique<gdpr::topic_sealer>(audit_secret, "audit_key_file"));
    ctx.engine->keep_details(true);
    ctx.consent->observe([&ctx](std::string_view change, const std::string& subject, const std::string& detail,
                                const std::string& personal) {
        try {
            if (ctx.recorder) ctx.recorder->consent_change(change, subject, detail, personal);
        } catch (const std::exception& e) {
            log_internal_error(ctx, "while recording a consent change", e.what());
        }
    });
    ctx.log.notice("recording sessions to " + o.database + " (deliveries: " + o.record_deliveries + ", flush every " +
                   std::to_string(o.record_flush_ms) + " ms, overflow: " + o.record_overflow + ", default retention " +
                   std::to_string(o.retention_days) + " days)");
}

} // namespace
} // namespace gdpr_plugin

using namespace gdpr_plugin;

GDPR_EXPORT int mosquitto_plugin_version(int supported_version_count, const int* supported_versions) {
    for (int i = 0; i < supported_version_count; ++i) {
        if (supported_versions[i] == 5) return 5;
    }
    return -1;
}

GDPR_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t* identifier, void** userdata,
                                      struct mosquitto_opt* options, int option_count) {
    std::unique_ptr<plugin_context> ctx;
    try {
        ctx = std::make_unique<plugin_context>();
        ctx->log = gdpr::logger([](gdpr::log_level level, std::string_view line) {
            mosquitto_log_printf(broker_level(level), "%.*s", static_cast<int>(line.size()), line.data());
        });
        std::vector<std::pair<std::string, std::string>> opts;
        for (int i = 0; i < option_count; ++i) {
            opts.emplace_back(options[i].key ? options[i].key : "", options[i].value ? options[i].value : "");
        }
        ctx->options = gdpr::parse_plugin_options(opts);
        key_file_bytes keys;
        ctx->engine = gdpr::classifier::load(ctx->options, ctx->log, &keys.pseudonym);
        open_consent_store(*ctx);
        open_residency(*ctx);
        if (!ctx->options.audit_key_file.empty())
            keys.audit = gdpr::read_secret_file("audit_key_file", ctx->options.audit_key_file, 32);
        open_audit_trail(*ctx, keys.audit);
        open_erasure(*ctx, keys);
        // The worker's thread and its hand-back to the broker thread serve the reload; the job
        // needs no database, so an in-memory one stands in.
        ctx->schema_loader = std::make_unique<gdpr::storage_worker>(std::make_unique<gdpr::sqlite_db>(":memory:"),
                                                                    "gdpr-schemas", gdpr::storage_worker::batching::none);
        ctx->control->attach_schema_reload([c = ctx.get()](const std::string& requested_by,
                                                           gdpr::reload_permissions allowed,
                                                           gdpr::control_api::schema_reload_done done) {
            start_schema_reload(*c, requested_by, allowed, std::move(done));
        });
        if (ctx->options.alert_topic.rfind("$CONTROL/gdpr/", 0) != 0)
            ctx->log.warning("alert_topic '" + ctx->options.alert_topic +
                             "' lies outside $CONTROL/gdpr/: alerts name client ids, request ids and topics, and "
                             "there the broker's own ACLs alone decide who may read them");
        if (!ctx->options.track_logins && !ctx->options.operator_usernames.empty())
            ctx->log.warning("operator_usernames with track_logins false: that setting is for brokers that check no "
                             "password, where any client may send any username and so act as an operator");
        if (ctx->options.acl == gdpr::acl_fallback::defer) {
            ctx->log.notice("acl_default defer: ACL checks the plugin has no objection to are left to the broker's "
                            "other ACL sources; with no acl_file or other ACL plugin the broker then denies them");
        } else {
            ctx->log.notice("acl_default allow: ACL checks the plugin has no objection to are granted, overriding acl_file");
        }
        ctx->id = identifier;
        for (const auto& r : CALLBACKS) {
            if (mosquitto_callback_register(identifier, r.event, r.callback, nullptr, ctx.get()) != MOSQ_ERR_SUCCESS)
                throw std::runtime_error("the broker refused a callback registration");
        }
        if (mosquitto_callback_register(identifier, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC_TEXT.c_str(), ctx.get()) !=
            MOSQ_ERR_SUCCESS)
            throw std::runtime_error("the broker refused the control topic " + CONTROL_TOPIC_TEXT);
        if (ctx->options.track_logins) {
            if (mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, nullptr, ctx.get()) !=
                MOSQ_ERR_SUCCESS)
                throw std::runtime_error("the broker refused a callback registration");
            ctx->log.notice("track_logins true: the plugin observes logins (it never grants or refuses one); on a broker "
                            "with no password_file or auth plugin, Mosquitto then refuses clients that send a "
                            "username: set plugin_opt_track_logins false there");
        } else {
            ctx->log.notice("track_logins false: wills sent because a newer connection took over a client id are not "
                            "checked; wills after a lost connection still are");
        }
        *userdata = ctx.release();
        return MOSQ_ERR_SUCCESS;
    } catch (const gdpr::config_error& e) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "gdpr: Error: %s", e.what());
    } catch (const gdpr::schema_error& e) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "gdpr: Error: schema %s", e.what());
    } catch (const std::exception& e) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "gdpr: Error: cannot start: %s", e.what());
    } catch (...) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "gdpr: Error: cannot start: unknown error");
    }
    // The broker does not call cleanup after a failed init.
    if (ctx) unregister_all(*ctx);
    return MOSQ_ERR_INVAL;
}

namespace {
constexpr std::chrono::seconds AUDIT_STOP_GRACE{5};
} // namespace

GDPR_EXPORT int mosquitto_plugin_cleanup(void* userdata, struct mosquitto_opt*, int) {
    auto* ctx = static_cast<plugin_context*>(userdata);
    if (!ctx) return MOSQ_ERR_SUCCESS;
    try {
        const auto& s = ctx->engine->stats();
        ctx->log.notice("stopping: " + std::to_string(s.messages) + " publishes seen, " + std::to_string(s.classified) +
                        " classified, " + std::to_string(s.refused_invalid + s.refused_unmatched) + " refused");
        unregister_all(*ctx);
        unwatch_stop_signals();
        forget_sent_will(*ctx);
        if (ctx->schema_loader) {
            // A reload asked for from here on is answered "the broker is stopping"; one in flight
            // finishes, is answered and recorded.
            ctx->control->attach_schema_reload(nullptr);
            ctx->schema_loader->wait_idle();
            ctx->schema_loader->drain();
            ctx->schema_loader.reset();
        }
        if (ctx->export_reader) {
            // An export in progress would hold up the audit trail's last checkpoint.
            ctx->control->cancel_exports();
            ctx->export_reader.reset();
            ctx->control->attach_export(nullptr, nullptr);
        }
        if (ctx->consent) {
            ctx->consent->wait_idle();  // every accepted change reaches the disk before we stop
            ctx->consent->drain();      // and is recorded in the audit trail
        }
        if (ctx->erasure) {
            ctx->erasure->wait_idle();
            ctx->erasure->drain();
        }
        if (ctx->map) {
            ctx->map->wait_idle();  // failed forgettings and notes are tried once more
            ctx->map->drain();
            // The broker saved its retained messages before this cleanup (a clean stop).
            if (clears_reached_store(*ctx)) {
                ctx->map->clears_saved();
                ctx->map->wait_idle();
                ctx->map->drain();
            } else {
                ctx->log.notice("erasure: the broker may have stopped before it took in every retained message the "
                                "plugin cleared; those topics are cleared again at the next start");
            }
            const auto failed = ctx->map->take_forget_failures().first + ctx->forget_failures_unreported;
            if (failed > 0)
                ctx->log.error("data map: " + std::to_string(failed) +
                               " failed attempt(s) to remove erased subjects' holders from disk; the next start "
                               "loads those still on disk again");
        }
        if (ctx->audit) {
            ctx->recorder->end_all("broker stopping");
            ctx->recorder.reset();
            // A writer that cannot write gets a few seconds more; what it still cannot write is
            // lost with the process, and the log says how much.
            const auto unwritten = ctx->audit->stop(AUDIT_STOP_GRACE);
            for (const auto& p : ctx->audit->take_problems()) ctx->log.error("audit trail: " + p);
            const auto a = ctx->audit->stats();
            ctx->log.notice("audit trail: " + std::to_string(a.written) + " records written, " +
                            std::to_string(a.dropped) + " dropped, " + std::to_string(unwritten) +
                            " left unwritten at stop");
            ctx->audit.reset();
        }
    } catch (...) {
    }
    delete ctx;
    return MOSQ_ERR_SUCCESS;
}
