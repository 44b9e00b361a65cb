#pragma once
// Key material of the audit trail. A master key file (mode 0600) yields two keys: one wraps the
// per-subject data keys, one turns subject ids into stable references (HMAC), so records can be
// found by subject without storing the id in clear. Each subject's records are sealed with
// AES-256-GCM under the subject's own data key; deleting that key (crypto-shredding, GDPR Art. 17)
// leaves the records in place, chained and verifiable, but unreadable.
#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <mutex>

#include "gdpr/pseudonymiser.hpp"

namespace gdpr {

using data_key = std::array<unsigned char, 32>;
class gcm_sealer;

// HMAC-SHA256 of `message` under `key`. Throws std::runtime_error when OpenSSL fails.
data_key hmac_sha256(std::string_view key, std::string_view message);

class audit_keys {
public:
    // Derives the keys from the contents of a master key file (at least 32 random bytes).
    explicit audit_keys(std::string_view master_key_bytes);
    ~audit_keys();
    audit_keys(const audit_keys&) = delete;
    audit_keys& operator=(const audit_keys&) = delete;

    // Reads and checks the key file: throws config_error naming `option` when it is missing,
    // accessible by group or others, or too short.
    static std::unique_ptr<audit_keys> from_file(const std::string& option, const std::string& path);

    // The subject's reference: 32 hex digits, the same for the same subject and master key.
    std::string subject_ref(std::string_view subject) const { return refs_.pseudonym(subject); }

    // A value that identifies the master key without revealing it (stored with the trail, so
    // that a different key file is refused at start-up).
    std::string key_check() const;

    // Authenticates a record's statement of the chain's anchor (records up to `seq` removed, the
    // last one's hash `hash`): 64 hex digits. The chain's SHA-256 links need no key, so anyone
    // could append a statement that vouches for an anchor moved over records deleted by hand.
    std::string anchor_mac(std::int64_t seq, std::string_view hash) const;
    // Authenticates a key_shredded record (its number, the subject's reference and whether a key
    // row was deleted): 64 hex digits. Without it, anyone able to write the file could append a
    // record that explains away a data key they deleted or replaced (GDPR Art. 5(2)).
    std::string shred_mac(std::int64_t seq, std::string_view subject_ref, bool key_existed) const;

    // A fresh random data key, and its wrapped form (nonce || ciphertext || tag) bound to `ref`.
    data_key new_data_key() const;
    std::string wrap(const data_key& key, std::string_view ref) const;
    // Throws key_not_opened when `wrapped` was not made by this master key for `ref` (edited,
    // damaged or another key's), other exceptions for failures of the library itself.
    struct key_not_opened : std::runtime_error {
        using std::runtime_error::runtime_error;
    };
    data_key unwrap(std::string_view wrapped, std::string_view ref) const;

private:
    data_key wrapping_key_{};
    data_key anchor_key_{};
    data_key shred_key_{};
    std::string check_;
    // One keyed context for wrapping and unwrapping, shared under a lock (keys are wrapped once
    // per new subject: often enough that a context per call shows).
    mutable std::mutex wrap_mutex_;
    std::unique_ptr<gcm_sealer> wrapper_;
    pseudonymiser refs_;
};

// AES-256-GCM under one data key, keyed once. Seals are "nonce(12) || ciphertext || tag(16)"; the
// caller supplies nonces and must never repeat one under a key.
class gcm_sealer {
public:
    static constexpr std::size_t NONCE_BYTES = 12;
    static constexpr std::size_t TAG_BYTES = 16;
    static constexpr std::size_t OVERHEAD = NONCE_BYTES + TAG_BYTES;

    explicit gcm_sealer(const data_key& key);
    ~gcm_sealer();
    // Switches to another key (cheaper than a new sealer: the contexts are reused).
    void rekey(const data_key& key);
    gcm_sealer(const gcm_sealer&) = delete;
    gcm_sealer& operator=(const gcm_sealer&) = delete;

    // Appends the seal of `plain` (authenticating `aad` too) to `out`.
    void seal(const std::array<unsigned char, NONCE_BYTES>& nonce, std::string_view aad, std::string_view plain,
              std::string& out);
    // Returns false when `sealed` is not authentic under this key and `aad`.
    bool open(std::string_view sealed, std::string_view aad, std::string& plain);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace gdpr
