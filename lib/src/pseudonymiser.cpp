#include "gdpr/pseudonymiser.hpp"

#include <algorithm>
#include <array>
#include <stdexcept>

// HMAC is built from OpenSSL's SHA-256 block functions (deprecated in OpenSSL 3 in favour of
// EVP) because EVP_MD_CTX_copy_ex allocates a provider context on every copy: with the keyed
// inner and outer states held as plain structs, one pseudonym costs two SHA-256 compressions
// and no allocation (bench/filter_bench: BM_pseudonymise_one_value).
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

namespace gdpr {

namespace {
constexpr std::size_t BLOCK = SHA256_CBLOCK;  // 64
} // namespace

// HMAC (RFC 2104) with the key-dependent first blocks hashed once.
struct pseudonymiser::state {
    SHA256_CTX inner;
    SHA256_CTX outer;
    ~state() {
        OPENSSL_cleanse(&inner, sizeof inner);
        OPENSSL_cleanse(&outer, sizeof outer);
    }
};

pseudonymiser::pseudonymiser(std::string_view key) : state_(std::make_unique<state>()) {
    if (key.size() < MIN_KEY_BYTES) throw std::invalid_argument("pseudonymisation key is shorter than 32 bytes");
    std::array<unsigned char, BLOCK> k{};
    if (key.size() > BLOCK) {
        SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), k.data());
    } else {
        std::copy(key.begin(), key.end(), k.begin());
    }
    std::array<unsigned char, BLOCK> ipad{}, opad{};
    for (std::size_t i = 0; i < BLOCK; ++i) {
        ipad[i] = static_cast<unsigned char>(k[i] ^ 0x36);
        opad[i] = static_cast<unsigned char>(k[i] ^ 0x5c);
    }
    if (!SHA256_Init(&state_->inner) || !SHA256_Update(&state_->inner, ipad.data(), BLOCK) ||
        !SHA256_Init(&state_->outer) || !SHA256_Update(&state_->outer, opad.data(), BLOCK))
        throw std::runtime_error("OpenSSL SHA-256 failed");
    OPENSSL_cleanse(k.data(), k.size());
    OPENSSL_cleanse(ipad.data(), ipad.size());
    OPENSSL_cleanse(opad.data(), opad.size());
}

pseudonymiser::~pseudonymiser() = default;

bool pseudonymiser::append_pseudonym(std::string_view input, std::string& out) const {
    unsigned char inner_hash[SHA256_DIGEST_LENGTH];
    unsigned char mac[SHA256_DIGEST_LENGTH];
    SHA256_CTX work = state_->inner;
    if (!SHA256_Update(&work, input.data(), input.size()) || !SHA256_Final(inner_hash, &work)) return false;
    work = state_->outer;
    if (!SHA256_Update(&work, inner_hash, sizeof inner_hash) || !SHA256_Final(mac, &work)) return false;
    static constexpr char HEX[] = "0123456789abcdef";
    for (std::size_t i = 0; i < PSEUDONYM_HEX_CHARS / 2; ++i) {
        out.push_back(HEX[mac[i] >> 4]);
        out.push_back(HEX[mac[i] & 0x0f]);
    }
    OPENSSL_cleanse(&work, sizeof work);
    return true;
}

std::string pseudonymiser::pseudonym(std::string_view input) const {
    std::string out;
    if (!append_pseudonym(input, out)) throw std::runtime_error("OpenSSL HMAC-SHA256 failed");
    return out;
}

} // namespace gdpr
