#include "gdpr/residency.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <arpa/inet.h>
#include <fnmatch.h>

#include <nlohmann/json.hpp>

#include "gdpr/errors.hpp"
#include "gdpr/topic_filter.hpp"
#include "gdpr/topic_router.hpp"

namespace gdpr {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* OPTION = "residency_file";

[[noreturn]] void fail(const std::string& source, const std::string& problem) {
    throw config_error(OPTION, source + ": " + problem);
}

const std::regex& region_name_pattern() {
    static const std::regex re("^[a-z][a-z0-9-]{0,31}$");
    return re;
}

void only_keys(const json& obj, const std::string& where, const std::string& source,
               std::initializer_list<const char*> allowed) {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        if (std::none_of(allowed.begin(), allowed.end(), [&](const char* k) { return it.key() == k; })) {
            std::string list;
            for (const char* k : allowed) list += (list.empty() ? "" : ", ") + std::string(k);
            fail(source, where + ": unknown key \"" + it.key() + "\" (known: " + list + ")");
        }
    }
}

std::string text_of(const json& v, const std::string& where, const std::string& source) {
    if (!v.is_string() || v.get_ref<const std::string&>().empty()) fail(source, where + " must be a non-empty string");
    return v.get<std::string>();
}

bool glob_matches(const std::string& pattern, std::string_view value) {
    const std::string text(value);
    return fnmatch(pattern.c_str(), text.c_str(), FNM_NOESCAPE) == 0;
}

// IPv4 addresses become IPv4-mapped IPv6 (::ffff:a.b.c.d) so one comparison serves both.
bool parse_address(const std::string& text, unsigned char out[16], int* max_bits) {
    in_addr v4{};
    if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
        std::memset(out, 0, 16);
        out[10] = out[11] = 0xff;
        std::memcpy(out + 12, &v4, 4);
        if (max_bits) *max_bits = 32;
        return true;
    }
    in6_addr v6{};
    if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
        std::memcpy(out, &v6, 16);
        if (max_bits) *max_bits = 128;
        return true;
    }
    return false;
}

void parse_cidr(placement_rule& rule, const std::string& where, const std::string& source) {
    const auto slash = rule.address.find('/');
    const std::string host = rule.address.substr(0, slash);
    int max_bits = 0;
    if (!parse_address(host, rule.network, &max_bits))
        fail(source, where + ".address \"" + rule.address + "\" is not an IPv4 or IPv6 address or CIDR block");
    int bits = max_bits;
    if (slash != std::string::npos) {
        const std::string len = rule.address.substr(slash + 1);
        if (len.empty() || len.size() > 3 || !std::all_of(len.begin(), len.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            std::stoi(len) > max_bits)
            fail(source, where + ".address \"" + rule.address + "\": prefix length must be 0-" + std::to_string(max_bits));
        bits = std::stoi(len);
    }
    rule.prefix_bits = bits + (max_bits == 32 ? 96 : 0);
    rule.has_address = true;
}

bool address_in(const placement_rule& rule, std::string_view address) {
    unsigned char a[16];
    if (!parse_address(std::string(address), a, nullptr)) return false;
    const int full = rule.prefix_bits / 8;
    if (std::memcmp(a, rule.network, static_cast<std::size_t>(full)) != 0) return false;
    const int rest = rule.prefix_bits % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<unsigned char>(0xff << (8 - rest));
    return (a[full] & mask) == (rule.network[full] & mask);
}

std::string read_text_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot be opened for reading");
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) fail(path, "read error");
    return text.str();
}

} // namespace

bool placement_rule::matches(const client_identity& who) const {
    if (!client_id.empty() && !glob_matches(client_id, who.client_id)) return false;
    if (!username.empty() && !glob_matches(username, who.username)) return false;
    if (!certificate_cn.empty() && !glob_matches(certificate_cn, who.certificate_cn)) return false;
    if (has_address && !address_in(*this, who.address)) return false;
    return true;
}

residency_rules residency_rules::load(const std::string& path, const schema_set& schemas) {
    const std::string text = read_text_file(path);
    const std::string dir = fs::path(path).parent_path().string();
    return from_json_text(text, schemas, path, dir.empty() ? "." : dir);
}

