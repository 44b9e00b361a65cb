#pragma once
// Where each data subject's personal data went (GDPR Art. 17(2), 19, 30): which clients published
// it, which clients received it, which retained topics hold it. Kept current from live traffic on
// the broker thread (memory only, no disk wait) and persisted in the background; each holder is
// written once, when first seen. Erasure reads a subject's holdings and then forgets them.
// On disk a subject is named by its reference (a keyed hash, the audit trail's subject_ref) when
// one is given, so the file holds no subject id; retained topics that carry a subject id in a
// level are stored sealed (topic_sealer), or kept in memory only when there is no sealer.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gdpr/holder_set.hpp"
#include "gdpr/storage_worker.hpp"
#include "gdpr/subject_table.hpp"
#include "gdpr/topic_sealer.hpp"

namespace gdpr {

// Whether `name` has the form of a keyed name the data map stores subjects under (32 lowercase hex
// digits: an audit key's reference; "p:" and those: a pseudonym). An id of that form is never
// looked up as an id: it could be another subject's name.
bool is_keyed_subject_name(std::string_view name);

struct subject_holdings {
    std::vector<std::string> publishers;       // client ids, sorted
    std::vector<std::string> recipients;       // client ids, sorted
    // Of the recipients, those that never published the subject's data nor received its id: every
    // message of it they got named the subject only by its pseudonym, or not at all. Sorted.
    std::vector<std::string> pseudonymous_recipients;
    std::vector<std::string> retained_topics;  // sorted
    bool empty() const { return publishers.empty() && recipients.empty() && retained_topics.empty(); }
};

// What the recipients of a publish get, for telling whether it shows them a subject's id.
struct forwarded_message {
    std::string_view payload;  // as forwarded
    // The message carries text the plugin does not read (the publisher's MQTT v5 properties).
    bool unread_text = false;
};

class data_map {
public:
    // Version 2 stores retained topics that name a subject sealed; version 3 tells recipients that
    // received a subject only by pseudonym. Version 1 and 2 files need no change of their rows.
    static constexpr int SCHEMA_VERSION = 3;

    // Opens (creating the tables when missing) the map in the database at `path` and loads it.
    // Throws storage_error naming the file.
    // `subject_ref` maps a subject id to the name it is stored under (empty: the id itself);
    // `in_clear` says whether a retained topic may be written to disk in clear (empty: all may);
    // one that may not is written sealed by `sealer`, or not at all without one.
    using subject_ref_fn = std::function<std::string(std::string_view subject)>;
    using topic_check_fn = std::function<bool(std::string_view topic)>;
    // With `subject_ref`, subjects stored under their id (before a key file was configured) are
    // renamed on disk first, so the file keeps no subject id; with `sealer` and `in_clear`, a
    // retained topic stored in clear that may not be is sealed.
    // `earlier_sealer` opens retained topics sealed under the key that named subjects before the
    // one in use (a pseudonymisation key, before an audit key was configured), and its forms are
    // deleted with the topic's.
    static std::unique_ptr<data_map> open(const std::string& path, std::string_view synchronous = "NORMAL",
                                          subject_ref_fn subject_ref = nullptr, topic_check_fn in_clear = nullptr,
                                          std::unique_ptr<topic_sealer> sealer = nullptr,
                                          std::unique_ptr<topic_sealer> earlier_sealer = nullptr);
    ~data_map();

