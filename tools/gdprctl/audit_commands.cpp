// Offline commands: they read the plugin's database directly (read-only), with or without the
// broker running, or the definition files.
//
//   gdprctl verify <db> [--key-file K]                   exit 0 intact, 6 broken, 7 intact with declared gaps
//   gdprctl export <db> --subject S --key-file K [--output FILE]    GDPR Art. 15, 20
//   gdprctl report <db> [--json]
//   gdprctl processing-record --schemas DIR [--purposes FILE] [--residency FILE] [--json]   GDPR Art. 30
//   gdprctl schema lint DIR [--purposes FILE] [--residency FILE] [--details FILE] [--strict]
#include "audit_commands.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string_view>
#include <iostream>
#include <map>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include "gdpr/audit_crypto.hpp"
#include "gdpr/audit_reader.hpp"
#include "gdpr/errors.hpp"
#include "gdpr/processing_details.hpp"
#include "gdpr/processing_record.hpp"
#include "gdpr/residency.hpp"
#include "gdpr/schema_loader.hpp"
#include "gdpr/secret_file.hpp"

namespace gdprctl {

namespace {

constexpr int EXIT_OK = 0;
constexpr int EXIT_FINDINGS = 1;  // schema lint --strict: something to review
constexpr int EXIT_USAGE = 2;
constexpr int EXIT_INTERNAL = 5;
constexpr int EXIT_BROKEN = 6;
constexpr int EXIT_INCOMPLETE = 7;

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

int usage(const std::string& problem) {
    std::cerr << "gdprctl: " << problem << "\n\n"
              << "usage: gdprctl verify <database>\n"
                 "       gdprctl export <database> --subject SUBJECT --key-file FILE [--output FILE]\n"
                 "       gdprctl report <database> [--json]\n"
                 "       gdprctl processing-record --schemas DIR [--purposes FILE] [--residency FILE] [--json]\n"
                 "       gdprctl schema lint DIR [--purposes FILE] [--residency FILE] [--details FILE] [--strict]\n";
    return EXIT_USAGE;
}

// Flags after the database path: "--name value" pairs and lone switches.
bool parse_flags(const std::vector<std::string>& args, std::size_t from, const std::vector<std::string>& with_value,
                 const std::vector<std::string>& switches, std::map<std::string, std::string>& out, std::string& problem) {
    for (std::size_t i = from; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (std::find(switches.begin(), switches.end(), a) != switches.end()) {
            out[a] = "1";
        } else if (std::find(with_value.begin(), with_value.end(), a) != with_value.end()) {
            if (i + 1 >= args.size()) {
                problem = a + " needs a value";
                return false;
            }
            out[a] = args[++i];
        } else {
            problem = "unexpected argument '" + a + "'";
            return false;
        }
    }
    return true;
}

int verify(const std::string& path, const std::map<std::string, std::string>& flags) {
    std::unique_ptr<gdpr::audit_keys> keys;
    if (auto it = flags.find("--key-file"); it != flags.end()) {
        const gdpr::wiped_string secret = gdpr::read_secret_file("--key-file", it->second, 32);
        keys = std::make_unique<gdpr::audit_keys>(secret);
    }
    gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
    const bool tty = ::isatty(STDERR_FILENO);
    const auto report = gdpr::verify_audit_trail(
        db,
        [&](std::uint64_t done, std::uint64_t total) {
            if (tty && total > 0)
                std::fprintf(stderr, "\rverifying: %llu / %llu records", static_cast<unsigned long long>(done),
                             static_cast<unsigned long long>(total));
        },
        20, 0, keys.get());
    if (tty) std::fprintf(stderr, "\n");
    std::cout << "records: " << report.records;
    if (report.records) std::cout << " (seq " << report.first_seq << ".." << report.last_seq << ")";
    std::cout << ", content removed by retention: " << report.tombstones << "\n";
    if (report.anchor_seq)
        std::cout << "chain anchored at seq " << *report.anchor_seq << " (earlier records removed by retention; "
                  << (report.anchor_confirmed ? "confirmed by a retention record" : "no live retention record names it")
                  << (!report.anchor_authenticated ? ""
                      : *report.anchor_authenticated ? ", authenticated by the key file"
                                                     : ", NOT authenticated by the key file")
                  << ")\n";
    if (report.envelopes_unexplained > 0)
        std::cout << "NOTE: " << report.envelopes_unexplained
                  << " sealed part(s) do not open under their subject's current data key and no key_shredded record "
                     "in the trail says why: shredded by a record whose content retention has removed, or the key "
                     "was replaced by hand or damaged\n";
    for (const auto seq : report.anchor_inherited)
        std::cout << "NOTE: the broker starting at seq " << seq
                  << " took a statement of the anchor written without authentication as it was: expected once, when "
                     "a trail of version 2 was first opened; otherwise someone removed the marker in audit_meta\n";
    if (!report.shreds_inherited.empty()) {
        std::cout << "NOTE: " << report.shreds_inherited.size() << " key_shredded record(s) (seq";
        for (std::size_t i = 0; i < report.shreds_inherited.size() && i < 5; ++i) std::cout << " " << report.shreds_inherited[i];
        std::cout << (report.shreds_inherited.size() > 5 ? " ..." : "")
                  << ") were written before such records were authenticated (trail version 3 or older): taken "
                     "as written\n";
    }
    if (report.anchor_seq && !keys)
        std::cout << "NOTE: give --key-file to check that the broker wrote the record stating the anchor (anyone able "
                     "to write the file could append one)\n";
    if (report.shred_records > 0 && !keys)
        std::cout << "NOTE: give --key-file to check that the broker wrote the " << report.shred_records
                  << " key_shredded record(s) and that every sealed part opens or is explained by one\n";
    std::cout << "head hash: " << report.head_hash << "\n";
    for (const auto& p : report.problems) std::cout << "PROBLEM at seq " << p.seq << ": " << p.what << "\n";
    for (const auto& g : report.gaps)
        std::cout << "GAP at seq " << g.first << ": " << g.second << " records dropped by the overflow policy\n";
    if (report.keys_unaccounted > 0)
        std::cout << "NOTE: " << report.keys_unaccounted
                  << " subject(s) with sealed data have no data key and no key_shredded record in the trail: shredded "
                     "by a key_shredded record whose content retention has removed, or deleted by hand\n";
    if (report.overdue > 0)
        std::cout << "NOTE: " << report.overdue << " record(s) from seq " << report.first_overdue_seq
                  << " on still hold their content more than a day after their retention period ended; the "
                     "broker's sweeper removes expired content every retention_sweep_seconds while it runs "
                     "(stopped, or failing: see its log)\n";
    if (!report.intact()) {
        std::cout << "FAILED: the audit trail was altered (first bad record: seq " << report.problems.front().seq << ")\n";
        return EXIT_BROKEN;
    }
    if (!report.complete()) {
        std::cout << "INCOMPLETE: the chain is intact, but records were dropped (record_overflow drop)\n";
        return EXIT_INCOMPLETE;
    }
    std::cout << "OK: the chain is intact and complete\n";
    return EXIT_OK;
}

// The export holds personal data: it goes to a new file, mode 0600 from the first byte, that
// replaces `path` whole once written. A file already there keeps neither its mode nor its
// contents, a symbolic link there is replaced rather than followed, and a failed write leaves
// nothing behind.
std::string write_private_file(const std::string& path, std::initializer_list<std::string_view> parts) {
    std::string temporary = path + ".XXXXXX";
    const int fd = ::mkstemp(temporary.data());  // O_EXCL, mode 0600
    if (fd < 0) return std::strerror(errno);
    std::string problem;
    for (const std::string_view text : parts) {
        for (std::size_t done = 0; done < text.size() && problem.empty();) {
            const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
            if (n < 0 && errno != EINTR) problem = std::strerror(errno);
            if (n > 0) done += static_cast<std::size_t>(n);
        }
    }
    if (problem.empty() && ::fsync(fd) != 0) problem = std::strerror(errno);
    if (::close(fd) != 0 && problem.empty()) problem = std::strerror(errno);
    if (problem.empty() && ::rename(temporary.c_str(), path.c_str()) != 0) problem = std::strerror(errno);
    if (!problem.empty()) ::unlink(temporary.c_str());
    return problem;
}

int export_subject(const std::string& path, const std::map<std::string, std::string>& flags) {
    if (!flags.count("--subject")) return usage("export needs --subject");
    if (!flags.count("--key-file")) return usage("export needs --key-file (the plugin's audit_key_file)");
    const gdpr::wiped_string secret = gdpr::read_secret_file("--key-file", flags.at("--key-file"), 32);
    const gdpr::audit_keys keys(secret);
    gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
    gdpr::export_options options;
    // The data map seals retained topics that name a subject under the same key file, with keys
    // derived under the plugin option's name.
    gdpr::topic_sealer topics(secret, "audit_key_file");
    options.topic_opener = &topics;
    // Holders the data map wrote with no key file at all are named by the subject id itself until
    // the broker next starts with a key file (it renames them then); those named by pseudonym need
    // the broker's exportSubject, which has that key.
    options.data_map_by_id = true;
    std::string doc = gdpr::export_subject(db, keys, flags.at("--subject"), now_ms(), options);
    struct wipe_on_return {  // GDPR Art. 32: the decrypted document does not outlive its use
        std::string& text;
        ~wipe_on_return() { OPENSSL_cleanse(text.data(), text.size()); }
    } wipe{doc};
    if (auto it = flags.find("--output"); it != flags.end()) {
        // The newline is written on its own: appending it would move the document, leaving a copy unwiped.
        if (const std::string problem = write_private_file(it->second, {doc, "\n"}); !problem.empty()) {
            std::cerr << "gdprctl: cannot write " << it->second << ": " << problem << "\n";
            return EXIT_INTERNAL;
        }
    } else {
        std::cout << doc << "\n";
    }
    return EXIT_OK;
}

int report(const std::string& path, const std::map<std::string, std::string>& flags) {
    gdpr::sqlite_db db(path, gdpr::sqlite_db::read_only);
    const auto rows = gdpr::audit_report(db);
    if (flags.count("--json")) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& r : rows)
            out.push_back({{"day", r.day}, {"kind", r.kind}, {"schema", r.schema}, {"reason", r.reason},
                           {"category", r.category}, {"count", r.count}});
        std::cout << out.dump(2) << "\n";
        return EXIT_OK;
    }
    std::printf("%-10s  %-16s  %-28s  %10s  %s\n", "day", "kind", "schema", "count", "refusal reason / data category");
    std::map<std::string, std::uint64_t> per_kind;
    for (const auto& r : rows) {
        std::printf("%-10s  %-16s  %-28s  %10llu  %s\n", r.day.c_str(), r.kind.c_str(), r.schema.empty() ? "-" : r.schema.c_str(),
                    static_cast<unsigned long long>(r.count), r.category.empty() ? r.reason.c_str() : r.category.c_str());
        if (r.kind != "fields") per_kind[r.kind] += r.count;
    }
    std::printf("\ntotals:");
    for (const auto& [kind, n] : per_kind) std::printf(" %s %llu;", kind.c_str(), static_cast<unsigned long long>(n));
    std::printf("\n");
    return EXIT_OK;
}

