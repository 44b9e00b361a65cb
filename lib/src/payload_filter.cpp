#include "gdpr/payload_filter.hpp"

#include <cstring>
#include <string>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "gdpr/field_path.hpp"
#include "gdpr/generalise.hpp"
#include "gdpr/pseudonymiser.hpp"

namespace gdpr {

std::string_view to_string(filter_status s) {
    switch (s) {
    case filter_status::ok: return "ok";
    case filter_status::invalid_json: return "not valid JSON";
    case filter_status::too_deep: return "nested too deeply";
    case filter_status::not_container: return "top level is not a JSON object or array";
    case filter_status::shape_mismatch: return "top level is an array but the schema describes an object";
    }
    return "?";
}

namespace {

constexpr std::int32_t NONE = field_tree::NONE;

inline bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

// Decodes the body of a JSON string already validated by the scanner (no quotes).
void decode_string(std::string_view raw, std::string& out) {
    out.clear();
    for (std::size_t i = 0; i < raw.size(); ++i) {
        const char c = raw[i];
        if (c != '\\') {
            out.push_back(c);
            continue;
        }
        const char e = raw[++i];
        switch (e) {
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
            std::uint32_t cp = 0;
            for (int k = 1; k <= 4; ++k) cp = (cp << 4) | static_cast<std::uint32_t>(hex_value(raw[i + static_cast<std::size_t>(k)]));
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {  // validated: a low surrogate escape follows
                std::uint32_t lo = 0;
                for (int k = 3; k <= 6; ++k) lo = (lo << 4) | static_cast<std::uint32_t>(hex_value(raw[i + static_cast<std::size_t>(k)]));
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            append_utf8(out, cp);
            break;
        }
        default: out.push_back(e); break;  // '"', '\\', '/'
        }
    }
}

// What the payload in hand is: a publish, or a copy this filter forwarded earlier (a retained
// message, an offline client's queue) checked again before a delivery.
enum class pass_kind : std::uint8_t {
    publish,
    stored_same_rules,   // filtered by these rules: only consent removes anything
    stored_other_rules,  // filtered by other rules: filtered again; what looks like a pseudonym is one
};

// A JSON string holding what pseudonymiser makes: PSEUDONYM_HEX_CHARS lowercase hex digits.
bool looks_like_pseudonym(std::string_view value) {
    return value.size() >= 2 && value.front() == '"' && value.back() == '"' &&
           pseudonymiser::has_pseudonym_form(value.substr(1, value.size() - 2));
}

class filter_run {
public:
    filter_run(const schema& s, const pseudonymiser* ps, std::uint64_t consented, std::string_view in,
               std::string& out, std::vector<field_outcome>* outcomes, pass_kind kind = pass_kind::publish,
               const std::vector<bool>* consent_unknown = nullptr)
        : s_(s), tree_(s.tree), ps_(ps), consented_(consented), begin_(in.data()), p_(in.data()),
          end_(in.data() + in.size()), out_(out), outcomes_(outcomes), kind_(kind), consent_unknown_(consent_unknown) {}

    // Walks `tokens` down from the top level; see payload_filter::find_scalar.
    bool find(const std::vector<std::string>& tokens, std::string& value) {
        for (const auto& token : tokens) {
            ws();
            if (p_ >= end_) return false;
            if (*p_ == '{') {
                if (!find_member(token)) return false;
            } else if (*p_ == '[') {
                if (!find_element(token)) return false;
            } else {
                return false;
            }
        }
        ws();
        if (p_ >= end_) return false;
        const char* start = p_;
        const char lead = *p_;
        if (lead == '{' || lead == '[' || lead == 'n') return false;
        if (!scalar()) return false;
        const std::string_view raw(start, static_cast<std::size_t>(p_ - start));
        if (lead == '"') {
            decode_string(raw.substr(1, raw.size() - 2), value);
        } else {
            value.assign(raw);
        }
        return true;
    }