    // --- live traffic (broker thread, no disk) ---
    // A publish from `client_id` that carries personal data of `subjects`. `identity` is the
    // payload pointer the broker delivers, so that the deliveries checked next can be attributed.
    // A retained publish with a payload makes `topic` a holder of the subjects' data, in place of
    // what it held, unless `replaces` is false (the broker may still refuse it: keep both).
    // `seen` is what its recipients get: with pseudonyms on (names_by_pseudonym), a subject whose
    // id it does not show makes them pseudonymous recipients. It shows the id when the id's bytes
    // are in the topic or the payload, the payload holds a JSON escape (which could spell them),
    // or the message carries text the plugin does not read. Without `seen`, every subject counts
    // as shown.
    void published(const std::vector<std::string>& subjects, std::string_view client_id, std::string_view topic,
                   bool retain, const void* identity, bool replaces = true, const forwarded_message* seen = nullptr);
    // Whether subjects have a pseudonym that erase commands can name them by (a pseudonymisation
    // key is configured). Off: every recipient counts as having received the id.
    void names_by_pseudonym(bool on) { names_by_pseudonym_ = on; }
    // How many of `subjects` the map holds nothing about yet, under any of their names (each one
    // published would make a new entry): what a client's allowance of new subjects is charged
    // (subject_quota).
    // Also starts loading the entries of the known ones, which published() will update.
    std::uint32_t unknown_among(const std::vector<std::string>& subjects) const;
    // Starts loading what looking `subject` up will read (see subject_table::prefetch).
    void prefetch(std::string_view subject) const {
        if (subject_ref_) by_id_.prefetch(subject);
        else by_ref_.prefetch(subject);
    }
    // Any publish on a topic (with or without personal data): a retained one replaces what the
    // topic held, an empty retained one clears it.
    void retained_replaced(std::string_view topic);
    // The plugin asked the broker to clear the retained message on `topic` (an erasure, GDPR Art.
    // 17): what it held is forgotten as by retained_replaced, and the topic is noted on disk (in
    // its stored form; not a topic this map keeps in memory only) until clears_saved(). The broker
    // writes its retained messages to its persistence file only now and then, and a crash before
    // it does brings the cleared message back at the next start: an earlier run's notes
    // (clears_unsaved) are cleared again then. A note that could not be written is tried again
    // with the failed forgettings (forget_retry_delay), counted with them (take_forget_failures).
    void retained_cleared(std::string_view topic);
    // Topics an earlier run cleared that its broker may not have saved as cleared (it stopped
    // without its last save), as read at open.
    const std::vector<std::string>& clears_unsaved() const { return clears_unsaved_; }
    // Noted clears whose topics this map cannot open (sealed under another key): not cleared again.
    std::size_t unreadable_clears() const { return unreadable_clears_; }
    // The broker has saved its retained messages since every clear noted so far reached its store
    // (a clean stop): the notes are deleted in the background.
    void clears_saved();
    // A delivery the broker is about to make: attributed to the last publish when it is that
    // publish's payload, or to the retained topic's subjects. `payload` tells a retained message
    // delivered later from another message the broker placed at the same address since.
    void delivered(std::string_view client_id, std::string_view topic, const void* identity,
                   std::string_view payload = {});
    // Deliveries checked after this are not those of the last publish (call from other events).
    void forget_last_publish();

    // --- erasure (broker thread) ---
    // A name subjects were stored under before the one in use (a key file configured later: the
    // holders written before it stay named the old way until the subject publishes again, when
    // they move to the name in use). holdings() and forget_subject() look under every such name
    // too. GDPR Art. 17(2): an erasure must reach them.
    // (Subjects named by id then were renamed at open.) A null function is ignored.
    void also_named(subject_ref_fn earlier) {
        if (earlier) earlier_refs_.push_back(std::move(earlier));
    }
    // Every name `subject` may be stored under: the one in use first.
    std::vector<std::string> names_of(std::string_view subject) const;
    // Of the subjects loaded at open: how many are named by pseudonym ("p:" and 32 hex digits).
    std::size_t loaded_by_pseudonym() const { return loaded_by_pseudonym_; }
    // Subjects found at open stored under their id, written before a key file named subjects:
    // their rows were moved to the name in use (see open).
    std::size_t renamed_from_id() const { return renamed_from_id_; }
    subject_holdings holdings(std::string_view subject) const;
    // Whether `client_id` published the subject's data or received its id, under any of its names.
    bool knows_id(std::string_view subject, std::string_view client_id) const;
    // Forgets everything known about the subject, in memory at once and on disk in the background.
    // `together`, when given, runs in the same transaction just before the rows are deleted: what
    // must be on disk if and only if they are gone (an erasure's targets taken from them). Should
    // the transaction fail, both are tried again at a flush, at most every 5 s (forget_retry_delay)
    // while the broker runs, each failure counted (take_forget_failures); the holders noted since
    // are written again after it. `done` is told the first try's outcome. The subject's retained
    // topics still on disk (an erasure cleared them, but their retained_cleared job failed) are
    // noted as cleared in the same transaction.
    void forget_subject(const std::string& subject, storage_worker::done_fn done = nullptr,
                        storage_worker::work_fn together = nullptr);

