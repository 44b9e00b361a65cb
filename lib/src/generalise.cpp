#include "gdpr/generalise.hpp"

#include <cstdint>
#include <string>

namespace gdpr {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Rewrites a JSON number with an exponent as plain decimal text ("4.81e1" -> "48.1"), so rounding
// stays exact. False when the result would be unreasonably long (|exponent| > 400).
bool expand_exponent(std::string_view text, std::string& plain) {
    const bool negative = !text.empty() && text.front() == '-';
    std::string_view body = negative ? text.substr(1) : text;
    const auto e = body.find_first_of("eE");
    std::string_view mantissa = body.substr(0, e);
    std::string_view exponent = body.substr(e + 1);
    int sign = 1;
    if (!exponent.empty() && (exponent.front() == '+' || exponent.front() == '-')) {
        sign = exponent.front() == '-' ? -1 : 1;
        exponent.remove_prefix(1);
    }
    if (exponent.empty() || exponent.size() > 3) return false;
    int exp = 0;
    for (char c : exponent) {
        if (!is_digit(c)) return false;
        exp = exp * 10 + (c - '0');
    }
    if (exp > 400) return false;
    exp *= sign;
    const auto dot = mantissa.find('.');
    std::string digits(mantissa.substr(0, dot));
    if (dot != std::string_view::npos) digits.append(mantissa.substr(dot + 1));
    const long point = static_cast<long>(dot == std::string_view::npos ? mantissa.size() : dot) + exp;
    std::string body_text;
    if (point <= 0) {
        body_text = "0." + std::string(static_cast<std::size_t>(-point), '0') + digits;
    } else if (static_cast<std::size_t>(point) >= digits.size()) {
        body_text = digits + std::string(static_cast<std::size_t>(point) - digits.size(), '0');
    } else {
        body_text = digits.substr(0, static_cast<std::size_t>(point)) + "." + digits.substr(static_cast<std::size_t>(point));
    }
    const auto first_significant = body_text.find_first_not_of('0');
    if (first_significant == std::string::npos) {
        body_text = "0";
    } else if (body_text[first_significant] == '.') {
        body_text.erase(0, first_significant - 1);
    } else {
        body_text.erase(0, first_significant);
    }
    plain.clear();
    if (negative) plain.push_back('-');
    plain.append(body_text);
    return true;
}

// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

bool digits(std::string_view s, std::size_t pos, std::size_t n) {
    if (pos + n > s.size()) return false;
    for (std::size_t i = pos; i < pos + n; ++i)
        if (!is_digit(s[i])) return false;
    return true;
}

int two(std::string_view s, std::size_t pos) { return (s[pos] - '0') * 10 + (s[pos + 1] - '0'); }

} // namespace

bool round_decimal_text(std::string_view text, int decimals, std::string& out) {
    if (text.empty() || decimals < 0) return false;
    if (text.find_first_of("eE") != std::string_view::npos) {
        std::string plain;
        return expand_exponent(text, plain) && round_decimal_text(plain, decimals, out);
    }
    const bool negative = text.front() == '-';
    const std::string_view body = negative ? text.substr(1) : text;
    const auto dot = body.find('.');
    const std::string_view int_part = body.substr(0, dot);
    const std::string_view frac_part = dot == std::string_view::npos ? std::string_view{} : body.substr(dot + 1);
    if (int_part.empty()) return false;
    const auto keep = static_cast<std::size_t>(decimals);
    if (frac_part.size() <= keep) {
        out.append(text);
        return true;
    }
    // digits = int_part + first `keep` fraction digits; round on the next digit.
    char buf[96];
    std::string big;
    char* d = buf;
    const std::size_t total = int_part.size() + keep;
    if (total + 2 > sizeof buf) {
        big.resize(total + 2);
        d = big.data();
    }
    d[0] = '0';  // room for a carry out of the top digit
    int_part.copy(d + 1, int_part.size());
    frac_part.copy(d + 1 + int_part.size(), keep);
    std::size_t len = total + 1;
    if (frac_part[keep] >= '5') {
        std::size_t i = len;
        while (i-- > 0) {
            if (d[i] == '9') { d[i] = '0'; continue; }
            ++d[i];
            break;
        }
    }
    std::size_t start = d[0] == '0' ? 1 : 0;
    bool all_zero = true;
    for (std::size_t i = start; i < len; ++i) all_zero = all_zero && d[i] == '0';
    if (negative && !all_zero) out.push_back('-');
    const std::size_t int_len = len - keep - start;
    out.append(d + start, int_len);
    if (keep > 0) {
        out.push_back('.');
        out.append(d + start + int_len, keep);
    }
    return true;
}

