#pragma once
// Consent records (GDPR Art. 6(1)(a), 7) and device bindings, kept in memory for the per-message
// check and persisted to SQLite in the background, with full history: who changed what, when, and
// on what evidence (Art. 7(1): the controller must be able to demonstrate consent).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "gdpr/purposes.hpp"
#include "gdpr/storage_worker.hpp"
#include "gdpr/subject_table.hpp"

namespace gdpr {

struct consent_event {
    std::int64_t seq = 0;
    std::string subject;
    std::string purpose;
    bool granted = false;
    std::int64_t at_ms = 0;  // Unix time, milliseconds
    std::string operator_id;
    std::string evidence;
};

struct device_binding {
    std::string client_id;
    std::string subject;
    std::int64_t bound_at_ms = 0;
    std::string operator_id;
};

class consent_store {
public:
    static constexpr int MAX_CONSENT_PURPOSES = 64;
    static constexpr int SCHEMA_VERSION = 1;
    using done_fn = storage_worker::done_fn;

    // Opens (creating when missing) the database at `path`, checks its schema version, and loads
    // current consent and bindings into memory. Consent purposes of `purposes` get a bit each.
    // Throws storage_error naming the file, or std::invalid_argument with more than
    // MAX_CONSENT_PURPOSES consent purposes.
    static std::unique_ptr<consent_store> open(const std::string& path, const purpose_registry& purposes,
                                               std::string_view synchronous = "NORMAL");
    ~consent_store();

    // --- per-message (broker thread, no disk) ---
    // Bit of a consent-based purpose in granted_mask(), or -1 when the purpose needs no consent.
    int consent_bit(std::string_view purpose) const;
    // Consent purposes the subject currently consents to, as bits; 0 for unknown subjects.
    std::uint64_t granted_mask(std::string_view subject) const;
    // Subjects bound to a publishing client (device registry); null when none.
    const std::vector<std::string>* subjects_bound_to(std::string_view client_id) const;

    // --- changes (broker thread): applied in memory at once, `done` runs from drain() once the
    // change is durable ("" ) or has failed (error text). A grant that fails to persist is undone
    // in memory; a withdrawal stays in force either way.
    void set_consent(const std::string& subject, const std::string& purpose, bool granted,
                     const std::string& operator_id, const std::string& evidence, done_fn done);
    // Returns false (and changes nothing) when the binding already exists / does not exist.
    bool bind(const std::string& client_id, const std::string& subject, const std::string& operator_id, done_fn done);
    bool unbind(const std::string& client_id, const std::string& subject, const std::string& operator_id, done_fn done);

    // --- queries ---
    std::vector<device_binding> bindings(std::string_view client_id, std::string_view subject) const;
    // The subject's consent history, oldest first, read in the background.
    void history(const std::string& subject,
                 std::function<void(std::vector<consent_event>, const std::string& error)> done);
    std::vector<std::string> granted_purposes(std::string_view subject) const;
    std::size_t subjects_with_consent() const { return masks_.size(); }
    std::size_t binding_count() const;

    std::size_t drain() { return worker_->drain(); }
    bool has_completions() const { return worker_->has_completions(); }
    void wait_idle() { worker_->wait_idle(); }

    static std::int64_t now_ms();

private:
    consent_store() = default;
    void apply(const std::string& subject, int bit, bool granted);

    std::unordered_map<std::string, int> bits_;
    std::vector<std::string> bit_names_;
    subject_table<std::uint64_t> masks_;  // subject -> granted consent bits (never 0)
    std::unordered_map<std::string, std::vector<std::string>> bound_subjects_;  // client id -> subjects
    std::unordered_map<std::string, device_binding> binding_details_;         // client id + '\0' + subject
    std::unique_ptr<storage_worker> worker_;
};

} // namespace gdpr
