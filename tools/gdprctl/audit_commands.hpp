#pragma once
#include <string>
#include <vector>

namespace gdprctl {

bool is_offline_command(const std::string& cmd);
// args[0] is the command. Returns the process exit status.
int run_offline(const std::vector<std::string>& args);

} // namespace gdprctl