    std::size_t subjects() const { return by_ref_.size(); }
    // Sealed retained topics found at open that this map cannot open (no sealer, a sealer from
    // another key file, or an edited row): kept, but not cleared by an erasure.
    std::size_t unreadable_topics() const { return unreadable_topics_; }
    // Writes the holders noted since the last call in one background job (the plugin: every tick;
    // also done by wait_idle, forget_subject and when many are waiting).
    void flush();
    // Background writes that failed since the last call (the map in memory stays right; a restart
    // would forget those holders), with the last error.
    std::pair<std::uint64_t, std::string> take_write_failures();
    bool has_write_failures() const { return write_failures_ > 0; }
    // Failed tries of forgettings (forget_subject) since the last call, with the last error: until
    // one succeeds, a restart would recall the subject's holders.
    std::pair<std::uint64_t, std::string> take_forget_failures();
    void forget_retry_delay(std::chrono::milliseconds delay) { forget_retry_delay_ = delay; }
    std::uint64_t holders_recorded() const { return holders_recorded_; }
    std::size_t drain() { return worker_->drain(); }
    bool has_completions() const { return worker_->has_completions(); }
    // Also tries failed forgettings again at once (start-up, shutdown and tests).
    void wait_idle() {
        retry_forgetting_at_ = {};
        flush();
        worker_->wait_idle();
    }

private:
    // recipient: received a message showing the subject's id; pseudonymous_recipient: received
    // its data under its pseudonym only (GDPR Art. 4(5), 25(1): an erase command to it need not
    // name the id).
    enum class role : std::uint8_t { publisher, recipient, retained, pseudonymous_recipient };
    // Holders (client ids, topics) are interned: a subject's entry keeps small sets of numbers,
    // a few bytes per holder, because a fleet has hundreds of thousands of subjects. The entry
    // holds only what every publish and delivery checks; its reference is kept apart (refs_),
    // read only when a new holder is written.
    using holder_id = std::uint32_t;
    struct entry {
        holder_set publishers, recipients, retained, pseudonymous_recipients;
    };
    // A subject of a publish or a retained message, and whether its recipients get its id.
    // `identity` and `digest` (a hash of the payload): the retained message's, so that only a
    // delivery of that very message is taken to hide the id; null for one loaded from disk.
    struct subject_seen {
        std::uint32_t entry;
        bool id_shown;
        const void* identity = nullptr;
        std::size_t digest = 0;
    };
    struct row {
        std::string ref;
        role r;
        holder_id holder;
        std::int64_t at_ms;
        bool sealed;  // stored as topic_sealer::seal(holder)
    };
    data_map() = default;
    std::string ref_of(std::string_view subject) const { return subject_ref_ ? subject_ref_(subject) : std::string(subject); }
    holder_id intern(std::string_view holder);
    // The entry of a subject id, created when new; the reference is computed once per subject.
    std::uint32_t entry_of(std::string_view subject);
    std::uint32_t entry_by_ref(std::string_view ref, bool create);
    // A subject first seen under its current name `ref` that the map knows under an earlier name:
    // the earlier entry becomes (or joins) the current one, in memory now and on disk in the
    // background, so new holders are written under one name and the subject is not new.
    void fold(const std::string& earlier_name, const std::string& ref);
    // Adds a holder in memory; true (and written at the next flush) when it is new.
    bool add(std::uint32_t entry_index, role r, holder_id holder);
    void add_recipient(const subject_seen& s, holder_id reader);
    holder_set& list_of(entry& e, role r);
    void drop_retained_holder(const std::string& topic);
    // Forgets what `topic` held in memory; false when it held nothing known.
    bool drop_retained_in_memory(const std::string& topic);
    static void delete_retained_rows(sqlite_db& db, const std::string& topic, topic_sealer* sealer, topic_sealer* earlier);
    // Opens a retained topic as stored (sealed or in clear); false when no sealer here opens it.
    bool open_topic(const std::string& stored, std::string& topic) const;
    std::size_t rename_ids(sqlite_db& db);
    // How a retained topic is kept on disk.
    enum class topic_storage : std::uint8_t { clear, sealed, none };
    topic_storage storage_of(std::string_view topic) const;
    // How a holder row of role `r` is kept on disk (client ids always in clear).
    topic_storage storage_of(role r, holder_id holder) const;
    void release(std::uint32_t entry_index);
    std::vector<std::string> names(const holder_set& ids) const;
    storage_worker::done_fn count_failure();

