#include "gdpr/topic_sealer.hpp"

#include <algorithm>
#include <array>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "gdpr/audit_crypto.hpp"
#include "gdpr/secret_file.hpp"

namespace gdpr {

namespace {

// Constant: the nonce is derived from the topic alone, so nothing may vary here that the nonce
// does not cover (the same nonce with other associated data would give GCM's hash key away).
constexpr std::string_view AAD = "mosquitto-gdpr data map retained topic v1";

data_key hmac(std::string_view key, std::string_view message) {
    data_key out{};
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
              message.size(), out.data(), &len) ||
        len != out.size())
        throw std::runtime_error("OpenSSL HMAC-SHA256 failed");
    return out;
}

std::string_view view(const data_key& k) { return std::string_view(reinterpret_cast<const char*>(k.data()), k.size()); }

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

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
    data_key prk = hmac(std::string("mosquitto-gdpr data map topics v1: ") + std::string(label), secret);
    keys_->sealing = hmac(view(prk), std::string("sealing v1\x01", 11));
    keys_->nonces = hmac(view(prk), std::string("nonces v1\x01", 10));
    OPENSSL_cleanse(prk.data(), prk.size());
    sealer_ = std::make_unique<gcm_sealer>(keys_->sealing);
}

topic_sealer::~topic_sealer() = default;

std::unique_ptr<topic_sealer> topic_sealer::from_key_file(const std::string& option, const std::string& path) {
    std::string secret = read_secret_file(option, path, 32);
    auto sealer = std::make_unique<topic_sealer>(secret, option);
    OPENSSL_cleanse(secret.data(), secret.size());
    return sealer;
}

std::string topic_sealer::seal(std::string_view topic) {
    // Synthetic nonce: the same topic always seals the same way, two topics never share a nonce.
    const data_key mac = hmac(view(keys_->nonces), topic);
    std::array<unsigned char, gcm_sealer::NONCE_BYTES> nonce{};
    std::copy(mac.begin(), mac.begin() + nonce.size(), nonce.begin());
    std::string sealed;
    sealer_->seal(nonce, AAD, topic, sealed);
    static const char* digits = "0123456789abcdef";
    std::string out(PREFIX);
    out.reserve(PREFIX.size() + 2 * sealed.size());
    for (const unsigned char c : sealed) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 15]);
    }
    return out;
}

bool topic_sealer::open(std::string_view stored, std::string& topic) {
    if (!is_sealed(stored)) return false;
    const std::string_view hex = stored.substr(PREFIX.size());
    if (hex.size() % 2 != 0 || hex.size() / 2 < gcm_sealer::OVERHEAD) return false;
    std::string sealed(hex.size() / 2, '\0');
    for (std::size_t i = 0; i < sealed.size(); ++i) {
        const int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        sealed[i] = static_cast<char>(hi << 4 | lo);
    }
    if (!sealer_->open(sealed, AAD, topic)) return false;
    // A row is deleted by its stored form, so only the one form seal() gives is taken.
    if (seal(topic) == stored) return true;
    topic.clear();
    return false;
}

} // namespace gdpr