residency_rules residency_rules::from_json_text(std::string_view text, const schema_set& schemas,
                                                const std::string& source, const std::string& base_dir) {
    json doc;
    try {
        doc = json::parse(text.begin(), text.end());
    } catch (const json::parse_error& e) {
        fail(source, std::string("not valid JSON: ") + e.what());
    } catch (const json::exception&) {  // a number beyond a double's range (1e999)
        fail(source, "holds a number out of range");
    }
    if (!doc.is_object()) fail(source, "the top level must be an object");
    only_keys(doc, "(top level)", source, {"$schema", "description", "regions", "transfers", "defaultRegion", "clients",
                                           "bridges", "brokerConfig"});
    residency_rules r;

    const auto regions = doc.find("regions");
    if (regions == doc.end() || !regions->is_array() || regions->empty())
        fail(source, "\"regions\" must be a non-empty array of region names");
    for (const auto& v : *regions) {
        const std::string name = text_of(v, "regions[]", source);
        if (!std::regex_match(name, region_name_pattern()))
            fail(source, "region \"" + name + "\" must match ^[a-z][a-z0-9-]{0,31}$");
        if (r.region_index(name) != NO_REGION) fail(source, "region \"" + name + "\" is listed twice");
        r.regions_.push_back(name);
    }
    const std::size_t n = r.regions_.size();
    r.allowed_.assign(n * n, false);
    for (std::size_t i = 0; i < n; ++i) r.allowed_[i * n + i] = true;  // a region always receives its own data

    auto region_named = [&](const json& v, const std::string& where) {
        const std::string name = text_of(v, where, source);
        const auto i = r.region_index(name);
        if (i == NO_REGION) fail(source, where + ": \"" + name + "\" is not one of \"regions\"");
        return i;
    };

    if (auto t = doc.find("transfers"); t != doc.end()) {
        if (!t->is_object()) fail(source, "\"transfers\" must map a region to the regions that may also receive its data");
        for (auto it = t->begin(); it != t->end(); ++it) {
            const auto from = r.region_index(it.key());
            if (from == NO_REGION) fail(source, "transfers: \"" + it.key() + "\" is not one of \"regions\"");
            if (!it->is_array()) fail(source, "transfers." + it.key() + " must be an array of region names");
            for (const auto& to : *it) {
                const auto dest = region_named(to, "transfers." + it.key() + "[]");
                r.allowed_[static_cast<std::size_t>(from) * n + static_cast<std::size_t>(dest)] = true;
            }
        }
    }

    const auto def = doc.find("defaultRegion");
    if (def == doc.end()) fail(source, "\"defaultRegion\" is required: the region of clients no rule places");
    r.default_region_ = region_named(*def, "defaultRegion");

    if (auto c = doc.find("clients"); c != doc.end()) {
        if (!c->is_array()) fail(source, "\"clients\" must be an array of placement rules");
        std::size_t index = 0;
        for (const auto& rule_json : *c) {
            const std::string where = "clients[" + std::to_string(index++) + "]";
            if (!rule_json.is_object()) fail(source, where + " must be an object");
            if (rule_json.contains("listener"))
                fail(source, where + ": \"listener\" cannot be used: Mosquitto 2.0 does not tell plugins which listener a "
                                     "client connected to; place clients by \"address\" (the network the listener "
                                     "serves), \"username\", \"clientId\" or \"certCn\"");
            only_keys(rule_json, where, source, {"clientId", "username", "certCn", "address", "region"});
            placement_rule rule;
            if (auto v = rule_json.find("clientId"); v != rule_json.end()) rule.client_id = text_of(*v, where + ".clientId", source);
            if (auto v = rule_json.find("username"); v != rule_json.end()) rule.username = text_of(*v, where + ".username", source);
            if (auto v = rule_json.find("certCn"); v != rule_json.end()) rule.certificate_cn = text_of(*v, where + ".certCn", source);
            if (auto v = rule_json.find("address"); v != rule_json.end()) {
                rule.address = text_of(*v, where + ".address", source);
                parse_cidr(rule, where, source);
            }
            if (rule.client_id.empty() && rule.username.empty() && rule.certificate_cn.empty() && !rule.has_address)
                fail(source, where + " names no criterion (clientId, username, certCn or address)");
            const auto reg = rule_json.find("region");
            if (reg == rule_json.end()) fail(source, where + ": \"region\" is required");
            rule.region = region_named(*reg, where + ".region");
            r.placements_.push_back(std::move(rule));
        }
    }

    // Bridges: the file names each bridge's region; topics come from the file, the broker's
    // configuration, or both.
    struct declared {
        std::int32_t region;
        std::vector<std::string> topics;
        bool seen_in_config = false;
    };
    std::vector<std::pair<std::string, declared>> declared_bridges;
    if (auto b = doc.find("bridges"); b != doc.end()) {
        if (!b->is_array()) fail(source, "\"bridges\" must be an array");
        std::size_t index = 0;
        for (const auto& bj : *b) {
            const std::string where = "bridges[" + std::to_string(index++) + "]";
            if (!bj.is_object()) fail(source, where + " must be an object");
            only_keys(bj, where, source, {"name", "region", "topics"});
            const auto name_it = bj.find("name");
            if (name_it == bj.end()) fail(source, where + ": \"name\" is required (the bridge's connection name)");
            const std::string name = text_of(*name_it, where + ".name", source);
            for (const auto& d : declared_bridges)
                if (d.first == name) fail(source, where + ": bridge \"" + name + "\" is declared twice");
            const auto reg = bj.find("region");
            if (reg == bj.end()) fail(source, where + ": \"region\" is required (where the bridge carries data)");
            declared d{region_named(*reg, where + ".region"), {}};
            if (auto t = bj.find("topics"); t != bj.end()) {
                if (!t->is_array()) fail(source, where + ".topics must be an array of topic filters");
                for (const auto& f : *t) {
                    const std::string filter = text_of(f, where + ".topics[]", source);
                    if (const auto problem = topic_filter_problem(filter); !problem.empty())
                        fail(source, where + ".topics: \"" + filter + "\": " + problem);
                    d.topics.push_back(filter);
                }
            }
            declared_bridges.emplace_back(name, std::move(d));
        }
    }
    if (auto conf = doc.find("brokerConfig"); conf != doc.end()) {
        fs::path path = text_of(*conf, "brokerConfig", source);
        if (path.is_relative()) path = fs::path(base_dir) / path;
        for (auto& cb : read_bridge_config(path.string())) {
            bridge_route route;
            route.name = cb.name;
            route.declared_in = cb.location;
            route.topics = std::move(cb.outbound_topics);
            for (auto& d : declared_bridges) {
                if (d.first != cb.name) continue;
                d.second.seen_in_config = true;
                route.region = d.second.region;
                for (const auto& t : d.second.topics)
                    if (std::find(route.topics.begin(), route.topics.end(), t) == route.topics.end()) route.topics.push_back(t);
            }
            r.bridges_.push_back(std::move(route));
        }
    }
    const bool read_config = doc.contains("brokerConfig");
    for (auto& d : declared_bridges) {
        if (d.second.seen_in_config) continue;
        if (read_config)
            r.load_notes_.push_back("bridge " + d.first + " is declared in " + source +
                                    " but has no connection section in brokerConfig (a misspelt name?)");
        bridge_route route;
        route.name = d.first;
        route.region = d.second.region;
        route.topics = std::move(d.second.topics);
        route.declared_in = source;
        r.bridges_.push_back(std::move(route));
    }
    for (auto& b : r.bridges_) {
        b.refusal_reason = "residency: bridge " + b.name + " would carry resident personal data to " +
                           (b.region == NO_REGION ? std::string("an undeclared region") : r.region_name(b.region));
    }

    r.source_ = source;
    r.bind_schemas(schemas);
    return r;
}