    filter_result run() {
        out_.clear();
        ws();
        if (p_ < end_ && (*p_ == '{' || *p_ == '[')) {
            if (*p_ == '[' && tree_.nodes[0].object_only) {
                if (!skip_value(0)) return failed();
                res_.status = filter_status::shape_mismatch;
                return res_;
            }
            if (!container(0, 1)) return failed();
        } else {
            const char* start = p_;
            if (!skip_value(0)) return failed();
            (void)start;
            res_.status = filter_status::not_container;
            res_.error_offset = 0;
            return res_;
        }
        ws();
        if (p_ != end_) {
            status_ = filter_status::invalid_json;
            return failed();
        }
        return res_;
    }

private:
    // At '{': leaves p_ at the value of the member named `token`. A name given twice is ambiguous
    // (parsers downstream disagree on which one counts), so it finds nothing: no subject, no
    // consent.
    bool find_member(const std::string& token) {
        ++p_;
        const char* found = nullptr;
        ws();
        if (p_ < end_ && *p_ == '}') return false;
        for (;;) {
            ws();
            if (p_ >= end_ || *p_ != '"') return false;
            const char* k = p_;
            bool esc;
            if (!scan_string(esc)) return false;
            std::string_view key(k + 1, static_cast<std::size_t>(p_ - k) - 2);
            if (esc) {
                decode_string(key, key_buf_);
                key = key_buf_;
            }
            ws();
            if (p_ >= end_ || *p_ != ':') return false;
            ++p_;
            ws();
            if (key == token) {
                if (found) return false;
                found = p_;
                // A second member of that name needs its name in the rest of the payload, as written
                // or escaped: when neither the name nor any backslash follows, stop here instead of
                // scanning the rest (the filter pass validates it anyway).
                const std::string_view rest(p_, static_cast<std::size_t>(end_ - p_));
                if (rest.find('\\') == std::string_view::npos && rest.find(token) == std::string_view::npos) return true;
            }
            if (!skip_value(1)) return false;
            ws();
            if (p_ >= end_) return false;
            if (*p_ == '}') break;
            if (*p_ != ',') return false;
            ++p_;
        }
        if (!found) return false;
        p_ = found;
        return true;
    }
    bool find_element(const std::string& token) {
        // Nine digits at most: a larger index names no element of a message this size, and stol stays in range.
        if (!is_array_index_token(token) || token.size() > 9) return false;
        const long wanted = std::stol(token);
        ++p_;
        for (long i = 0;; ++i) {
            ws();
            if (p_ >= end_ || *p_ == ']') return false;
            if (i == wanted) return true;
            if (!skip_value(1)) return false;
            ws();
            if (p_ >= end_ || *p_ != ',') return false;
            ++p_;
        }
    }

    filter_result failed() {
        res_.status = status_;
        res_.error_offset = static_cast<std::size_t>(p_ - begin_);
        return res_;
    }
    bool fail(filter_status st = filter_status::invalid_json) {
        status_ = st;
        return false;
    }
    void ws() {
        while (p_ < end_ && is_ws(*p_)) ++p_;
    }
    void note(std::int32_t rule, field_outcome::kind k) {
        if (outcomes_) outcomes_->push_back(field_outcome{rule, k});
    }

