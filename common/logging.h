// Logging: each node owns a named spdlog logger (no process-wide default is assumed), so one test
// process can host several nodes and tell their lines apart.
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace metaps {

using Logger = std::shared_ptr<spdlog::logger>;

// A logger writing to stderr, and to `file` too when it is not empty. `level` is one of
// trace, debug, info, warn, error, off.
Logger MakeLogger(const std::string& name, const std::string& file = "", const std::string& level = "info");

}  // namespace metaps
