#include "gdpr/field_path.hpp"

namespace gdpr {

std::string parse_field_path(std::string_view pointer, field_path& out) {
    out.tokens.clear();
    if (pointer.empty()) return "field pointer is empty; it must name a member, e.g. \"/driver_id\"";
    if (pointer.front() != '/') return "field pointer must start with '/'";
    std::string token;
    for (std::size_t i = 1; i <= pointer.size(); ++i) {
        if (i == pointer.size() || pointer[i] == '/') {
            out.tokens.push_back(std::move(token));
            token.clear();
            continue;
        }
        const char c = pointer[i];
        if (c == '~') {
            if (i + 1 >= pointer.size() || (pointer[i + 1] != '0' && pointer[i + 1] != '1'))
                return "'~' in a field pointer must be followed by '0' or '1'";
            token.push_back(pointer[i + 1] == '0' ? '~' : '/');
            ++i;
            continue;
        }
        token.push_back(c);
    }
    return {};
}

bool is_array_index_token(std::string_view token) {
    return !token.empty() && (token.size() == 1 || token[0] != '0') &&
           token.find_first_not_of("0123456789") == std::string_view::npos;
}

} // namespace gdpr
