#pragma once
// The CPU-heavy half of writing audit records: AES-256-GCM sealing per subject and the SHA-256
// content digest. It runs on a thread of its own, so the writer can insert one chunk of records
// into SQLite while the next chunk is sealed. The writer prepares everything that needs the
// database or a single counter (data keys, nonces); this stage only computes.
#include <array>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gdpr/audit_chain.hpp"
#include "gdpr/audit_crypto.hpp"

namespace gdpr {

// One subject's envelope of one record: the data key is a copy, cleansed with the plan.
struct envelope_plan {
    std::array<char, ENVELOPE_REF_BYTES> ref{};
    data_key key{};
    std::array<unsigned char, gcm_sealer::NONCE_BYTES> nonce{};
    envelope_plan() = default;
    envelope_plan(const envelope_plan&) = default;
    envelope_plan& operator=(const envelope_plan&) = default;
    ~envelope_plan();  // cleanses the key (also the copies a growing vector leaves behind)
};

struct record_plan {
    record_view view;          // borrowed from the queued record; `sealed` is set by the stage
    std::string_view personal; // sealed once per envelope
    std::size_t first_envelope = 0;
    std::size_t envelopes = 0;
    std::string sealed;        // reused from chunk to chunk
    chain_hash digest{};
};

// The records of one chunk, in sequence order.
struct chunk_plan {
    std::vector<record_plan> records;
    std::size_t size = 0;  // records[0, size) belong to this chunk
    std::vector<envelope_plan> envelopes;

    // Starts a new chunk, keeping allocations; cleanses the data keys of the previous one.
    void reset();
    record_plan& add();
    ~chunk_plan();
};

class sealing_stage {
public:
    sealing_stage();
    // Waits for the chunk in progress, then stops the thread.
    ~sealing_stage();
    sealing_stage(const sealing_stage&) = delete;
    sealing_stage& operator=(const sealing_stage&) = delete;

    // Seals and digests `plan` on the stage's thread; one chunk at a time (wait() in between).
    // `plan` and everything its views borrow must stay untouched until wait() returns.
    void submit(chunk_plan& plan);
    // Blocks until the submitted chunk is done; rethrows what sealing threw. No-op when idle.
    void wait();

private:
    void run();
    void seal(chunk_plan& plan);

    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    chunk_plan* job_ = nullptr;
    bool busy_ = false;
    bool stopping_ = false;
    std::exception_ptr error_;
    // Thread-local to the stage: one context, re-keyed when the key changes, dropped after each
    // chunk so that no key outlives the chunk that used it.
    std::unique_ptr<gcm_sealer> sealer_;
    data_key sealer_key_{};
    bool keyed_ = false;
    std::thread thread_;
};

} // namespace gdpr
