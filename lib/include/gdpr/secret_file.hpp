#pragma once
// Reading secret key material from disk.
#include <cstddef>
#include <string>

#include "gdpr/wiped_memory.hpp"

namespace gdpr {

// Reads the whole of `path` as raw bytes, into memory that is wiped when it is freed (GDPR Art.
// 32). Throws config_error(option, ...) when the file is missing, not a regular file, readable or
// writable by group or others (a secret must be mode 0600 or stricter), unreadable, or shorter
// than `min_bytes`. The checks apply to the file that is read: it is opened first.
wiped_string read_secret_file(const std::string& option, const std::string& path, std::size_t min_bytes);

} // namespace gdpr
