#include "gdpr/audit_crypto.hpp"

#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "gdpr/audit_chain.hpp"
#include "gdpr/secret_file.hpp"

namespace gdpr {

data_key hmac_sha256(std::string_view key, std::string_view message) {
    data_key out{};
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
              message.size(), out.data(), &len) ||
        len != out.size())
        throw std::runtime_error("OpenSSL HMAC-SHA256 failed");
    return out;
}

namespace {

data_key derive(std::string_view master, std::string_view label) { return hmac_sha256(master, label); }

std::string derive_string(std::string_view master, std::string_view label) {
    const data_key k = derive(master, label);
    return std::string(reinterpret_cast<const char*>(k.data()), k.size());
}

struct cipher_ctx {
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    cipher_ctx() {
        if (!ctx) throw std::bad_alloc();
    }
    ~cipher_ctx() { EVP_CIPHER_CTX_free(ctx); }
    cipher_ctx(const cipher_ctx&) = delete;
    cipher_ctx& operator=(const cipher_ctx&) = delete;
};

const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

} // namespace

struct gcm_sealer::impl {
    cipher_ctx enc;
    cipher_ctx dec;
    data_key key{};
    bool dec_keyed = false;  // the decryption context is keyed on first use
    ~impl() { OPENSSL_cleanse(key.data(), key.size()); }
};

gcm_sealer::gcm_sealer(const data_key& key) : impl_(std::make_unique<impl>()) {
    if (EVP_EncryptInit_ex(impl_->enc.ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
        EVP_DecryptInit_ex(impl_->dec.ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1)
        throw std::runtime_error("OpenSSL cannot set up AES-256-GCM");
    rekey(key);
}

gcm_sealer::~gcm_sealer() = default;

void gcm_sealer::rekey(const data_key& key) {
    impl_->key = key;
    impl_->dec_keyed = false;
    if (EVP_EncryptInit_ex(impl_->enc.ctx, nullptr, nullptr, key.data(), nullptr) != 1)
        throw std::runtime_error("OpenSSL cannot key AES-256-GCM");
}

void gcm_sealer::seal(const std::array<unsigned char, NONCE_BYTES>& nonce, std::string_view aad, std::string_view plain,
                      std::string& out) {
    EVP_CIPHER_CTX* c = impl_->enc.ctx;
    const std::size_t start = out.size();
    out.resize(start + NONCE_BYTES + plain.size() + TAG_BYTES);
    auto* p = reinterpret_cast<unsigned char*>(&out[start]);
    std::copy(nonce.begin(), nonce.end(), p);
    int len = 0;
    int ok = EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, nonce.data());
    if (ok && !aad.empty()) ok = EVP_EncryptUpdate(c, nullptr, &len, bytes(aad), static_cast<int>(aad.size()));
    if (ok) ok = EVP_EncryptUpdate(c, p + NONCE_BYTES, &len, bytes(plain), static_cast<int>(plain.size()));
    if (ok) ok = EVP_EncryptFinal_ex(c, p + NONCE_BYTES + len, &len);
    if (ok)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, static_cast<int>(TAG_BYTES), p + NONCE_BYTES + plain.size());
    if (ok != 1) {
        out.resize(start);
        throw std::runtime_error("OpenSSL AES-256-GCM encryption failed");
    }
}

bool gcm_sealer::open(std::string_view sealed, std::string_view aad, std::string& plain) {
    if (sealed.size() < OVERHEAD) return false;
    EVP_CIPHER_CTX* c = impl_->dec.ctx;
    if (!impl_->dec_keyed) {
        if (EVP_DecryptInit_ex(c, nullptr, nullptr, impl_->key.data(), nullptr) != 1) return false;
        impl_->dec_keyed = true;
    }
    const std::size_t n = sealed.size() - OVERHEAD;
    plain.resize(n);
    auto* out = reinterpret_cast<unsigned char*>(plain.data());
    const unsigned char* in = bytes(sealed);
    int len = 0;
    int ok = EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, in);
    if (ok && !aad.empty()) ok = EVP_DecryptUpdate(c, nullptr, &len, bytes(aad), static_cast<int>(aad.size()));
    if (ok) ok = EVP_DecryptUpdate(c, out, &len, in + NONCE_BYTES, static_cast<int>(n));
    if (ok)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, static_cast<int>(TAG_BYTES),
                                 const_cast<unsigned char*>(in + NONCE_BYTES + n));
    if (ok) ok = EVP_DecryptFinal_ex(c, out + len, &len);
    if (ok != 1) {
        OPENSSL_cleanse(plain.data(), plain.size());
        plain.clear();
        return false;
    }
    return true;
}

