#pragma once
// Field paths in classification schemas: RFC 6901 JSON pointers in which a whole "*" token
// matches every array element and every object member.
#include <string>
#include <string_view>
#include <vector>

namespace gdpr {

struct field_path {
    static constexpr std::string_view WILDCARD = "*";
    std::vector<std::string> tokens;  // unescaped ("~1" -> "/", "~0" -> "~")
};

// Parses `pointer`. Returns an empty string on success, else the problem (`out` is then
// unspecified). The whole-document pointer "" is rejected: a rule must name a member.
std::string parse_field_path(std::string_view pointer, field_path& out);

// RFC 6901: a token names an array element only as "0" or as digits without a leading zero
// ("01" can only name an object member).
bool is_array_index_token(std::string_view token);

} // namespace gdpr
