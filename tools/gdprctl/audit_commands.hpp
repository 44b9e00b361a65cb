#pragma once
#include <string>
#include <vector>

namespace gdprctl {

// verify, export, report, schema lint; processing-record with --schemas.
bool is_offline_command(const std::vector<std::string>& args);
// args[0] is the command. Returns the process exit status.
int run_offline(const std::vector<std::string>& args);

} // namespace gdprctl
