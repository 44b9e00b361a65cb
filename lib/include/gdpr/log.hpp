#pragma once
// One injected log sink for the whole core. The plugin forwards it to mosquitto_log_printf,
// tests capture it. Every line is prefixed "gdpr: " by the logger, never carries a field value,
// and repeated warnings/errors are rate limited so a misbehaving device cannot flood the log.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace gdpr {

enum class log_level { debug, info, notice, warning, error };

// Receives fully formatted lines (already prefixed). Must not throw.
using log_sink = std::function<void(log_level, std::string_view)>;

// A client id (or other identifier a client chose) made safe for a log line: at most 128 bytes,
// control characters and quotes replaced by '?'.
std::string printable(std::string_view s);
// The whole of `s` with control characters and bytes outside ASCII as '?': a message that may
// carry a file name (not necessarily UTF-8) for a log line or a JSON answer.
std::string printable_text(std::string_view s);

class logger {
public:
    static constexpr const char* PREFIX = "gdpr: ";

    logger() = default;
    explicit logger(log_sink sink, std::uint32_t max_problems_per_second = 20);

    void debug(std::string_view msg) { write(log_level::debug, msg); }
    void info(std::string_view msg) { write(log_level::info, msg); }
    void notice(std::string_view msg) { write(log_level::notice, msg); }
    // Warnings and errors share a per-second budget; lines over budget are counted and summarised
    // once the next second starts.
    void warning(std::string_view msg) { write_limited(log_level::warning, msg); }
    void error(std::string_view msg) { write_limited(log_level::error, msg); }

    // Lines at or above this level reach the sink. Default: debug (everything).
    void set_threshold(log_level level) { threshold_ = level; }
    std::uint64_t suppressed_total() const { return suppressed_total_; }

private:
    void write(log_level level, std::string_view msg);
    void write_limited(log_level level, std::string_view msg);

    log_sink sink_;
    log_level threshold_ = log_level::debug;
    std::uint32_t budget_ = 20;
    std::uint32_t used_in_window_ = 0;
    std::uint64_t suppressed_in_window_ = 0;
    std::uint64_t suppressed_total_ = 0;
    std::chrono::steady_clock::time_point window_start_{};
};

} // namespace gdpr
