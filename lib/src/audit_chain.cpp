#include "gdpr/audit_chain.hpp"

#include <algorithm>
#include <stdexcept>

// Low-level SHA-256 for the same reason as the pseudonymiser: no allocation per record.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

namespace gdpr {

namespace {

struct hasher {
    SHA256_CTX ctx;
    hasher() {
        if (!SHA256_Init(&ctx)) throw std::runtime_error("OpenSSL SHA-256 failed");
    }
    void raw(const void* p, std::size_t n) {
        if (!SHA256_Update(&ctx, p, n)) throw std::runtime_error("OpenSSL SHA-256 failed");
    }
    void integer(std::int64_t v) {
        unsigned char b[8];
        const auto u = static_cast<std::uint64_t>(v);
        for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(u >> (56 - 8 * i));
        raw(b, 8);
    }
    // Length-prefixed, so that field boundaries cannot shift.
    void text(std::string_view s) {
        integer(static_cast<std::int64_t>(s.size()));
        raw(s.data(), s.size());
    }
    void optional_text(const std::optional<std::string_view>& s) {
        if (!s) return integer(-1);
        text(*s);
    }
    chain_hash finish() {
        chain_hash h{};
        if (!SHA256_Final(h.data(), &ctx)) throw std::runtime_error("OpenSSL SHA-256 failed");
        return h;
    }
};

} // namespace

record_view view_of(const stored_record& r) {
    record_view v;
    v.seq = r.seq;
    v.at_ms = r.at_ms;
    v.kind = r.kind;
    v.expires_ms = r.expires_ms;
    v.session = r.session;
    v.client_id = r.client_id;
    v.schema = r.schema;
    v.detail = r.detail;
    if (r.payload) v.payload = std::string_view(*r.payload);
    if (r.sealed) v.sealed = std::string_view(*r.sealed);
    return v;
}

chain_hash content_digest(const record_view& r) {
    hasher h;
    h.integer(r.session);
    h.text(r.client_id);
    h.text(r.schema);
    h.text(r.detail);
    h.optional_text(r.payload);
    h.optional_text(r.sealed);
    return h.finish();
}

chain_hash link_hash(const chain_hash& previous, const record_view& r, const chain_hash& digest) {
    hasher h;
    h.raw(previous.data(), previous.size());
    h.integer(r.seq);
    h.integer(r.at_ms);
    h.text(r.kind);
    h.integer(r.expires_ms);
    h.raw(digest.data(), digest.size());
    return h.finish();
}

std::string to_hex(std::string_view bytes) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char c : bytes) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 15]);
    }
    return out;
}

std::optional<std::string> from_hex(std::string_view hex) {
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    if (hex.size() % 2 != 0) return std::nullopt;
    std::string out(hex.size() / 2, '\0');
    for (std::size_t i = 0; i < out.size(); ++i) {
        const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out[i] = static_cast<char>(hi * 16 + lo);
    }
    return out;
}

std::string ref_bytes(std::string_view hex) {
    auto bytes = hex.size() == 2 * ENVELOPE_REF_BYTES ? from_hex(hex) : std::nullopt;
    if (!bytes) throw std::invalid_argument("a subject reference has 32 hex digits");
    return std::move(*bytes);
}

void write_envelope_aad(std::int64_t seq, std::string_view ref, envelope_aad_bytes& out) {
    if (ref.size() != ENVELOPE_REF_BYTES) throw std::invalid_argument("an envelope reference has 16 bytes");
    const auto u = static_cast<std::uint64_t>(seq);
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(u >> (56 - 8 * i));
    std::copy(ref.begin(), ref.end(), out.begin() + 8);
}

std::string envelope_aad(std::int64_t seq, std::string_view ref) {
    envelope_aad_bytes aad;
    write_envelope_aad(seq, ref, aad);
    return std::string(aad.data(), aad.size());
}

} // namespace gdpr