    // Advances over printable ASCII that needs no attention inside a string (anything but '"',
    // '\\', control characters and non-ASCII bytes), 16 bytes at a time where SSE2 is available.
    void skip_plain_string_bytes() {
#if defined(__SSE2__)
        const __m128i quote = _mm_set1_epi8('"');
        const __m128i backslash = _mm_set1_epi8('\\');
        const __m128i space = _mm_set1_epi8(0x20);
        while (end_ - p_ >= 16) {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p_));
            // Signed compare: bytes >= 0x80 are negative, so one test catches < 0x20 and non-ASCII.
            const __m128i special = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                                 _mm_cmplt_epi8(v, space));
            const int mask = _mm_movemask_epi8(special);
            if (mask != 0) {
                p_ += __builtin_ctz(static_cast<unsigned>(mask));
                return;
            }
            p_ += 16;
        }
#endif
        while (p_ < end_) {
            const unsigned char c = static_cast<unsigned char>(*p_);
            if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) return;
            ++p_;
        }
    }

    // At '"'. Advances past the closing quote; validates escapes and UTF-8.
    bool scan_string(bool& has_escapes) {
        ++p_;
        has_escapes = false;
        last_string_escaped_ = false;
        for (;;) {
            skip_plain_string_bytes();
            if (p_ >= end_) return fail();
            const unsigned char c = static_cast<unsigned char>(*p_);
            if (c == '"') {
                ++p_;
                return true;
            }
            if (c == '\\') {
                has_escapes = true;
                last_string_escaped_ = true;
                if (++p_ >= end_) return fail();
                switch (*p_) {
                case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': ++p_; break;
                case 'u': {
                    std::uint32_t cp;
                    if (!hex4(cp)) return false;
                    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail();  // lone low surrogate
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return fail();
                        ++p_;
                        std::uint32_t lo;
                        if (!hex4(lo)) return false;
                        if (lo < 0xDC00 || lo > 0xDFFF) return fail();
                    }
                    break;
                }
                default: return fail();
                }
                continue;
            }
            if (c < 0x20) return fail();
            if (!utf8_sequence(c)) return fail();
        }
    }
    // At 'u' of "\uXXXX"; leaves p_ after the 4 hex digits.
    bool hex4(std::uint32_t& cp) {
        if (end_ - p_ < 5) return fail();
        cp = 0;
        for (int i = 1; i <= 4; ++i) {
            const int h = hex_value(p_[i]);
            if (h < 0) return fail();
            cp = (cp << 4) | static_cast<std::uint32_t>(h);
        }
        p_ += 5;
        return true;
    }
    // Validates one multi-byte UTF-8 sequence starting with lead byte `c` (RFC 3629: no overlongs,
    // no surrogates, nothing above U+10FFFF).
    bool utf8_sequence(unsigned char c) {
        const auto* u = reinterpret_cast<const unsigned char*>(p_);
        const std::ptrdiff_t left = end_ - p_;
        auto cont = [&](int i) { return (u[i] & 0xC0) == 0x80; };
        if (c >= 0xC2 && c <= 0xDF) {
            if (left < 2 || !cont(1)) return false;
            p_ += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (left < 3 || !cont(1) || !cont(2)) return false;
            if (c == 0xE0 && u[1] < 0xA0) return false;   // overlong
            if (c == 0xED && u[1] > 0x9F) return false;   // surrogate
            p_ += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (left < 4 || !cont(1) || !cont(2) || !cont(3)) return false;
            if (c == 0xF0 && u[1] < 0x90) return false;   // overlong
            if (c == 0xF4 && u[1] > 0x8F) return false;   // > U+10FFFF
            p_ += 4;
        } else {
            return false;
        }
        return true;
    }
    bool scan_number() {
        if (p_ < end_ && *p_ == '-') ++p_;
        if (p_ >= end_) return fail();
        if (*p_ == '0') {
            ++p_;
        } else if (*p_ >= '1' && *p_ <= '9') {
            while (p_ < end_ && is_digit(*p_)) ++p_;
        } else {
            return fail();
        }
        if (p_ < end_ && *p_ == '.') {
            ++p_;
            if (p_ >= end_ || !is_digit(*p_)) return fail();
            while (p_ < end_ && is_digit(*p_)) ++p_;
        }
        if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            if (p_ >= end_ || !is_digit(*p_)) return fail();
            while (p_ < end_ && is_digit(*p_)) ++p_;
        }
        return true;
    }
    bool literal(const char* word, std::size_t n) {
        if (static_cast<std::size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return fail();
        p_ += n;
        return true;
    }
    bool scalar() {
        bool esc;
        switch (*p_) {
        case '"': return scan_string(esc);
        case 't': return literal("true", 4);
        case 'f': return literal("false", 5);
        case 'n': return literal("null", 4);
        default: return scan_number();
        }
    }

    // Validates one value without recursion (an explicit stack of open brackets), so hostile
    // nesting costs no call stack. `depth` is the nesting of the enclosing container.
    bool skip_value(int depth) {
        char stack[payload_filter::MAX_DEPTH];
        int sp = 0;
        bool esc;
        for (;;) {
            ws();
            if (p_ >= end_) return fail();
            // Parse one value start.
            if (*p_ == '{' || *p_ == '[') {
                if (depth + sp + 1 > payload_filter::MAX_DEPTH) return fail(filter_status::too_deep);
                const char open = *p_++;
                stack[sp++] = open == '{' ? '}' : ']';
                ws();
                if (p_ < end_ && *p_ == stack[sp - 1]) {
                    ++p_;
                    --sp;
                } else if (open == '{') {
                    if (p_ >= end_ || *p_ != '"' || !scan_string(esc)) return fail();
                    ws();
                    if (p_ >= end_ || *p_ != ':') return fail();
                    ++p_;
                    continue;
                } else {
                    continue;
                }
            } else if (!scalar()) {
                return false;
            }
            // After a complete value: close containers or move to the next element.
            for (;;) {
                if (sp == 0) return true;
                ws();
                if (p_ >= end_) return fail();
                if (*p_ == ',') {
                    ++p_;
                    if (stack[sp - 1] == '}') {
                        ws();
                        if (p_ >= end_ || *p_ != '"' || !scan_string(esc)) return fail();
                        ws();
                        if (p_ >= end_ || *p_ != ':') return fail();
                        ++p_;
                    }
                    break;
                }
                if (*p_ != stack[sp - 1]) return fail();
                ++p_;
                --sp;
            }
        }
    }

    // At '{' or '['. Walks members alongside the rule tree node `node`.
    bool container(std::int32_t node, int depth) {
        if (depth > payload_filter::MAX_DEPTH) return fail(filter_status::too_deep);
        const bool object = *p_ == '{';
        const char close = object ? '}' : ']';
        out_.push_back(*p_++);
        ws();
        if (p_ < end_ && *p_ == close) {
            out_.push_back(*p_++);
            return true;
        }
        bool first = true;
        std::size_t index = 0;
        char index_buf[24];
        // Where rules name positions (/items/0), a position means something: an element removed
        // before a kept one leaves null in its place, so the kept ones do not shift into another
        // rule's position (for subscribers, and for remove_withdrawn reading the stored copy).
        const bool positional = !object && !tree_.nodes[static_cast<std::size_t>(node)].members.empty();
        std::size_t removed_before = 0;
        for (;;) {
            std::string_view key_raw;  // with quotes; empty for array elements
            std::int32_t child = NONE;
            if (object) {
                if (p_ >= end_ || *p_ != '"') return fail();
                const char* k = p_;
                bool esc;
                if (!scan_string(esc)) return false;
                key_raw = std::string_view(k, static_cast<std::size_t>(p_ - k));
                std::string_view key(k + 1, key_raw.size() - 2);
                if (esc) {
                    decode_string(key, key_buf_);
                    key = key_buf_;
                }
                child = tree_.child(node, key);
                ws();
                if (p_ >= end_ || *p_ != ':') return fail();
                ++p_;
                ws();
            } else {
                const auto& n = tree_.nodes[static_cast<std::size_t>(node)];
                if (!n.members.empty()) {
                    const int len = std::snprintf(index_buf, sizeof index_buf, "%zu", index);
                    child = tree_.child(node, std::string_view(index_buf, static_cast<std::size_t>(len)));
                } else {
                    child = n.wildcard;
                }
                ++index;
            }
            if (p_ >= end_) return fail();
            const std::size_t mark = out_.size();
            const bool was_first = first;
            if (!member(child, key_raw, first, depth)) return false;
            if (positional) {
                if (out_.size() == mark) {
                    ++removed_before;
                } else if (removed_before > 0) {
                    std::string nulls;
                    for (std::size_t i = 0; i < removed_before; ++i) nulls += was_first ? "null," : ",null";
                    out_.insert(mark, nulls);
                    removed_before = 0;
                }
            }
            ws();
            if (p_ >= end_) return fail();
            if (*p_ == ',') {
                ++p_;
                ws();
                continue;
            }
            if (*p_ != close) return fail();
            out_.push_back(*p_++);
            return true;
        }
    }

    void prefix(bool& first, std::string_view key_raw) {
        if (!first) out_.push_back(',');
        first = false;
        if (!key_raw.empty()) {
            out_.append(key_raw);
            out_.push_back(':');
        }
    }

    // Copies the member whose value starts at `start` and ends at p_ as it is.
    void keep(bool& first, std::string_view key_raw, const char* start) {
        prefix(first, key_raw);
        out_.append(start, static_cast<std::size_t>(p_ - start));
    }

    // At the start of a member's value.
    bool member(std::int32_t child, std::string_view key_raw, bool& first, int depth) {
        if (child != NONE) {
            const auto& n = tree_.nodes[static_cast<std::size_t>(child)];
            if (n.rule != NONE) return apply_rule(n.rule, key_raw, first, depth);
            if (*p_ == '{' || (*p_ == '[' && !n.object_only)) {
                prefix(first, key_raw);
                return container(child, depth + 1);
            }
            // Rules live below this member but the value has another shape: whatever it holds,
            // no rule vouches for it, so it goes even under "unclassified": "keep".
            const char* start = p_;
            if (!skip_value(depth)) return false;
            if (kind_ == pass_kind::stored_same_rules) {
                keep(first, key_raw, start);
                return true;
            }
            ++res_.unsupported;
            note(-1, field_outcome::kind::unsupported);
            return true;
        }
        const char* start = p_;
        if (!skip_value(depth)) return false;
        if (s_.unclassified == unclassified_policy::keep || kind_ == pass_kind::stored_same_rules) {
            keep(first, key_raw, start);
        } else {
            // GDPR Art. 5(1)(c): data minimisation — what no rule vouches for does not leave.
            ++res_.unclassified_dropped;
            note(-1, field_outcome::kind::unclassified_dropped);
        }
        return true;
    }

    bool apply_rule(std::int32_t rule_index, std::string_view key_raw, bool& first, int depth) {
        const field_rule& rule = s_.fields[static_cast<std::size_t>(rule_index)];
        const char* start = p_;
        const char lead = *p_;
        if (!skip_value(depth)) return false;
        // Null carries nothing; an array element may hold a removed element's position. A stored
        // member filtered by other rules still has its key to answer for.
        if (lead == 'n' && (kind_ == pass_kind::stored_same_rules || (kind_ == pass_kind::stored_other_rules && key_raw.empty()))) {
            keep(first, key_raw, start);
            return true;
        }
        if (rule.consent_bit >= 0 &&
            (((consented_ >> rule.consent_bit) & 1U) == 0 ||
             (consent_unknown_ && (*consent_unknown_)[static_cast<std::size_t>(rule_index)]))) {
            // GDPR Art. 6(1)(a): without the subject's consent this purpose has no lawful basis.
            ++res_.no_consent;
            note(rule_index, field_outcome::kind::no_consent);
            return true;
        }
        const std::string_view value(start, static_cast<std::size_t>(p_ - start));
        if (kind_ == pass_kind::stored_same_rules ||
            (kind_ == pass_kind::stored_other_rules && rule.action == field_action::pseudonymise &&
             looks_like_pseudonym(value))) {
            // Already filtered when it was published: applying the action again would, say,
            // pseudonymise a pseudonym.
            keep(first, key_raw, start);
            if (rule.personal && lead != 'n' && rule.action != field_action::mask && rule.action != field_action::drop)
                ++res_.personal_forwarded;
            return true;
        }
        if (kind_ == pass_kind::stored_other_rules && rule.action == field_action::pseudonymise && lead != 'n') {
            // Stored before the member was pseudonymised: an identifier, which may not go out, and
            // whose pseudonym made now could not be told from one made then.
            ++res_.dropped;
            note(rule_index, field_outcome::kind::dropped);
            return true;
        }
        const std::size_t mark = out_.size();
        const bool was_first = first;
        switch (rule.action) {
        case field_action::keep:
            prefix(first, key_raw);
            out_.append(value);
            if (rule.personal && lead != 'n') ++res_.personal_forwarded;
            return true;
        case field_action::drop:
            ++res_.dropped;
            note(rule_index, field_outcome::kind::dropped);
            return true;
        case field_action::mask:
            prefix(first, key_raw);
            out_.append(rule.mask_json);
            ++res_.transformed;
            note(rule_index, field_outcome::kind::masked);
            return true;
        case field_action::pseudonymise: {
            if (lead == 'n') {  // null carries no identifier
                prefix(first, key_raw);
                out_.append(value);
                return true;
            }
            if (ps_ && lead != '{' && lead != '[') {
                std::string_view input = value;
                if (lead == '"') {
                    input = value.substr(1, value.size() - 2);
                    if (last_string_escaped_) {
                        decode_string(input, value_buf_);
                        input = value_buf_;
                    }
                }
                prefix(first, key_raw);
                out_.push_back('"');
                if (ps_->append_pseudonym(input, out_)) {
                    out_.push_back('"');
                    ++res_.transformed;
                    if (rule.personal) ++res_.personal_forwarded;
                    note(rule_index, field_outcome::kind::pseudonymised);
                    return true;
                }
            }
            break;
        }
        case field_action::generalise: {
            prefix(first, key_raw);
            bool ok = false;
            const bool number = lead == '-' || is_digit(lead);
            if (rule.decimals >= 0) {
                ok = number && round_decimal_text(value, rule.decimals, out_);
            } else if (rule.truncate) {
                if (number) {
                    ok = truncate_epoch_number(value, *rule.truncate, rule.epoch_millis, out_);
                } else if (lead == '"') {
                    std::string_view text = value.substr(1, value.size() - 2);
                    if (last_string_escaped_) {
                        decode_string(text, value_buf_);
                        text = value_buf_;
                    }
                    out_.push_back('"');
                    ok = truncate_iso_timestamp(text, *rule.truncate, out_);
                    if (ok) out_.push_back('"');
                }
            }
            if (ok) {
                ++res_.transformed;
                if (rule.personal) ++res_.personal_forwarded;
                note(rule_index, field_outcome::kind::generalised);
                return true;
            }
            break;
        }
        }
        // The action cannot handle this value: fail closed and drop the member.
        out_.resize(mark);
        first = was_first;
        ++res_.unsupported;
        note(rule_index, field_outcome::kind::unsupported);
        return true;
    }

    const schema& s_;
    const field_tree& tree_;
    const pseudonymiser* ps_;
    std::uint64_t consented_;
    const char* begin_;
    const char* p_;
    const char* end_;
    std::string& out_;
    std::vector<field_outcome>* outcomes_;
    filter_result res_{};
    filter_status status_ = filter_status::invalid_json;
    std::string key_buf_;
    std::string value_buf_;
    bool last_string_escaped_ = false;  // of the most recently scanned string
    pass_kind kind_;
    const std::vector<bool>* consent_unknown_;  // stored_other_rules: per rule, consent unknown, so not given
};

} // namespace

filter_result payload_filter::run(const schema& rules, std::uint64_t consented, std::string_view payload,
                                  std::string& out, std::vector<field_outcome>* outcomes) const {
    filter_run run(rules, pseudonyms_, consented, payload, out, outcomes);
    return run.run();
}

filter_result payload_filter::remove_withdrawn(const schema& rules, std::uint64_t consented, std::string_view stored,
                                               std::string& out) const {
    filter_run run(rules, nullptr, consented, stored, out, nullptr, pass_kind::stored_same_rules);
    return run.run();
}

filter_result payload_filter::refilter_stored(const schema& rules, std::uint64_t consented, std::string_view stored,
                                              const std::vector<bool>* consent_unknown, std::string& out) const {
    filter_run run(rules, nullptr, consented, stored, out, nullptr, pass_kind::stored_other_rules, consent_unknown);
    return run.run();
}

bool payload_filter::find_scalar(std::string_view payload, const std::vector<std::string>& tokens, std::string& value) {
    static const schema no_rules{};
    std::string unused;
    filter_run run(no_rules, nullptr, 0, payload, unused, nullptr);
    return run.find(tokens, value);
}

} // namespace gdpr
