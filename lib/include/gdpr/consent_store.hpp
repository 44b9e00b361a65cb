#pragma once
// Consent records (GDPR Art. 6(1)(a), 7) and device bindings, kept in memory for the per-message
// check and persisted to SQLite in the background, with full history: who changed what, when, and
// on what evidence (Art. 7(1): the controller must be able to demonstrate consent).
#include <cstdint>
#include <functional>
#include <map>
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
    // purposes.json was reloaded (GDPR Art. 6(1)): consent purposes get their bits anew, in name
    // order as schemas number them. Grants of a purpose that no longer rests on consent (or is no
    // longer declared) stop counting but are held, as the database holds them, and can still be
    // withdrawn; held grants of a purpose that rests on consent again count again, as they would
    // after a restart. Returns, per purpose, how many grants were put on hold and how many count
    // again. Built on the side: throws (std::invalid_argument past MAX_CONSENT_PURPOSES, or a
    // pseudonym that cannot be computed) changing nothing. Broker thread; one pass over the
    // subjects with consent.
    struct purpose_shift {
        std::map<std::string, std::size_t> held;     // purpose -> grants that stop counting
        std::map<std::string, std::size_t> revived;  // purpose -> held grants that count again
    };
    purpose_shift use_purposes(const purpose_registry& purposes);
    // Grants held for purposes that do not rest on consent now (see use_purposes).
    std::size_t held_grants() const;
    bool holds(const std::string& subject, const std::string& purpose) const;
    // set_consent may withdraw it even though the purpose needs no consent now: a held grant, or
    // a grant still being written (it would be held once written). GDPR Art. 7(3).
    bool withdrawable(const std::string& subject, const std::string& purpose) const;
    std::vector<std::string> held_purposes(std::string_view subject) const;  // sorted
    // Consent purposes the subject currently consents to, as bits; 0 for unknown subjects.
    std::uint64_t granted_mask(std::string_view subject) const;
    // A stored message (retained, or queued for an offline client) carries the subject's pseudonym
    // where its schema pseudonymises the subject field. With `pseudonym_of` given, the store also
    // finds the subjects that have consent by their pseudonym, so that such a message can be
    // checked against today's consent before it is delivered (GDPR Art. 7(3)). One HMAC per
    // subject now, and one per subject whose first consent is granted or last one withdrawn.
    void index_pseudonyms(std::function<std::string(std::string_view)> pseudonym_of);
    // granted_mask() of the subject whose pseudonym this is; 0 when no subject with consent has it.
    std::uint64_t granted_mask_by_pseudonym(std::string_view pseudonym) const;
    bool indexes_pseudonyms() const { return static_cast<bool>(pseudonym_of_); }
    // Grows with every consent change in force (grant, withdrawal, erasure): a consent decision
    // taken before it changed may no longer hold (GDPR Art. 7(3), 17).
    std::uint64_t generation() const { return generation_; }
    // Starts loading what granted_mask(subject) will read (see subject_table::prefetch).
    void prefetch(std::string_view subject) const { masks_.prefetch(subject); }
    // Subjects bound to a publishing client (device registry); null when none.
    const std::vector<std::string>* subjects_bound_to(std::string_view client_id) const;

    // --- changes (broker thread). `done` runs from drain() once the change is durable ("") or has
    // failed (error text). A held grant (see use_purposes) can be withdrawn, not granted. Grants,
    // bindings and unbindings take effect in memory only once they are durable (consent must be
    // demonstrable, GDPR Art. 7(1)), and only if no newer change to the same consent or binding
    // was made meanwhile. A withdrawal takes effect at once (Art.
    // 7(3)); if it cannot be written it stays in force and is retried by retry_pending().
    void set_consent(const std::string& subject, const std::string& purpose, bool granted,
                     const std::string& operator_id, const std::string& evidence, done_fn done);
    // Returns false (and changes nothing) when the binding already exists / does not exist.
    bool bind(const std::string& client_id, const std::string& subject, const std::string& operator_id, done_fn done);
    bool unbind(const std::string& client_id, const std::string& subject, const std::string& operator_id, done_fn done);
    // Resubmits withdrawals that could not be written; call periodically (the plugin: every 5 s).
    void retry_pending();
    // GDPR Art. 17: forgets the subject's consent, consent history and device bindings. In
    // memory at once (no field is forwarded on the strength of an erased consent); on disk in the
    // background, then `done` gets the error ("" on success) and how many consent events and
    // bindings were removed. Grants in flight for the subject are superseded.
    using erase_done_fn = std::function<void(const std::string& error, std::int64_t consent_events, std::int64_t bindings)>;
    void erase_subject(const std::string& subject, const std::string& operator_id, erase_done_fn done);
    std::size_t pending_withdrawals() const { return pending_withdrawals_.size(); }

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

    // Told of every change once it is in force (the audit trail records them): change name,
    // subject, a JSON detail without personal data, and a JSON part with the subject and evidence.
    using change_observer = std::function<void(std::string_view change, const std::string& subject,
                                               const std::string& detail_json, const std::string& personal_json)>;
    void observe(change_observer observer) { observer_ = std::move(observer); }

