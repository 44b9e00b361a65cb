#include "gdpr/secret_file.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gdpr/errors.hpp"

namespace gdpr {

namespace {

// A key is a few dozen bytes; anything this large is the wrong file.
constexpr off_t MAX_SECRET_BYTES = 64 * 1024;

struct file_descriptor {
    int fd;
    ~file_descriptor() {
        if (fd >= 0) ::close(fd);
    }
};

std::string reason(int error) { return std::strerror(error); }

std::string mode_text(const struct stat& st) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return mode;
}

config_error not_private(const std::string& option, const std::string& path, const struct stat& st) {
    return config_error(option, "'" + path + "' is accessible by group or others (mode " + mode_text(st) +
                                    "); a key file must be mode 0600 or stricter");
}

} // namespace

wiped_string read_secret_file(const std::string& option, const std::string& path, std::size_t min_bytes) {
    // Looked at before it is opened: opening a device or a pipe can itself do something.
    struct stat named {};
    if (::stat(path.c_str(), &named) != 0)
        throw config_error(option, "'" + path + "' does not exist or cannot be accessed (" + reason(errno) + ")");
    if (!S_ISREG(named.st_mode)) throw config_error(option, "'" + path + "' is not a regular file");
    file_descriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)};
    if (file.fd < 0) {
        const int error = errno;
        if ((named.st_mode & (S_IRWXG | S_IRWXO)) != 0) throw not_private(option, path, named);
        throw config_error(option, "'" + path + "' cannot be opened for reading by the broker's user (" + reason(error) + ")");
    }
    // The checks that count are made on what was opened: the path may have been replaced since.
    struct stat st {};
    if (::fstat(file.fd, &st) != 0) throw config_error(option, "'" + path + "' cannot be accessed (" + reason(errno) + ")");
    if (!S_ISREG(st.st_mode) || st.st_dev != named.st_dev || st.st_ino != named.st_ino)
        throw config_error(option, "'" + path + "' was replaced while it was being read; try again");
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) throw not_private(option, path, st);
    if (st.st_size > MAX_SECRET_BYTES)
        throw config_error(option, "'" + path + "' holds " + std::to_string(st.st_size) + " bytes; a key file holds at most " +
                                       std::to_string(MAX_SECRET_BYTES));
    const int flags = ::fcntl(file.fd, F_GETFL);
    if (flags >= 0) ::fcntl(file.fd, F_SETFL, flags & ~O_NONBLOCK);
    wiped_string bytes;
    // On the heap from the start (a short string would sit in the object itself, never wiped), and
    // large enough that no reallocation leaves a copy behind.
    bytes.reserve(std::max<std::size_t>(static_cast<std::size_t>(st.st_size), 64) + 1);
    char chunk[4096];
    for (;;) {
        const ssize_t n = ::read(file.fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int error = errno;
            OPENSSL_cleanse(chunk, sizeof chunk);
            throw config_error(option, "'" + path + "' cannot be read (" + reason(error) + ")");
        }
        if (n == 0) break;
        if (bytes.size() + static_cast<std::size_t>(n) > static_cast<std::size_t>(MAX_SECRET_BYTES)) {
            OPENSSL_cleanse(chunk, sizeof chunk);
            throw config_error(option, "'" + path + "' grew while it was being read; try again");
        }
        bytes.append(chunk, static_cast<std::size_t>(n));
    }
    OPENSSL_cleanse(chunk, sizeof chunk);
    if (bytes.size() < min_bytes)
        throw config_error(option, "'" + path + "' holds " + std::to_string(bytes.size()) + " bytes; at least " +
                                       std::to_string(min_bytes) + " random bytes are required");
    return bytes;
}

} // namespace gdpr
