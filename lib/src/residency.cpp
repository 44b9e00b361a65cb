#include "gdpr/residency.hpp"

#include "json_file.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include <arpa/inet.h>
#include <fnmatch.h>

#include <nlohmann/json.hpp>

#include "gdpr/errors.hpp"
#include "gdpr/topic_filter.hpp"
#include "gdpr/topic_moves.hpp"
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

// Whether two addresses (IPv6 form) agree in their first `bits` bits.
bool same_prefix(const unsigned char a[16], const unsigned char b[16], int bits) {
    const int full = bits / 8;
    if (std::memcmp(a, b, static_cast<std::size_t>(full)) != 0) return false;
    const int rest = bits % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<unsigned char>(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

bool address_in(const placement_rule& rule, std::string_view address) {
    unsigned char a[16];
    if (!parse_address(std::string(address), a, nullptr)) return false;
    return same_prefix(a, rule.network, rule.prefix_bits);
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

residency_rules residency_rules::load(const std::string& path, const schema_set& schemas, bool reloading) {
    const std::string text = read_text_file(path);
    const std::string dir = fs::path(path).parent_path().string();
    return from_json_text(text, schemas, path, dir.empty() ? "." : dir, reloading);
}

residency_rules residency_rules::from_json_text(std::string_view text, const schema_set& schemas,
                                                const std::string& source, const std::string& base_dir,
                                                bool reloading) {
    json doc;
    try {
        doc = json_file::parse_unique_keys(text);
    } catch (const json_file::duplicate_key& e) {
        fail(source, e.what());
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
    if (def == doc.end())
        fail(source, "\"defaultRegion\" is required: the region of clients no rule places (null: none, so that they "
                     "receive no resident personal data)");
    // null fails closed: a client no rule places (say, one whose client id or address is new)
    // receives no resident personal data.
    r.default_region_ = def->is_null() ? NO_REGION : region_named(*def, "defaultRegion");

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
                    // Matched against the topics schemas cover: a group prefix would match none of them.
                    if (parse_shared_subscription(filter))
                        fail(source, where + ".topics: \"" + filter +
                                         "\": name the topic filter the bridge carries, without \"$share/<group>/\"");
                    d.topics.push_back(filter);
                }
            }
            declared_bridges.emplace_back(name, std::move(d));
        }
    }
    if (auto conf = doc.find("brokerConfig"); conf != doc.end()) {
        fs::path path = text_of(*conf, "brokerConfig", source);
        if (path.is_relative()) path = fs::path(base_dir) / path;
        std::vector<configured_bridge> configured;
        try {
            configured = read_bridge_config(path.string());
        } catch (const config_error& e) {
            if (!reloading) throw;
            r.broker_config_problem_ = e.what();
        }
        if (r.broker_config_problem_.empty() && configured.empty())
            r.load_notes_.push_back("brokerConfig " + path.string() +
                                    " configures no bridge (no \"connection\" line): a wrong file would leave its "
                                    "bridges unchecked");
        for (auto& cb : configured) {
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
    const bool read_config = doc.contains("brokerConfig") && r.broker_config_problem_.empty();
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

namespace {

std::set<std::string> transfer_pairs(const residency_rules& r) {
    std::set<std::string> pairs;
    const auto n = static_cast<std::int32_t>(r.region_count());
    for (std::int32_t from = 0; from < n; ++from)
        for (std::int32_t to = 0; to < n; ++to)
            if (from != to && r.may_receive(from, to)) pairs.insert(r.region_name(from) + " -> " + r.region_name(to));
    return pairs;
}

std::vector<std::string> only_in(const std::set<std::string>& a, const std::set<std::string>& b) {
    std::vector<std::string> out;
    std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
    return out;
}

// The regions, by name, whose resident data a receiver in `region` may have; with `among`, only
// those among its regions (data resident in a region new in a reload comes from a schema moved
// there, which is compared on its own).
std::set<std::string> receivable(const residency_rules& r, std::int32_t region, const residency_rules* among = nullptr) {
    std::set<std::string> from;
    for (std::int32_t d = 0; d < static_cast<std::int32_t>(r.region_count()); ++d)
        if (r.may_receive(d, region) && (!among || among->region_index(r.region_name(d)) != residency_rules::NO_REGION))
            from.insert(r.region_name(d));
    return from;
}

// The regions, by name, data resident in `region` may go to; nullopt: anywhere (no residency).
std::optional<std::set<std::string>> destinations(const residency_rules& r, std::int32_t region) {
    if (region == residency_rules::NO_REGION) return std::nullopt;
    std::set<std::string> to;
    for (std::int32_t d = 0; d < static_cast<std::int32_t>(r.region_count()); ++d)
        if (r.may_receive(region, d)) to.insert(r.region_name(d));
    return to;
}

bool wider(const std::set<std::string>& now, const std::set<std::string>& before) {
    return !std::includes(before.begin(), before.end(), now.begin(), now.end());
}

bool same_criteria(const placement_rule& a, const placement_rule& b) {
    return a.client_id == b.client_id && a.username == b.username && a.certificate_cn == b.certificate_cn &&
           a.address == b.address;
}

// False only when no value can match both patterns: their literal beginnings differ, or one is a
// plain value the other does not match.
bool globs_may_overlap(const std::string& a, const std::string& b) {
    if (a.empty() || b.empty()) return true;  // a criterion only one of them names
    const auto literal_end = [](const std::string& p) { return std::min(p.find_first_of("*?["), p.size()); };
    const std::size_t la = literal_end(a), lb = literal_end(b);
    const std::size_t common = std::min(la, lb);
    if (a.compare(0, common, b, 0, common) != 0) return false;
    if (la == a.size()) return glob_matches(b, a);
    if (lb == b.size()) return glob_matches(a, b);
    // Their literal endings, after the last wildcard, must agree too: "*.plant-a" and "*.plant-b".
    const auto literal_start = [](const std::string& p) { return p.find_last_of("*?]") + 1; };
    const std::size_t ea = a.size() - literal_start(a), eb = b.size() - literal_start(b);
    const std::size_t tail = std::min(ea, eb);
    return a.compare(a.size() - tail, tail, b, b.size() - tail, tail) == 0;
}

bool blocks_may_overlap(const placement_rule& a, const placement_rule& b) {
    if (!a.has_address || !b.has_address) return true;
    return same_prefix(a.network, b.network, std::min(a.prefix_bits, b.prefix_bits));  // one holds the other
}

// Whether one client could match both rules (false only when it provably cannot).
bool may_match_one_client(const placement_rule& a, const placement_rule& b) {
    return globs_may_overlap(a.client_id, b.client_id) && globs_may_overlap(a.username, b.username) &&
           globs_may_overlap(a.certificate_cn, b.certificate_cn) && blocks_may_overlap(a, b);
}

std::string criteria_text(const placement_rule& r) {
    std::string text;
    for (const auto& [key, value] : {std::pair<const char*, const std::string*>{"clientId", &r.client_id},
                                     {"username", &r.username},
                                     {"certCn", &r.certificate_cn},
                                     {"address", &r.address}})
        if (!value->empty()) text += (text.empty() ? "" : " ") + std::string(key) + " " + *value;
    return text;
}

const bridge_route* bridge_named(const std::vector<bridge_route>& bridges, const std::string& name) {
    for (const auto& b : bridges)
        if (b.name == name) return &b;
    return nullptr;
}

} // namespace

nlohmann::json to_json(const residency_changes& c) {
    return {{"regionsAdded", c.regions_added},       {"regionsRemoved", c.regions_removed},
            {"transfersAdded", c.transfers_added},   {"transfersRemoved", c.transfers_removed},
            {"defaultRegion", c.default_region},     {"placementsChanged", c.placements_changed},
            {"bridgeRegions", c.bridge_regions},     {"bridgeTopicsAdded", c.bridge_topics_added},
            {"bridgesAdded", c.bridges_added},       {"widened", c.widened},
            {"bridgesNotApplied", c.bridges_not_applied}, {"brokerConfigProblem", c.broker_config_problem}};
}

void residency_rules::compare_placements(const residency_rules& running, residency_changes& c) const {
    if (running.region_name(running.default_region_) != region_name(default_region_)) {
        c.default_region = running.region_name(running.default_region_) + " -> " + region_name(default_region_);
        if (wider(receivable(*this, default_region_, &running), receivable(running, running.default_region_)))
            c.widened.push_back("defaultRegion " + c.default_region);
    }
    c.placements_changed = running.placements_.size() != placements_.size() ||
                           !std::equal(placements_.begin(), placements_.end(), running.placements_.begin(),
                                       [&](const placement_rule& a, const placement_rule& b) {
                                           return same_criteria(a, b) && region_name(a.region) == running.region_name(b.region);
                                       });
    // A client is placed by the first rule it matches, else by the default region. Every pair of an
    // old placement (rule or default) and a new one that one client could have is checked: the two
    // must be able to match one client, and a rule kept (same criteria) still places its clients
    // itself or by a rule before it. Removed rules, rules put before others and rules that now
    // match clients of another are all such pairs.
    const auto index_of = [](const std::vector<placement_rule>& rules, const placement_rule& r) {
        const auto it = std::find_if(rules.begin(), rules.end(), [&](const placement_rule& o) { return same_criteria(o, r); });
        return it == rules.end() ? std::optional<std::size_t>() : std::optional<std::size_t>(it - rules.begin());
    };
    std::set<std::string> moves;
    const std::size_t old_count = running.placements_.size(), new_count = placements_.size();
    std::vector<std::optional<std::size_t>> was_at;  // each new rule's place among the old ones
    for (const auto& rule : placements_) was_at.push_back(index_of(running.placements_, rule));
    for (std::size_t i = 0; i <= old_count; ++i) {
        const placement_rule* before = i < old_count ? &running.placements_[i] : nullptr;  // null: the default
        const auto kept_at = before ? index_of(placements_, *before) : std::nullopt;
        const std::int32_t from = before ? before->region : running.default_region_;
        for (std::size_t j = 0; j <= new_count; ++j) {
            const placement_rule* after = j < new_count ? &placements_[j] : nullptr;
            if (!before && !after) continue;  // default to default: compared above
            if (kept_at && (!after || j > *kept_at)) continue;
            if (after && was_at[j] && (!before || i > *was_at[j])) continue;
            if (before && after && !may_match_one_client(*before, *after)) continue;
            const std::int32_t to = after ? after->region : default_region_;
            if (region_name(to) == running.region_name(from)) continue;
            if (wider(receivable(*this, to, &running), receivable(running, from)))
                moves.insert("clients " + criteria_text(after ? *after : *before) + ": " + running.region_name(from) +
                             " -> " + region_name(to));
        }
    }
    c.widened.insert(c.widened.end(), moves.begin(), moves.end());
}

void residency_rules::compare_schema_residency(const residency_rules& running, const schema_set& running_schemas,
                                               const schema_set& schemas, unmatched_policy unmatched,
                                               residency_changes& c) const {
    const auto name_of = [](const schema& s) { return s.residency.empty() ? std::string("(none)") : s.residency; };
    // Whether personal data resident in `from` (a running region) may go further once `to`
    // classifies it (null: no schema). The same region made wider is a transfer, listed as such.
    const auto goes_further = [&](std::int32_t from, const schema* to) {
        if (to && to->residency == running.region_name(from)) return false;
        const auto after =
            to && !to->residency.empty() ? destinations(*this, region_index(to->residency)) : std::nullopt;
        return !after || wider(*after, *destinations(running, from));
    };
    const auto followed = [&](const schema& s) {
        return running.residency_of(s) != NO_REGION && may_hold_personal_data(s);
    };
    // The same schema (by id) with another residency.
    std::map<std::string_view, const schema*> new_by_id;
    for (const auto& s : schemas.schemas) new_by_id.emplace(s.id, &s);
    for (const auto& entry : running.bound_.entries_) {
        const auto found = new_by_id.find(entry.s->id);
        if (found == new_by_id.end() || !followed(*entry.s) || !goes_further(entry.region, found->second)) continue;
        c.widened.push_back("schema " + entry.s->id + ": " + running.region_name(entry.region) + " -> " +
                            name_of(*found->second));
    }
    // Topics such a schema hands to another schema, or to none.
    for (const auto& move : find_topic_moves(running_schemas, schemas, unmatched, followed)) {
        const auto from = running.residency_of(*move.from);
        if (!goes_further(from, move.to)) continue;
        c.widened.push_back("topics " + move.filter + ": " + move.from->id + " (" + running.region_name(from) + ") -> " +
                            (move.to ? move.to->id + " (" + (move.to->residency.empty() ? "none" : move.to->residency) + ")"
                                     : std::string("no schema")));
    }
}

std::vector<bridge_route> residency_rules::carried_bridges(const residency_rules& running, residency_changes& c) {
    // The running bridges, with the region the file declares for each now and the topics of both
    // (Mosquitto keeps running them, so only what the plugin knows of them may change), then the
    // bridges new in the files, checked from now on.
    std::vector<bridge_route> bridges = running.bridges_;
    std::set<std::string> unapplied;
    for (auto& b : bridges) {
        const std::string old_region = running.region_name(b.region);
        const bridge_route* declared = bridge_named(bridges_, b.name);
        if (!declared) {
            unapplied.insert(b.name);  // gone from the files
        } else {
            for (const auto& t : b.topics)
                if (std::find(declared->topics.begin(), declared->topics.end(), t) == declared->topics.end())
                    unapplied.insert(b.name);  // a topic gone from the files: the broker still carries it
            for (const auto& t : declared->topics) {
                if (std::find(b.topics.begin(), b.topics.end(), t) != b.topics.end()) continue;
                b.topics.push_back(t);
                c.bridge_topics_added.push_back(b.name + ": " + t);
            }
        }
        const std::int32_t region = declared ? declared->region
                                    : b.region == NO_REGION ? NO_REGION : region_index(old_region);
        if (b.region != NO_REGION && !declared && region == NO_REGION)
            fail(source_, "bridge " + b.name + " carries data to region \"" + old_region +
                              "\", which is no longer one of \"regions\"; the broker runs its bridges until it restarts");
        if (region_name(region) != old_region) {
            c.bridge_regions.push_back(b.name + ": " + old_region + " -> " + region_name(region));
            if (wider(receivable(*this, region, &running), receivable(running, b.region)))
                c.widened.push_back("bridge " + c.bridge_regions.back());
        }
        b.region = region;
        b.refusal_reason = declared ? declared->refusal_reason : b.refusal_reason;
    }
    for (const auto& b : bridges_) {
        if (bridge_named(running.bridges_, b.name)) continue;
        bridges.push_back(b);  // after the running ones: their indexes stay
        c.bridges_added.push_back(b.name);
    }
    if (!broker_config_problem_.empty()) {
        c.broker_config_problem = broker_config_problem_;
        unapplied.clear();  // what the files hold now is not known: keep what was reported
        unapplied.insert(running.unapplied_bridges_.begin(), running.unapplied_bridges_.end());
    }
    unapplied_bridges_.assign(unapplied.begin(), unapplied.end());
    if (unapplied_bridges_ != running.unapplied_bridges_) {
        c.bridges_not_applied = unapplied_bridges_;
        c.bridges_not_applied_changed = true;
    }
    return bridges;
}

residency_changes residency_rules::carry_over(const residency_rules& running, const schema_set& running_schemas,
                                              const schema_set& schemas, unmatched_policy unmatched) {
    residency_changes c;
    const std::set<std::string> old_regions(running.regions_.begin(), running.regions_.end());
    const std::set<std::string> new_regions(regions_.begin(), regions_.end());
    c.regions_added = only_in(new_regions, old_regions);
    c.regions_removed = only_in(old_regions, new_regions);
    const auto old_pairs = transfer_pairs(running), new_pairs = transfer_pairs(*this);
    c.transfers_added = only_in(new_pairs, old_pairs);
    c.transfers_removed = only_in(old_pairs, new_pairs);
    for (const auto& pair : c.transfers_added) c.widened.push_back("transfer " + pair);
    compare_placements(running, c);
    compare_schema_residency(running, running_schemas, schemas, unmatched, c);
    std::vector<bridge_route> bridges = carried_bridges(running, c);
    for (auto* list : {&c.widened, &c.bridge_regions, &c.bridge_topics_added, &c.bridges_added})
        std::sort(list->begin(), list->end());

    std::swap(bridges_, bridges);
    schema_bindings bindings;
    try {
        bindings = bind(schemas);  // which bridges could carry each schema's topics where they may not go
    } catch (...) {
        std::swap(bridges_, bridges);
        throw;
    }
    use(std::move(bindings));
    // The notes are of the files as they are now; when the broker's configuration could not be
    // read again, nothing new is known about it, so the running notes stay.
    if (!broker_config_problem_.empty()) load_notes_ = running.load_notes_;
    return c;
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
        const bool personal = may_hold_personal_data(s);
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