// The definition files as the broker loads them: the schemas directory, purposes.json (or
// --purposes), and the residency and processing details files when given. Throws what the
// broker's start would refuse with (schema_error, config_error), naming the file.
struct definition_files {
    gdpr::purpose_registry purposes;
    gdpr::schema_set schemas;
    std::optional<gdpr::residency_rules> residency;
    std::optional<gdpr::processing_details> details;

    definition_files(const std::string& dir, const std::map<std::string, std::string>& flags)
        : purposes(load_purposes_of(dir, flags)), schemas(gdpr::load_schema_directory(dir, purposes)) {
        if (const auto r = flags.find("--residency"); r != flags.end()) residency = gdpr::residency_rules::load(r->second, schemas);
        if (const auto d = flags.find("--details"); d != flags.end()) details = gdpr::load_processing_details(d->second);
    }
    const gdpr::residency_rules* residency_rules() const { return residency ? &*residency : nullptr; }
    const gdpr::processing_details* details_file() const { return details ? &*details : nullptr; }

private:
    static gdpr::purpose_registry load_purposes_of(const std::string& dir, const std::map<std::string, std::string>& flags) {
        gdpr::check_schema_directory(dir);
        const auto p = flags.find("--purposes");
        return gdpr::load_purposes(p != flags.end() ? p->second : dir + "/purposes.json");
    }
};

} // namespace

