#pragma once
// The hash chain of the audit trail. Each record's hash covers the previous record's hash, its own
// sequence number, time, kind and expiry, and a digest of its content. When retention removes a
// record's content, the digest stays in its place (a tombstone), so the chain still verifies; once
// every record up to some point is a tombstone, those rows go and an anchor keeps the last hash.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gdpr {

using chain_hash = std::array<unsigned char, 32>;

// One row of audit_records as stored.
struct stored_record {
    std::int64_t seq = 0;
    std::int64_t at_ms = 0;
    std::string kind;
    std::int64_t expires_ms = 0;
    // Content (absent in a tombstone).
    std::int64_t session = 0;
    std::string client_id;
    std::string schema;
    std::string detail;
    std::optional<std::string> payload;
    std::optional<std::string> sealed;
    // Set only in a tombstone: the digest of the content that was removed.
    std::optional<std::string> digest;
    std::string hash;
};

// The parts of a record the chain covers, borrowed (the writer hashes records without copying them).
struct record_view {
    std::int64_t seq = 0;
    std::int64_t at_ms = 0;
    std::string_view kind;
    std::int64_t expires_ms = 0;
    std::int64_t session = 0;
    std::string_view client_id;
    std::string_view schema;
    std::string_view detail;
    std::optional<std::string_view> payload;
    std::optional<std::string_view> sealed;
};
record_view view_of(const stored_record& r);

chain_hash content_digest(const record_view& r);
chain_hash link_hash(const chain_hash& previous, const record_view& r, const chain_hash& digest);
inline chain_hash content_digest(const stored_record& r) { return content_digest(view_of(r)); }
inline chain_hash link_hash(const chain_hash& previous, const stored_record& r, const chain_hash& digest) {
    return link_hash(previous, view_of(r), digest);
}
std::string to_hex(std::string_view bytes);
// The bytes of `hex` (either case); nothing when it has odd length or a character that is no hex digit.
std::optional<std::string> from_hex(std::string_view hex);
inline std::string to_hex(const chain_hash& h) {
    return to_hex(std::string_view(reinterpret_cast<const char*>(h.data()), h.size()));
}
inline std::string_view as_bytes(const chain_hash& h) {
    return std::string_view(reinterpret_cast<const char*>(h.data()), h.size());
}

// Layout of `sealed`: one envelope per subject, each "ref(16 bytes: the subject reference's hex
// digits decoded) || length(4, big-endian) || seal"; the seal's additional data is
// "seq(8, big-endian) || ref", so an envelope cannot be moved to another record.
inline constexpr std::size_t ENVELOPE_REF_BYTES = 16;
// The 16 bytes of a 32-hex-digit subject reference.
std::string ref_bytes(std::string_view hex_ref);
struct envelope_view {
    std::string_view ref;
    std::string_view seal;
};
// Calls `fn(envelope_view)` for each envelope; returns false when the blob is malformed.
template <class Fn>
bool for_each_envelope(std::string_view sealed, Fn&& fn) {
    while (!sealed.empty()) {
        constexpr std::size_t head = ENVELOPE_REF_BYTES + 4;
        if (sealed.size() < head) return false;
        const auto* p = reinterpret_cast<const unsigned char*>(sealed.data()) + ENVELOPE_REF_BYTES;
        const std::size_t len = (std::size_t(p[0]) << 24) | (std::size_t(p[1]) << 16) | (std::size_t(p[2]) << 8) | p[3];
        if (sealed.size() - head < len) return false;
        fn(envelope_view{sealed.substr(0, ENVELOPE_REF_BYTES), sealed.substr(head, len)});
        sealed.remove_prefix(head + len);
    }
    return true;
}
std::string envelope_aad(std::int64_t seq, std::string_view ref);
// The same additional data written into a caller's buffer (no allocation).
using envelope_aad_bytes = std::array<char, 8 + ENVELOPE_REF_BYTES>;
void write_envelope_aad(std::int64_t seq, std::string_view ref, envelope_aad_bytes& out);

} // namespace gdpr
