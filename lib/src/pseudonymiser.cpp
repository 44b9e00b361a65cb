#include "gdpr/pseudonymiser.hpp"

#include <array>
#include <stdexcept>

#include <openssl/evp.h>

namespace gdpr {

namespace {
struct md_ctx_deleter {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using md_ctx = std::unique_ptr<EVP_MD_CTX, md_ctx_deleter>;
constexpr std::size_t BLOCK = 64;  // SHA-256 block size
} // namespace

// HMAC (RFC 2104) with the key-dependent first blocks hashed once: each call copies the
// pre-keyed inner and outer contexts instead of re-deriving them.
struct pseudonymiser::state {
    EVP_MD* sha256 = nullptr;
    md_ctx inner{EVP_MD_CTX_new()};
    md_ctx outer{EVP_MD_CTX_new()};
    md_ctx work{EVP_MD_CTX_new()};
    ~state() { EVP_MD_free(sha256); }
};

pseudonymiser::pseudonymiser(std::string_view key) : state_(std::make_unique<state>()) {
    if (key.size() < MIN_KEY_BYTES) throw std::invalid_argument("pseudonymisation key is shorter than 32 bytes");
    state_->sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (!state_->sha256 || !state_->inner || !state_->outer || !state_->work)
        throw std::runtime_error("OpenSSL cannot provide SHA-256");
    std::array<unsigned char, BLOCK> k{};
    if (key.size() > BLOCK) {
        unsigned int len = 0;
        if (!EVP_Digest(key.data(), key.size(), k.data(), &len, state_->sha256, nullptr))
            throw std::runtime_error("OpenSSL SHA-256 failed");
    } else {
        std::copy(key.begin(), key.end(), k.begin());
    }
    std::array<unsigned char, BLOCK> ipad{}, opad{};
    for (std::size_t i = 0; i < BLOCK; ++i) {
        ipad[i] = static_cast<unsigned char>(k[i] ^ 0x36);
        opad[i] = static_cast<unsigned char>(k[i] ^ 0x5c);
    }
    if (!EVP_DigestInit_ex(state_->inner.get(), state_->sha256, nullptr) ||
        !EVP_DigestUpdate(state_->inner.get(), ipad.data(), BLOCK) ||
        !EVP_DigestInit_ex(state_->outer.get(), state_->sha256, nullptr) ||
        !EVP_DigestUpdate(state_->outer.get(), opad.data(), BLOCK))
        throw std::runtime_error("OpenSSL SHA-256 failed");
    OPENSSL_cleanse(k.data(), k.size());
    OPENSSL_cleanse(ipad.data(), ipad.size());
    OPENSSL_cleanse(opad.data(), opad.size());
}

pseudonymiser::~pseudonymiser() = default;

bool pseudonymiser::append_pseudonym(std::string_view input, std::string& out) const {
    unsigned char inner_hash[EVP_MAX_MD_SIZE];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX* w = state_->work.get();
    if (!EVP_MD_CTX_copy_ex(w, state_->inner.get()) || !EVP_DigestUpdate(w, input.data(), input.size()) ||
        !EVP_DigestFinal_ex(w, inner_hash, &len))
        return false;
    if (!EVP_MD_CTX_copy_ex(w, state_->outer.get()) || !EVP_DigestUpdate(w, inner_hash, len) ||
        !EVP_DigestFinal_ex(w, mac, &len))
        return false;
    static constexpr char HEX[] = "0123456789abcdef";
    for (std::size_t i = 0; i < PSEUDONYM_HEX_CHARS / 2; ++i) {
        out.push_back(HEX[mac[i] >> 4]);
        out.push_back(HEX[mac[i] & 0x0f]);
    }
    return true;
}

std::string pseudonymiser::pseudonym(std::string_view input) const {
    std::string out;
    if (!append_pseudonym(input, out)) throw std::runtime_error("OpenSSL HMAC-SHA256 failed");
    return out;
}

} // namespace gdpr
