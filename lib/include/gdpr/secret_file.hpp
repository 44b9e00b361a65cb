#pragma once
// Reading secret key material from disk.
#include <string>

namespace gdpr {

// Reads the whole of `path` as raw bytes. Throws config_error(option, ...) when the file is
// missing, not a regular file, readable or writable by group or others (a secret must be mode
// 0600 or stricter), unreadable, or shorter than `min_bytes`.
std::string read_secret_file(const std::string& option, const std::string& path, std::size_t min_bytes);

} // namespace gdpr
