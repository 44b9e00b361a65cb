// Schema reload, from the control API's reloadSchemas or the broker's SIGHUP (MOSQ_EVT_RELOAD):
// the schemas directory is read and checked again on a background thread (the broker thread
// never waits on disk), and the new set goes into use on the broker thread, between two messages.
// A set that does not load, or that would leave personal data unclassified, changes nothing.
#include <string>

#include "context.hpp"
#include "gdpr/errors.hpp"

namespace gdpr_plugin {

namespace {

std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
    return out;
}

void report(plugin_context& ctx, const gdpr::schema_changes& changes, std::string_view requested_by) {
    std::string line = "reloaded " + std::to_string(changes.schemas) + " schemas (" +
                       std::to_string(changes.topic_filters) + " topic filters) from " + ctx.options.schemas_dir + " (" +
                       std::string(requested_by) + ")";
    if (!changes.added.empty()) line += "; added " + joined(changes.added);
    if (!changes.removed.empty()) line += "; removed " + joined(changes.removed);
    if (!changes.new_versions.empty()) line += "; new versions " + joined(changes.new_versions);
    if (changes.added.empty() && changes.removed.empty() && changes.new_versions.empty() &&
        changes.edited_unversioned.empty())
        line += "; no schema changed";
    ctx.log.notice(line);
    if (!changes.edited_unversioned.empty()) {
        // The audit trail names a publish's rules by id@version only.
        const std::string text = "schema rules changed without a new \"version\": " + joined(changes.edited_unversioned) +
                                 "; records made before and after the reload name the same version for different rules";
        ctx.log.warning(text);
        publish_alert(ctx, "schemas", text);
    }
    if (!changes.removed.empty()) {
        const std::string text = "schema(s) removed by a reload: " + joined(changes.removed) +
                                 "; their topics are no longer classified (unmatched_topics decides)";
        ctx.log.warning(text);
        publish_alert(ctx, "schemas", text);
    }
    ctx.engine->log_schema_warnings(ctx.log);
}

// Puts a loaded set in use, or throws changing nothing. Broker thread.
gdpr::schema_changes commit_schemas(plugin_context& ctx, gdpr::schema_set&& next, std::string_view requested_by,
                                    bool allow_removals) {
    // Everything that can fail happens first, on the side: the schemas in use stay until the end.
    gdpr::schema_changes changes = gdpr::compare_schema_sets(ctx.engine->schemas(), next);
    if (!changes.older_versions.empty())
        throw std::runtime_error("the version of " + joined(changes.older_versions) +
                                 " goes back; give changed rules a higher version (the audit trail names rules by "
                                 "id@version)");
    // A schema missing by accident (a deploy half done) would let its topics' personal data through
    // unclassified: removing one takes an explicit request.
    if (!changes.removed.empty() && !allow_removals)
        throw std::runtime_error("it would remove " + joined(changes.removed) +
                                 ", whose topics would no longer be classified; send reloadSchemas with "
                                 "\"allowRemovals\": true to remove schemas (a SIGHUP never does)");
    gdpr::residency_rules::schema_bindings bindings;
    if (ctx.residency) bindings = ctx.residency->rules().bind(next);  // points into next.schemas' elements

    // The swap: nothing here throws, so no pointer into the old set survives it.
    ctx.engine->replace_schemas(std::move(next));
    if (ctx.residency) ctx.residency->use(std::move(bindings));
    forget_current_payloads(ctx);
    if (ctx.recorder) ctx.recorder->forget_schemas();
    // A schema that now pseudonymises its subject field needs the pseudonym index; until it is
    // built, its stored messages look withdrawn (fail closed) and the tick tries again.
    try {
        index_stored_pseudonyms(ctx);
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while indexing subjects by pseudonym after a schema reload (retried at the next tick)",
                           e.what());
    }

    try {
        report(ctx, changes, requested_by);
        if (ctx.residency)
            for (const auto& line : ctx.residency->rules().lint(ctx.engine->schemas())) ctx.log.warning("residency: " + line);
    } catch (const std::exception& e) {  // the reload has happened; only its report is incomplete
        log_internal_error(ctx, "while reporting a schema reload", e.what());
    }
    return changes;
}

} // namespace

void start_schema_reload(plugin_context& ctx, std::string requested_by, bool allow_removals, schema_reload_done done) {
    if (!ctx.schema_loader) return done(nullptr, "the broker is stopping");
    struct loaded {
        gdpr::schema_set set;
        bool ok = false;
    };
    auto next = std::make_shared<loaded>();
    // load_schemas reads only what the classifier fixed at start (purposes, the key's presence).
    ctx.schema_loader->submit(
        [engine = ctx.engine.get(), dir = ctx.options.schemas_dir, next](gdpr::sqlite_db&) {
            next->set = engine->load_schemas(dir);
            next->ok = true;
        },
        [&ctx, next, requested_by = std::move(requested_by), allow_removals, done = std::move(done)](const std::string& error) {
            if (!next->ok) return done(nullptr, error.empty() ? "the schemas directory could not be read" : error);
            gdpr::schema_changes changes;
            try {
                changes = commit_schemas(ctx, std::move(next->set), requested_by, allow_removals);
            } catch (const std::exception& e) {
                return done(nullptr, e.what());
            }
            done(&changes, "");
        });
}

int on_reload(int, void*, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    try {
        start_schema_reload(ctx, "SIGHUP", false, [&ctx](const gdpr::schema_changes* changes, const std::string& error) {
            if (ctx.recorder) ctx.recorder->control("", "broker:SIGHUP", {{"reloadSchemas", changes != nullptr}});
            if (!changes) {
                const std::string text = "schemas not reloaded on SIGHUP, the ones in use stay: " + gdpr::printable_text(error);
                ctx.log.error(text);
                publish_alert(ctx, "schemas", text);
            }
        });
    } catch (const std::exception& e) {
        log_internal_error(ctx, "while starting a schema reload on SIGHUP", e.what());
    } catch (...) {
        log_internal_error(ctx, "while starting a schema reload on SIGHUP", nullptr);
    }
    // Mosquitto 2.0 runs the next plugin's reload (and re-initialises auth plugins) only after a
    // callback that defers; any other answer ends its SIGHUP handling there.
    return MOSQ_ERR_PLUGIN_DEFER;
}

} // namespace gdpr_plugin