audit_keys::audit_keys(std::string_view master)
    : wrapping_key_(derive(master, "mosquitto-gdpr audit data-key wrapping v1")),
      anchor_key_(derive(master, "mosquitto-gdpr audit anchor statement v1")),
      shred_key_(derive(master, "mosquitto-gdpr audit key shredded v1")),
      refs_(derive_string(master, "mosquitto-gdpr audit subject reference v1")) {
    data_key check = derive(master, "mosquitto-gdpr audit key check v1");
    static const char* digits = "0123456789abcdef";
    for (std::size_t i = 0; i < 16; ++i) {
        check_.push_back(digits[check[i] >> 4]);
        check_.push_back(digits[check[i] & 15]);
    }
    OPENSSL_cleanse(check.data(), check.size());
    wrapper_ = std::make_unique<gcm_sealer>(wrapping_key_);
}

std::string audit_keys::key_check() const { return check_; }

namespace {
std::string hex_mac(const data_key& key, std::string_view message) {
    const data_key mac = hmac_sha256(std::string_view(reinterpret_cast<const char*>(key.data()), key.size()), message);
    return to_hex(std::string_view(reinterpret_cast<const char*>(mac.data()), mac.size()));
}
} // namespace

std::string audit_keys::anchor_mac(std::int64_t seq, std::string_view hash) const {
    std::string message = std::to_string(seq);
    message.push_back(':');
    message.append(hash);
    return hex_mac(anchor_key_, message);
}

std::string audit_keys::shred_mac(std::int64_t seq, std::string_view subject_ref, bool key_existed) const {
    std::string message = std::to_string(seq);
    message.push_back(':');
    message.append(subject_ref);
    message.append(key_existed ? ":1" : ":0");
    return hex_mac(shred_key_, message);
}

audit_keys::~audit_keys() {
    OPENSSL_cleanse(wrapping_key_.data(), wrapping_key_.size());
    OPENSSL_cleanse(anchor_key_.data(), anchor_key_.size());
    OPENSSL_cleanse(shred_key_.data(), shred_key_.size());
}

std::unique_ptr<audit_keys> audit_keys::from_file(const std::string& option, const std::string& path) {
    return std::make_unique<audit_keys>(read_secret_file(option, path, 32));
}

data_key audit_keys::new_data_key() const {
    data_key k{};
    if (RAND_bytes(k.data(), static_cast<int>(k.size())) != 1) throw std::runtime_error("OpenSSL RAND_bytes failed");
    return k;
}

std::string audit_keys::wrap(const data_key& key, std::string_view ref) const {
    // Few keys are ever wrapped (one per subject), so a random nonce is safe here.
    std::array<unsigned char, gcm_sealer::NONCE_BYTES> nonce{};
    if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1)
        throw std::runtime_error("OpenSSL RAND_bytes failed");
    std::string out;
    std::lock_guard<std::mutex> lock(wrap_mutex_);
    wrapper_->seal(nonce, ref, std::string_view(reinterpret_cast<const char*>(key.data()), key.size()), out);
    return out;
}

data_key audit_keys::unwrap(std::string_view wrapped, std::string_view ref) const {
    std::string plain;
    std::unique_lock<std::mutex> lock(wrap_mutex_);
    const bool opened = wrapper_->open(wrapped, ref, plain);
    lock.unlock();
    if (!opened || plain.size() != 32) {
        OPENSSL_cleanse(plain.data(), plain.size());
        throw key_not_opened("a data key does not belong to this master key");
    }
    data_key k{};
    std::copy(plain.begin(), plain.end(), k.begin());
    OPENSSL_cleanse(plain.data(), plain.size());
    return k;
}

} // namespace gdpr