private:
    struct withdrawal {
        std::string subject, purpose, operator_id, evidence;
        std::int64_t at_ms;
        // A newer change to the same consent was made while it waited to be retried: it is still
        // written to the history, but no longer sets the current state.
        bool superseded = false;
    };
    consent_store() = default;
    // The consent purposes of `purposes` in bit order; throws past MAX_CONSENT_PURPOSES.
    static std::vector<std::string> consent_purposes(const purpose_registry& purposes);
    void apply(const std::string& subject, int bit, bool granted);
    // A change to `key` was written as the newest: withdrawals waiting to be retried are older.
    void supersede_pending(const std::string& key);
    // A withdrawal whose write failed: retried, or (its subject's erasure being written) left to
    // the erasure's outcome.
    void keep_for_retry(const withdrawal& w, bool erased);
    // Whether the subject of `key` was erased after the change of `generation` began.
    bool erased_since(const std::string& key, std::uint64_t generation) const;
    void hold(const std::string& subject, const std::string& purpose);
    void forget_mask(const std::string& subject);
    void apply_binding(const std::string& client_id, const std::string& subject, bool bound, std::int64_t at,
                       const std::string& operator_id);
    void change_binding(const std::string& client_id, const std::string& subject, const std::string& operator_id,
                        bool bound, done_fn done);
    // Versioning of in-flight changes per consent or binding key: a completion may change memory
    // only if it belongs to the newest change of its key.
    std::uint64_t begin_change(const std::string& key, bool grant = false);
    bool finish_change(const std::string& key, std::uint64_t generation);  // true when still newest
    void submit_withdrawal(withdrawal w, done_fn done);
    struct change_state {
        std::uint64_t generation = 0;
        std::uint32_t in_flight = 0;
        std::uint64_t last_not_grant = 0;  // generation of the newest change that is no grant
    };
    std::unordered_map<std::string, change_state> changes_;
    // Keys of an erased subject that had changes in flight -> the erasure's generation (until the
    // last of them finishes).
    std::unordered_map<std::string, std::uint64_t> erased_keys_;
    // Withdrawals not yet written of subjects whose erasure is being written, by subject: dropped
    // once one erasure is written, waiting again (pending_withdrawals_) if the last one fails.
    struct parked_withdrawals {
        std::vector<withdrawal> withdrawals;
        std::uint32_t erasures_in_flight = 0;
    };
    std::unordered_map<std::string, parked_withdrawals> parked_for_erasure_;
    std::uint64_t next_generation_ = 0;
    std::vector<withdrawal> pending_withdrawals_;

    std::unordered_map<std::string, int> bits_;
    std::vector<std::string> bit_names_;
    // subject -> purposes granted but not resting on consent now: rare (a purpose changed basis).
    std::unordered_map<std::string, std::vector<std::string>> held_;
    subject_table<std::uint64_t> masks_;  // subject -> granted consent bits (never 0)
    std::function<std::string(std::string_view)> pseudonym_of_;
    subject_table<std::string> subject_by_pseudonym_;  // pseudonym -> subject, of the subjects in masks_
    std::uint64_t generation_ = 0;
    std::unordered_map<std::string, std::vector<std::string>> bound_subjects_;  // client id -> subjects
    std::unordered_map<std::string, device_binding> binding_details_;         // client id + '\0' + subject
    std::unique_ptr<storage_worker> worker_;
    change_observer observer_;
    void notify(std::string_view change, const std::string& subject, const std::string& purpose,
                const std::string& client_id, const std::string& operator_id, const std::string& evidence);
};

} // namespace gdpr
