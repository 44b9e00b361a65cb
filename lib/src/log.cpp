#include "gdpr/log.hpp"

#include <utility>

namespace gdpr {

std::string printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 128)) out.push_back(static_cast<unsigned char>(c) < 0x20 || c == '\'' || c == 0x7f ? '?' : c);
    return out;
}

std::string printable_text(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    return out;
}

logger::logger(log_sink sink, std::uint32_t max_problems_per_second)
    : sink_(std::move(sink)), budget_(max_problems_per_second) {}

void logger::write(log_level level, std::string_view msg) {
    if (!sink_ || level < threshold_) return;
    std::string line;
    line.reserve(msg.size() + 8);
    line.append(PREFIX).append(msg);
    sink_(level, line);
}

void logger::write_limited(log_level level, std::string_view msg) {
    const auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= std::chrono::seconds(1)) {
        if (suppressed_in_window_ > 0) {
            write(log_level::warning, std::to_string(suppressed_in_window_) +
                                          " similar warning/error lines suppressed in the last second");
        }
        window_start_ = now;
        used_in_window_ = 0;
        suppressed_in_window_ = 0;
    }
    if (used_in_window_ >= budget_) {
        ++suppressed_in_window_;
        ++suppressed_total_;
        return;
    }
    ++used_in_window_;
    write(level, msg);
}

} // namespace gdpr
