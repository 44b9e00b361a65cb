// Schema reload, from the control API's reloadSchemas or the broker's SIGHUP (MOSQ_EVT_RELOAD):
// the schemas directory is read and checked again, and the new set goes into use at once, on
// the broker thread, between two messages. A set that does not load changes nothing.
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

} // namespace

gdpr::schema_changes reload_schemas(plugin_context& ctx, std::string_view requested_by) {
    gdpr::schema_set next = ctx.engine->load_schemas(ctx.options.schemas_dir);
    if (ctx.residency) {
        // Every new schema's residency must be a region of the rules in force (checked on a copy:
        // nothing changes on a refusal).
        gdpr::residency_rules check = ctx.residency->rules();
        check.bind_schemas(next);
    }
    gdpr::schema_changes changes = gdpr::compare_schema_sets(ctx.engine->schemas(), next);
    for (const auto& w : next.warnings) ctx.log.warning(w);
    // From here on nothing throws: the old schemas go, and whatever pointed into them is renewed.
    ctx.engine->replace_schemas(std::move(next));
    if (ctx.residency) {
        ctx.residency->rebind_schemas(ctx.engine->schemas());
        for (const auto& line : ctx.residency->rules().lint(ctx.engine->schemas())) ctx.log.warning("residency: " + line);
    }
    forget_current_payloads(ctx);
    if (ctx.recorder) ctx.recorder->forget_schemas();
    std::string line = "reloaded " + std::to_string(changes.schemas) + " schemas (" +
                       std::to_string(changes.topic_filters) + " topic filters) from " + ctx.options.schemas_dir +
                       " (" + std::string(requested_by) + ")";
    if (!changes.added.empty()) line += "; added " + joined(changes.added);
    if (!changes.removed.empty()) line += "; removed " + joined(changes.removed);
    if (!changes.new_versions.empty()) line += "; new versions " + joined(changes.new_versions);
    if (changes.added.empty() && changes.removed.empty() && changes.new_versions.empty() &&
        changes.edited_unversioned.empty())
        line += "; no schema changed";
    ctx.log.notice(line);
    for (const auto& s : ctx.engine->schemas().schemas) {
        if (s.needs_consent && s.subject.kind == gdpr::subject_kind::none)
            ctx.log.warning("schema " + s.tag() + " has fields whose purpose rests on consent but declares no \"subject\": "
                            "those fields will always be dropped");
    }
    if (!changes.edited_unversioned.empty()) {
        // The audit trail names a publish's rules by id@version only.
        const std::string text = "schema file(s) changed without a new \"version\": " + joined(changes.edited_unversioned) +
                                 "; records made before and after the reload name the same version for different rules";
        ctx.log.warning(text);
        publish_alert(ctx, "schemas", text);
    }
    return changes;
}

int on_reload(int, void*, void* userdata) {
    auto& ctx = *static_cast<plugin_context*>(userdata);
    bool ok = false;
    try {
        reload_schemas(ctx, "SIGHUP");
        ok = true;
    } catch (const std::exception& e) {
        const std::string text = std::string("schemas not reloaded on SIGHUP, the ones in use stay: ") + e.what();
        ctx.log.error(text);
        try {
            publish_alert(ctx, "schemas", text);
        } catch (...) {
        }
    } catch (...) {
        ctx.log.error("schemas not reloaded on SIGHUP, the ones in use stay: internal error");
    }
    try {
        if (ctx.recorder) ctx.recorder->control("", "broker:SIGHUP", {{"reloadSchemas", ok}});
    } catch (...) {
        log_internal_error(ctx, "while recording a schema reload", nullptr);
    }
    return MOSQ_ERR_SUCCESS;
}

} // namespace gdpr_plugin