void residency_rules::bind_schemas(const schema_set& schemas) { use(bind(schemas)); }

void residency_rules::use(schema_bindings&& bindings) noexcept { bound_.entries_ = std::move(bindings.entries_); }

residency_rules::schema_bindings residency_rules::bind(const schema_set& schemas) const {
    // Every schema's residency must be a region the table knows, or no rule could apply to it.
    std::vector<schema_residency> bound;
    bound.reserve(schemas.schemas.size());
    for (const auto& s : schemas.schemas) {
        std::int32_t region = NO_REGION;
        if (!s.residency.empty()) {
            region = region_index(s.residency);
            if (region == NO_REGION)
                fail(source_, "schema " + s.tag() + " (" + s.source_file + ") declares residency \"" + s.residency +
                                  "\", which is not one of \"regions\"");
        }
        schema_residency entry{&s, region, {}};
        for (std::size_t b = 0; region != NO_REGION && b < bridges_.size(); ++b) {
            const auto& bridge = bridges_[b];
            if (may_receive(region, bridge.region)) continue;
            const bool overlaps = std::any_of(bridge.topics.begin(), bridge.topics.end(), [&](const std::string& p) {
                return std::any_of(s.topics.begin(), s.topics.end(), [&](const std::string& f) { return filters_overlap(p, f); });
            });
            if (overlaps) entry.blocking.push_back(static_cast<std::int32_t>(b));
        }
        bound.push_back(std::move(entry));
    }
    std::sort(bound.begin(), bound.end(),
              [](const schema_residency& a, const schema_residency& b) { return std::less<const schema*>()(a.s, b.s); });
    schema_bindings out;
    out.entries_ = std::move(bound);
    return out;
}

