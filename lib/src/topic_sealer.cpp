#include "gdpr/topic_sealer.hpp"

#include <algorithm>
#include <array>
#include <stdexcept>

#include <openssl/crypto.h>

#include "gdpr/audit_chain.hpp"
#include "gdpr/audit_crypto.hpp"

namespace gdpr {

namespace {

// Constant: the nonce is derived from the topic alone, so nothing may vary here that the nonce
// does not cover (the same nonce with other associated data would give GCM's hash key away).
constexpr std::string_view AAD = "mosquitto-gdpr data map retained topic v1";

std::string_view view(const data_key& k) { return std::string_view(reinterpret_cast<const char*>(k.data()), k.size()); }

} // namespace

struct topic_sealer::keys {
    data_key sealing{};
    data_key nonces{};
    ~keys() {
        OPENSSL_cleanse(sealing.data(), sealing.size());
        OPENSSL_cleanse(nonces.data(), nonces.size());
    }
};

topic_sealer::topic_sealer(std::string_view secret, std::string_view label) : keys_(std::make_unique<keys>()) {
    if (secret.size() < 32) throw std::invalid_argument("a topic sealing secret is shorter than 32 bytes");
    // HKDF (RFC 5869): extract with the label as salt, so that these keys differ from anything the
    // same key file gives elsewhere (pseudonyms are HMACs keyed by the file itself), then expand.
    data_key prk = hmac_sha256(std::string("mosquitto-gdpr data map topics v1: ") + std::string(label), secret);
    keys_->sealing = hmac_sha256(view(prk), std::string("sealing v1\x01", 11));
    keys_->nonces = hmac_sha256(view(prk), std::string("nonces v1\x01", 10));
    OPENSSL_cleanse(prk.data(), prk.size());
    sealer_ = std::make_unique<gcm_sealer>(keys_->sealing);
}

topic_sealer::~topic_sealer() = default;

std::string topic_sealer::seal(std::string_view topic) {
    // Synthetic nonce: the same topic always seals the same way, two topics never share a nonce.
    const data_key mac = hmac_sha256(view(keys_->nonces), topic);
    std::array<unsigned char, gcm_sealer::NONCE_BYTES> nonce{};
    std::copy(mac.begin(), mac.begin() + nonce.size(), nonce.begin());
    std::string sealed;
    sealer_->seal(nonce, AAD, topic, sealed);
    return std::string(PREFIX) + to_hex(sealed);
}

bool topic_sealer::open(std::string_view stored, std::string& topic) {
    if (!is_sealed(stored)) return false;
    const auto sealed = from_hex(stored.substr(PREFIX.size()));
    if (!sealed || sealed->size() < gcm_sealer::OVERHEAD || !sealer_->open(*sealed, AAD, topic)) return false;
    // A row is deleted by its stored form, so only the one form seal() gives is taken.
    if (seal(topic) == stored) return true;
    OPENSSL_cleanse(topic.data(), topic.size());
    topic.clear();
    return false;
}

} // namespace gdpr
