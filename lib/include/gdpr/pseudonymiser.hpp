#pragma once
// Keyed pseudonymisation (GDPR Art. 4(5)): HMAC-SHA256 under the operator's secret key. The same
// input under the same key always gives the same pseudonym, so records stay joinable; without
// the key, pseudonyms cannot be reversed or recomputed from guessed identifiers.
#include <memory>
#include <string>
#include <string_view>

namespace gdpr {

class pseudonymiser {
public:
    static constexpr std::size_t MIN_KEY_BYTES = 32;
    static constexpr std::size_t PSEUDONYM_HEX_CHARS = 32;  // first 128 bits of the HMAC

    // Throws std::invalid_argument when the key is shorter than MIN_KEY_BYTES, std::runtime_error
    // when OpenSSL cannot set up SHA-256.
    explicit pseudonymiser(std::string_view key);
    ~pseudonymiser();
    pseudonymiser(const pseudonymiser&) = delete;
    pseudonymiser& operator=(const pseudonymiser&) = delete;

    // Appends the pseudonym of `input` (PSEUDONYM_HEX_CHARS lowercase hex digits) to `out`.
    // Returns false only if OpenSSL fails. Safe to call from several threads at once.
    bool append_pseudonym(std::string_view input, std::string& out) const;
    std::string pseudonym(std::string_view input) const;

    // Whether `text` has a pseudonym's form: PSEUDONYM_HEX_CHARS lowercase hex digits.
    static bool has_pseudonym_form(std::string_view text) {
        if (text.size() != PSEUDONYM_HEX_CHARS) return false;
        for (const char c : text)
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        return true;
    }

private:
    struct state;
    std::unique_ptr<state> state_;
};

} // namespace gdpr