const std::string& residency_rules::region_name(std::int32_t region) const {
    static const std::string none = "(none)";
    if (region < 0 || static_cast<std::size_t>(region) >= regions_.size()) return none;
    return regions_[static_cast<std::size_t>(region)];
}

std::int32_t residency_rules::region_index(std::string_view name) const {
    for (std::size_t i = 0; i < regions_.size(); ++i)
        if (regions_[i] == name) return static_cast<std::int32_t>(i);
    return NO_REGION;
}

std::int32_t residency_rules::place(const client_identity& who) const {
    for (const auto& rule : placements_)
        if (rule.matches(who)) return rule.region;
    return default_region_;
}

const residency_rules::schema_residency* residency_rules::find(const schema& s) const {
    const auto it = std::lower_bound(bound_.entries_.begin(), bound_.entries_.end(), &s,
                                     [](const schema_residency& a, const schema* b) { return std::less<const schema*>()(a.s, b); });
    return it != bound_.entries_.end() && it->s == &s ? &*it : nullptr;
}

std::int32_t residency_rules::residency_of(const schema& s) const {
    const auto* entry = find(s);
    return entry ? entry->region : NO_REGION;
}

const bridge_route* residency_rules::blocking_bridge(std::string_view topic, const schema& s) const {
    const auto* entry = find(s);
    if (!entry) return nullptr;
    for (const auto b : entry->blocking) {
        const auto& bridge = bridges_[static_cast<std::size_t>(b)];
        for (const auto& filter : bridge.topics)
            if (topic_matches(filter, topic)) return &bridge;
    }
    return nullptr;
}

std::vector<std::string> residency_rules::lint(const schema_set& schemas) const {
    std::vector<std::string> lines = load_notes_;
    for (const auto& b : bridges_) {
        if (b.region == NO_REGION)
            lines.push_back("bridge " + b.name + " (" + b.declared_in + ") has no region in the residency file: it is "
                            "treated as a region that may receive no resident personal data");
        if (b.topics.empty()) lines.push_back("bridge " + b.name + " (" + b.declared_in + ") carries no topic out");
    }
    for (const auto& s : schemas.schemas) {
        const auto region = residency_of(s);
        const bool personal = s.has_personal || topic_names_subject(s);
        if (region == NO_REGION && personal)
            lines.push_back("schema " + s.tag() + " (" + s.source_file + ") holds personal data but declares no "
                            "residency: its messages go to every region and over every bridge");
        if (region == NO_REGION || !personal) continue;
        for (const auto& b : bridges_) {
            if (may_receive(region, b.region)) continue;
            for (const auto& pattern : b.topics) {
                for (const auto& filter : s.topics) {
                    if (!filters_overlap(pattern, filter)) continue;
                    lines.push_back("bridge " + b.name + " (to " + region_name(b.region) + ") topic \"" + pattern +
                                    "\" can carry " + region_name(region) + "-resident personal data of schema " +
                                    s.tag() + " (\"" + filter + "\") abroad: such publishes will be refused with "
                                    "reason code 135; narrow the bridge's topics or drop the personal fields");
                }
            }
        }
    }
    return lines;
}

} // namespace gdpr
