// Schema reload, from the control API's reloadSchemas or the broker's SIGHUP (MOSQ_EVT_RELOAD):
// purposes.json, the schemas directory, the residency file and the processing details file are
// read and checked again on a background thread (the
// broker thread never waits on disk), and the new definitions go into use on the broker thread,
// between two messages. Definitions that do not load, that would leave personal data
// unclassified, or that would let consent fields pass without consent unasked, change nothing.
#include <optional>
#include <string>

#include "context.hpp"
#include "gdpr/errors.hpp"
#include "gdpr/schema_changes.hpp"

namespace gdpr_plugin {

namespace {

std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
    return out;
}

std::string counted(const std::map<std::string, std::size_t>& per_purpose) {
    std::string out;
    for (const auto& [purpose, n] : per_purpose) out += (out.empty() ? "" : ", ") + purpose + ": " + std::to_string(n);
    return out;
}

void report_purposes(plugin_context& ctx, const gdpr::schema_changes& changes, std::string_view requested_by) {
    const gdpr::purpose_changes& p = changes.purposes;
    if (p.any()) {
        std::string line = "reloaded purposes from " + ctx.options.purposes_file + " (" + std::string(requested_by) + ")";
        if (!p.added.empty()) line += "; added " + joined(p.added);
        if (!p.removed.empty()) line += "; removed " + joined(p.removed);
        if (!p.basis_changed.empty()) line += "; lawful basis changed: " + joined(p.basis_changed);
        if (!p.described.empty()) line += "; description changed: " + joined(p.described);
        ctx.log.notice(line);
    }
    // GDPR Art. 13(1)(c): data subjects are told the lawful basis; a change, and consent that stops
    // or starts counting again, is the data protection officer's to see.
    std::string text;
    const auto add = [&text](bool present, const std::string& part) {
        if (present) text += (text.empty() ? "" : "; ") + part;
    };
    add(!p.basis_changed.empty(), "lawful basis changed by a reload: " + joined(p.basis_changed));
    add(!changes.fields_leaving_consent.empty(),
        "fields that now pass without a consent record: " + joined(changes.fields_leaving_consent));
    add(!p.grants_held.empty(), "consent grants held, no longer counting (purpose: grants): " + counted(p.grants_held));
    add(!p.grants_revived.empty(), "consent grants given earlier that count again: " + counted(p.grants_revived));
    if (text.empty()) return;
    ctx.log.warning(text);
    publish_alert(ctx, "purposes", text);
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
    report_purposes(ctx, changes, requested_by);
}

void report_residency(plugin_context& ctx, const gdpr::residency_changes& r, std::string_view requested_by) {
    if (!r.broker_config_problem.empty()) {
        const std::string text = "residency: brokerConfig could not be read on a reload, so the bridges stay as the "
                                 "broker started them: " + gdpr::printable_text(r.broker_config_problem);
        ctx.log.warning(text);
        publish_alert(ctx, "residency", text);
    }
    if (!r.any()) return;
    std::string line = "reloaded residency from " + ctx.options.residency_file + " (" + std::string(requested_by) + ")";
    if (!r.regions_added.empty()) line += "; regions added " + joined(r.regions_added);
    if (!r.regions_removed.empty()) line += "; regions removed " + joined(r.regions_removed);
    if (!r.transfers_added.empty()) line += "; transfers added " + joined(r.transfers_added);
    if (!r.transfers_removed.empty()) line += "; transfers removed " + joined(r.transfers_removed);
    if (!r.default_region.empty()) line += "; default region " + r.default_region;
    if (r.placements_changed) line += "; client placements changed (every connection is placed again)";
    if (!r.bridge_regions.empty()) line += "; bridge regions " + joined(r.bridge_regions);
    if (!r.bridge_topics_added.empty()) line += "; bridge topics added " + joined(r.bridge_topics_added);
    if (!r.bridges_added.empty()) line += "; bridges added " + joined(r.bridges_added) + " (checked from now on)";
    ctx.log.notice(line);
    // GDPR Art. 44-46: resident data reaching new regions is the data protection officer's to see.
    std::string text;
    if (!r.widened.empty()) text = "resident personal data may reach regions it could not before: " + joined(r.widened);
    if (!r.bridges_not_applied.empty())
        text += (text.empty() ? "" : "; ") + std::string("bridges removed, or topics removed from them, in the residency "
                                                         "file or brokerConfig: ") +
                joined(r.bridges_not_applied) +
                "; the broker runs its bridges as they were at start until it restarts, so they are still checked";
    if (text.empty()) return;
    ctx.log.warning(text);
    publish_alert(ctx, "residency", text);
}

// Puts loaded definitions in use, or throws changing nothing. Broker thread.
gdpr::schema_changes commit_definitions(plugin_context& ctx, gdpr::classifier::definitions&& next,
                                        std::optional<gdpr::residency_rules>&& next_residency,
                                        std::string_view requested_by, gdpr::reload_permissions allowed) {
    // Everything that can fail happens first, on the side: the definitions in use stay until the end.
    gdpr::schema_changes changes = gdpr::compare_schema_sets(ctx.engine->schemas(), next.schemas, ctx.engine->unmatched());
    changes.purposes = gdpr::compare_purposes(ctx.engine->purposes(), next.purposes);
    if (!changes.older_versions.empty())
        throw std::runtime_error("the version of " + joined(changes.older_versions) +
                                 " goes back; give changed rules a higher version (the audit trail names rules by "
                                 "id@version)");
    // A schema missing by accident (a deploy half done) would let its topics' personal data through
    // unclassified: removing one takes an explicit request.
    if (!changes.removed.empty() && !allowed.removals)
        throw std::runtime_error("it would remove " + joined(changes.removed) +
                                 ", whose topics would no longer be classified; send reloadSchemas with "
                                 "\"allowRemovals\": true to remove schemas (a SIGHUP never does)");
    // GDPR Art. 6(1), 7: a field that no longer needs consent passes for subjects who never
    // consented or withdrew; an edit must not do that by accident.
    if ((!changes.purposes.leaving_consent.empty() || !changes.fields_leaving_consent.empty()) && !allowed.basis_changes) {
        std::string what = changes.purposes.leaving_consent.empty()
                               ? std::string("it")
                               : "purposes.json moves " + joined(changes.purposes.leaving_consent) + " off consent, so it";
        throw std::runtime_error(what + " would let fields pass without a consent record (" +
                                 joined(changes.fields_leaving_consent) +
                                 "); send reloadSchemas with \"allowBasisChanges\": true to do so (a SIGHUP never does)");
    }
    // The residency file read again: the broker's bridges stay as they run (Mosquitto reloads none).
    // Both ways point into next.schemas' elements.
    std::optional<gdpr::residency_guard::prepared_rules> residency;
    gdpr::residency_rules::schema_bindings bindings;
    if (ctx.residency && next_residency) {
        changes.residency = next_residency->carry_over(ctx.residency->rules(), ctx.engine->schemas(), next.schemas,
                                                       ctx.engine->unmatched());
        // GDPR Art. 44-46: a transfer needs an adequacy decision or safeguards; an edit must not
        // open one by accident.
        if (!changes.residency.widened.empty() && !allowed.transfer_changes)
            throw std::runtime_error("it would let resident personal data reach regions it could not reach before (" +
                                     joined(changes.residency.widened) +
                                     "); send reloadSchemas with \"allowTransferChanges\": true to do so (a SIGHUP never does)");
        if (changes.residency.any())
            residency = ctx.residency->prepare_rules(
                std::move(*next_residency), changes.residency.placements_changed || !changes.residency.default_region.empty());
    }
    if (ctx.residency && !residency) bindings = ctx.residency->rules().bind(next.schemas);
    // Consent bits follow the purposes; throws changing nothing.
    if (changes.purposes.any()) {
        auto shift = ctx.consent->use_purposes(next.purposes);
        changes.purposes.grants_held = std::move(shift.held);
        changes.purposes.grants_revived = std::move(shift.revived);
    }

    // The swap: nothing here throws, so no pointer into the old set survives it.
    ctx.engine->replace_definitions(std::move(next));
    if (residency) ctx.residency->use_rules(std::move(*residency));
    else if (ctx.residency) ctx.residency->use(std::move(bindings));
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
        if (ctx.recorder && (changes.purposes.any() || !changes.fields_leaving_consent.empty()))
            ctx.recorder->purposes_changed(requested_by, allowed.basis_changes, changes);
        if (ctx.recorder && changes.residency.any())
            ctx.recorder->residency_changed(requested_by, allowed.transfer_changes, changes.residency);
        report(ctx, changes, requested_by);
        report_residency(ctx, changes.residency, requested_by);
        if (ctx.residency)
            for (const auto& line : ctx.residency->rules().lint(ctx.engine->schemas())) ctx.log.warning("residency: " + line);
    } catch (const std::exception& e) {  // the reload has happened; only its report is incomplete
        log_internal_error(ctx, "while reporting a schema reload", e.what());
    }
    return changes;
}

} // namespace