bool truncate_iso_timestamp(std::string_view s, time_unit unit, std::string& out) {
    // YYYY-MM-DD
    if (!digits(s, 0, 4) || s.size() < 10 || s[4] != '-' || !digits(s, 5, 2) || s[7] != '-' || !digits(s, 8, 2))
        return false;
    const int month = two(s, 5), day = two(s, 8);
    if (month < 1 || month > 12 || day < 1 || day > 31) return false;
    const std::string_view year = s.substr(0, 4);
    if (s.size() == 10) {
        out.append(year);
        out.append(unit == time_unit::year ? "-01" : s.substr(4, 3));
        out.append(unit == time_unit::year || unit == time_unit::month ? "-01" : s.substr(7, 3));
        return true;
    }
    const char sep = s[10];
    if (sep != 'T' && sep != 't' && sep != ' ') return false;
    // HH:MM[:SS[.frac]]
    if (!digits(s, 11, 2) || s.size() < 16 || s[13] != ':' || !digits(s, 14, 2)) return false;
    const int hour = two(s, 11), minute = two(s, 14);
    if (hour > 23 || minute > 59) return false;
    std::size_t pos = 16;
    std::string_view second = "00";
    if (pos < s.size() && s[pos] == ':') {
        if (!digits(s, pos + 1, 2) || two(s, pos + 1) > 60) return false;
        second = s.substr(pos + 1, 2);
        pos += 3;
        if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
            ++pos;
            const std::size_t frac_start = pos;
            while (pos < s.size() && is_digit(s[pos])) ++pos;
            if (pos == frac_start) return false;
        }
    }
    // Offset: Z | ±HH[:MM] | ±HHMM | none
    const std::string_view zone = s.substr(pos);
    if (!zone.empty()) {
        if (zone == "Z" || zone == "z") {
        } else if ((zone[0] == '+' || zone[0] == '-') &&
                   ((zone.size() == 3 && digits(zone, 1, 2)) ||
                    (zone.size() == 5 && digits(zone, 1, 4)) ||
                    (zone.size() == 6 && digits(zone, 1, 2) && zone[3] == ':' && digits(zone, 4, 2)))) {
        } else {
            return false;
        }
    }
    const bool ym = unit == time_unit::year || unit == time_unit::month;
    out.append(year);
    out.append(unit == time_unit::year ? "-01" : s.substr(4, 3));
    out.append(ym ? "-01" : s.substr(7, 3));
    out.push_back(sep);
    const bool hour_zero = ym || unit == time_unit::day;
    out.append(hour_zero ? "00" : s.substr(11, 2));
    out.push_back(':');
    out.append(hour_zero || unit == time_unit::hour ? "00" : s.substr(14, 2));
    out.push_back(':');
    out.append(unit == time_unit::second ? second : "00");
    out.append(zone);
    return true;
}

bool truncate_epoch_number(std::string_view text, time_unit unit, bool millis, std::string& out) {
    if (text.empty() || text.find_first_of("eE") != std::string_view::npos) return false;
    const bool negative = text.front() == '-';
    std::string_view body = negative ? text.substr(1) : text;
    const auto dot = body.find('.');
    const bool has_fraction = dot != std::string_view::npos && body.find_first_not_of('0', dot + 1) != std::string_view::npos;
    body = body.substr(0, dot);
    if (body.empty() || body.size() > 15) return false;  // beyond ±31 million years
    std::int64_t v = 0;
    for (char c : body) {
        if (!is_digit(c)) return false;
        v = v * 10 + (c - '0');
    }
    // Beyond about the year 5000, in the schema's unit: most likely a timestamp in another unit
    // (milliseconds where the schema says seconds), which floored in the wrong unit would keep a
    // thousand times the precision the schema allows. Refused, so the field is dropped.
    const std::int64_t plausible = millis ? 100'000'000'000'000 : 100'000'000'000;
    if (v >= plausible) return false;
    if (negative) v = -v - (has_fraction ? 1 : 0);  // floor
    const std::int64_t per_second = millis ? 1000 : 1;
    std::int64_t result;
    switch (unit) {
    case time_unit::second: result = floor_div(v, per_second) * per_second; break;
    case time_unit::minute: result = floor_div(v, 60 * per_second) * 60 * per_second; break;
    case time_unit::hour: result = floor_div(v, 3600 * per_second) * 3600 * per_second; break;
    case time_unit::day: result = floor_div(v, 86400 * per_second) * 86400 * per_second; break;
    case time_unit::month:
    case time_unit::year: {
        const std::int64_t days = floor_div(v, 86400 * per_second);
        std::int64_t y;
        unsigned m, d;
        civil_from_days(days, y, m, d);
        const std::int64_t first = days_from_civil(y, unit == time_unit::year ? 1 : m, 1);
        result = first * 86400 * per_second;
        break;
    }
    default: return false;
    }
    out.append(std::to_string(result));
    return true;
}

} // namespace gdpr