    subject_ref_fn subject_ref_;
    std::vector<subject_ref_fn> earlier_refs_;
    topic_check_fn in_clear_;
    // Used by the background writer only (and at open, before it starts): declared before worker_,
    // so it outlives the writer's last job.
    std::unique_ptr<topic_sealer> sealer_;
    std::unique_ptr<topic_sealer> earlier_sealer_;
    std::size_t loaded_by_pseudonym_ = 0, renamed_from_id_ = 0;
    std::size_t unreadable_topics_ = 0;
    std::vector<std::string> clears_unsaved_;
    std::size_t unreadable_clears_ = 0;
    // The notes clears_saved() deletes: those read at open that opened (as stored), and those
    // made since (the topic, and whether it is stored sealed). Notes that did not open are kept.
    std::vector<std::string> clear_notes_read_;
    std::vector<std::pair<std::string, bool>> clear_notes_made_;
    std::vector<entry> entries_;
    std::vector<std::string> refs_;  // by entry index
    std::vector<std::uint32_t> free_entries_;
    subject_table<std::uint32_t> by_ref_;  // subject ref -> entry
    subject_table<std::uint32_t> by_id_;   // subject id -> entry (a cache: the ref is a keyed hash)
    // Names unknown_among computed for subjects not in by_id_ yet, for the publish it was asked
    // about: published() takes them from here rather than computing each keyed hash again.
    mutable std::vector<std::pair<std::string, std::string>> named_for_publish_;  // id, ref
    subject_table<holder_id> holder_ids_;
    std::vector<std::string> holder_names_;
    // topic -> its subjects; loaded from disk, a subject counts as shown (the message is unknown).
    std::unordered_map<std::string, std::vector<subject_seen>> retained_by_topic_;
    std::vector<subject_seen> last_publish_;  // the last publish's subjects
    bool names_by_pseudonym_ = false;
    const void* last_identity_ = nullptr;
    std::string last_topic_;  // with the identity: a reused payload address alone proves nothing
    std::vector<row> unwritten_;
    // Forgettings whose transaction failed, tried again at the next flush (before new holders).
    // A subject's names to delete on disk, and what goes with it (forget_subject).
    struct forgetting {
        std::vector<std::string> refs;
        storage_worker::work_fn together;
    };
    std::vector<forgetting> unforgotten_;  // failed, tried again at a flush
    std::chrono::steady_clock::time_point retry_forgetting_at_{};
    std::chrono::milliseconds forget_retry_delay_{5000};
    std::uint64_t forget_failures_ = 0;
    std::string last_forget_error_;
    // A holder row as written to disk (sealed there when `sealed`).
    struct holder_row {
        std::string ref, holder;
        role r;
        std::int64_t at_ms;
        bool sealed;
    };
    // A clear to note on disk (retained_cleared): the topic, whether its rows are to be deleted,
    // whether it is noted, and how.
    struct clear_note {
        std::string topic;
        bool held = false, noted = false, sealed = false;
        std::int64_t at_ms = 0;
    };
    std::vector<clear_note> unnoted_;  // failed, tried again at a flush (before the forgettings)
    // Notes the clear and deletes the topic's rows, then writes `rewrite` (in the same transaction).
    void submit_clear(const clear_note& n, std::vector<holder_row> rewrite);
    // The rows of what `topic` holds now (a retained message set since its clear).
    std::vector<holder_row> retained_holders_now(const std::string& topic);
    // Deletes the forgetting's rows, then writes `rewrite` (in the same transaction).
    void submit_forgetting(const forgetting& f, storage_worker::done_fn done, std::vector<holder_row> rewrite = {});
    // For a forgetting tried again: the holders the map has noted under its names since (their
    // rows, first seen now).
    std::vector<holder_row> holders_now_under(const forgetting& f);
    static void write_rows(sqlite_db& db, const std::vector<holder_row>& rows, topic_sealer* sealer);
    std::uint64_t holders_recorded_ = 0;
    std::uint64_t write_failures_ = 0;
    std::string last_write_error_;
    std::unique_ptr<storage_worker> worker_;
};

} // namespace gdpr
