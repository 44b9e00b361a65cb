#pragma once
// Exceptions used inside lib/ for configuration and I/O failures (never on the per-message path).
#include <stdexcept>
#include <string>

namespace gdpr {

// A plugin option is missing, unknown or has a bad value. what() names the option.
class config_error : public std::runtime_error {
public:
    config_error(std::string option, const std::string& problem)
        : std::runtime_error("invalid '" + option + "' value: " + problem), option_(std::move(option)) {}
    const std::string& option() const noexcept { return option_; }

private:
    std::string option_;
};

// A schema or purposes file cannot be used. what() names the file and, where known, the location.
class schema_error : public std::runtime_error {
public:
    schema_error(std::string file, const std::string& problem)
        : std::runtime_error(file + ": " + problem), file_(std::move(file)) {}
    const std::string& file() const noexcept { return file_; }

private:
    std::string file_;
};

} // namespace gdpr