void start_schema_reload(plugin_context& ctx, std::string requested_by, gdpr::reload_permissions allowed,
                         schema_reload_done done) {
    if (!ctx.schema_loader) return done(nullptr, "the broker is stopping");
    struct loaded {
        gdpr::classifier::definitions definitions;
        std::optional<gdpr::residency_rules> residency;
        std::optional<gdpr::processing_details> details;
        bool ok = false;
    };
    auto next = std::make_shared<loaded>();
    // load_definitions reads of the classifier only what it fixed at start (the key's presence).
    ctx.schema_loader->submit(
        [engine = ctx.engine.get(), purposes = ctx.options.purposes_file, dir = ctx.options.schemas_dir,
         residency_file = ctx.residency ? ctx.options.residency_file : std::string(),
         details_file = ctx.options.processing_details_file, next](gdpr::sqlite_db&) {
            next->definitions = engine->load_definitions(purposes, dir);
            if (!residency_file.empty())
                next->residency = gdpr::residency_rules::load(residency_file, next->definitions.schemas, true);
            if (!details_file.empty()) next->details = gdpr::load_processing_details(details_file);
            next->ok = true;
        },
        [&ctx, next, requested_by = std::move(requested_by), allowed, done = std::move(done)](const std::string& error) {
            if (!next->ok) return done(nullptr, error.empty() ? "the schemas directory could not be read" : error);
            gdpr::schema_changes changes;
            try {
                changes = commit_definitions(ctx, std::move(next->definitions), std::move(next->residency), requested_by,
                                             allowed);
            } catch (const std::exception& e) {
                return done(nullptr, e.what());
            }
            // Put in use with the definitions it was read with, never without them.
            if (next->details) {
                ctx.control->attach_processing_details(std::move(next->details));
                try {
                    ctx.log.notice("reloaded processing details from " + ctx.options.processing_details_file + " (" +
                                   requested_by + ")");
                } catch (const std::exception&) {  // only the line is lost
                }
            }
            done(&changes, "");
        });
}

int on_reload(int, void*, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    // The broker's re-checks of its clients follow in this pass of its loop, then its tick (or,
    // where it fires none, a publish, a control message, or 2 s: session_event.cpp).
    if (ctx.options.track_logins) {
        ctx.rechecking_logins = true;
        ctx.rechecking_since = std::chrono::steady_clock::now();
    }
    try {
        start_schema_reload(ctx, "SIGHUP", {}, [&ctx](const gdpr::schema_changes* changes, const std::string& error) {
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