// GDPR Art. 30(1): the record the definition files describe, before they are put in use.
int processing_record(const std::vector<std::string>& args) {
    std::map<std::string, std::string> flags;
    std::string problem;
    if (!parse_flags(args, 1, {"--schemas", "--purposes", "--residency", "--details"}, {"--json"}, flags, problem))
        return usage(problem);
    const std::string dir = flags["--schemas"];
    if (dir.empty()) return usage("processing-record needs --schemas DIR");
    const definition_files files(dir, flags);
    const nlohmann::json record =
        gdpr::processing_record(files.schemas, files.purposes, files.residency_rules(), nullptr, files.details_file());
    std::cout << (flags.count("--json") ? record.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n" : gdpr::processing_record_text(record));
    return EXIT_OK;
}

// The definition files checked as the broker would load them, with what they leave to review.
int schema_lint(const std::vector<std::string>& args) {
    if (args.size() < 3 || args[1] != "lint")
        return usage("schema needs 'lint DIR' (gdprctl schema lint DIR [--purposes FILE] [--residency FILE] "
                     "[--details FILE] [--strict])");
    std::map<std::string, std::string> flags;
    std::string problem;
    if (!parse_flags(args, 3, {"--purposes", "--residency", "--details"}, {"--strict"}, flags, problem)) return usage(problem);
    const std::string& dir = args[2];
    const definition_files files(dir, flags);
    std::size_t filters = 0;
    for (const auto& s : files.schemas.schemas) filters += s.topics.size();
    const auto notes = gdpr::definition_review_notes(files.schemas, files.purposes, files.residency_rules(), files.details_file());
    std::cout << dir << ": " << files.schemas.schemas.size() << " schemas (" << filters << " topic filters) and "
              << files.purposes.names().size() << " purposes load as the broker loads them";
    if (files.residency) std::cout << ", with the residency file";
    if (files.details) std::cout << " and the processing details";
    std::cout << "\n";
    if (notes.empty()) {
        std::cout << "nothing to review\n";
        return EXIT_OK;
    }
    std::cout << "to review (" << notes.size() << "):\n";
    for (const auto& n : notes) std::cout << "  - " << n << "\n";
    return flags.count("--strict") ? EXIT_FINDINGS : EXIT_OK;
}

int run_offline(const std::vector<std::string>& args) {
    const std::string& cmd = args.at(0);
    if (cmd != "processing-record" && cmd != "schema" && args.size() < 2) return usage(cmd + " needs the database path");
    std::map<std::string, std::string> flags;
    std::string problem;
    try {
        if (cmd == "processing-record") return processing_record(args);
        if (cmd == "schema") return schema_lint(args);
        const std::string& path = args[1];
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            std::cerr << "gdprctl: no database at '" << path << "'\n";
            return EXIT_INTERNAL;
        }
        if (cmd == "verify") {
            if (!parse_flags(args, 2, {"--key-file"}, {}, flags, problem)) return usage(problem);
            return verify(path, flags);
        }
        if (cmd == "export") {
            if (!parse_flags(args, 2, {"--subject", "--key-file", "--output"}, {}, flags, problem)) return usage(problem);
            return export_subject(path, flags);
        }
        if (!parse_flags(args, 2, {}, {"--json"}, flags, problem)) return usage(problem);
        return report(path, flags);
    } catch (const gdpr::config_error& e) {
        std::cerr << "gdprctl: " << e.what() << "\n";
        return EXIT_USAGE;
    } catch (const gdpr::schema_error& e) {  // processing-record, schema lint: a definition file does not load
        std::cerr << "gdprctl: " << e.what() << "\n";
        return EXIT_USAGE;
    } catch (const std::exception& e) {
        std::cerr << "gdprctl: " << e.what() << "\n";
        return EXIT_INTERNAL;
    }
}

bool is_offline_command(const std::vector<std::string>& args) {
    const std::string& cmd = args.at(0);
    if (cmd == "processing-record")
        return std::any_of(args.begin(), args.end(), [](const std::string& a) {
            return a == "--schemas" || a == "--purposes" || a == "--residency" || a == "--details";
        });
    return cmd == "verify" || cmd == "export" || cmd == "report" || cmd == "schema";
}

} // namespace gdprctl
