#pragma once
// Retained topics that name a data subject in one of their levels (a schema's `topicLevel`
// subject), kept in the data map's file without the subject id in clear: sealed with AES-256-GCM
// under a key derived from a key file the operator already holds (the audit key, else the
// pseudonymisation key). The seal is deterministic (its nonce is a keyed hash of the topic), so
// the same topic always has the same stored form and can be deleted by it; that reveals only
// whether two stored topics are equal, and a topic's length. Erasure needs the topic back after a
// restart, to clear the retained message the broker still holds (GDPR Art. 17), which a one-way
// hash could not give. (AES-GCM-SIV would do the same in one primitive; OpenSSL has it from 3.2.)
#include <memory>
#include <string>
#include <string_view>

namespace gdpr {

class gcm_sealer;

class topic_sealer {
public:
    // The stored form of a sealed topic starts with this. A topic in clear does not: MQTT topics
    // should not hold control characters, and Mosquitto refuses them.
    static constexpr std::string_view PREFIX = "\x01sealed:";

    // Derives the sealing keys from `secret` (the bytes of a key file, at least 32) and `label`
    // (the key file's role, so that each key file gives its own keys).
    topic_sealer(std::string_view secret, std::string_view label);
    ~topic_sealer();
    topic_sealer(const topic_sealer&) = delete;
    topic_sealer& operator=(const topic_sealer&) = delete;

    // PREFIX followed by the hex of nonce || ciphertext || tag. Not for two threads at once: the
    // cipher context is reused.
    std::string seal(std::string_view topic);
    // The topic, or false when `stored` is not a seal this key made (another key, or edited).
    bool open(std::string_view stored, std::string& topic);
    static bool is_sealed(std::string_view stored) { return stored.substr(0, PREFIX.size()) == PREFIX; }

private:
    struct keys;
    std::unique_ptr<keys> keys_;
    std::unique_ptr<gcm_sealer> sealer_;
};

} // namespace gdpr
