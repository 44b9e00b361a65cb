#include "gdpr/secret_file.hpp"

#include <fstream>
#include <iterator>
#include <sys/stat.h>

#include "gdpr/errors.hpp"

namespace gdpr {

std::string read_secret_file(const std::string& option, const std::string& path, std::size_t min_bytes) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw config_error(option, "'" + path + "' does not exist or cannot be accessed");
    if (!S_ISREG(st.st_mode)) throw config_error(option, "'" + path + "' is not a regular file");
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw config_error(option, "'" + path + "' is accessible by group or others (mode " + mode +
                                       "); a key file must be mode 0600 or stricter");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) throw config_error(option, "'" + path + "' cannot be opened for reading by the broker's user");
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.size() < min_bytes)
        throw config_error(option, "'" + path + "' holds " + std::to_string(bytes.size()) + " bytes; at least " +
                                       std::to_string(min_bytes) + " random bytes are required");
    return bytes;
}

} // namespace gdpr
