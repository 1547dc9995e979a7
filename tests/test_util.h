// Helpers for multi-process tests: scratch directories and `metaps server` processes.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/subprocess.h"

namespace metaps::testing {

namespace fs = std::filesystem;

inline std::string MetapsBin() {
  const char* b = std::getenv("METAPS_BIN");
  return b ? b : "build/bin/metaps";
}

// A job config from the source tree's examples/ (METAPS_SOURCE, else the working directory).
inline std::string Example(const std::string& name) {
  const char* src = std::getenv("METAPS_SOURCE");
  return std::string(src ? src : ".") + "/examples/" + name;
}

// A directory removed at the end of the test unless METAPS_KEEP_TEST_DIRS is set.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) {
    path_ = fs::temp_directory_path() / ("metaps-" + name + "-" + std::to_string(getpid()) + "-" +
                                         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    if (!std::getenv("METAPS_KEEP_TEST_DIRS")) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  std::string operator/(const std::string& child) const { return (path_ / child).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A `metaps server` child process on loopback.
struct ServerProcess {
  Subprocess proc;
  std::string endpoint;
  std::string log;

  // Starts `metaps server` with `config` (TOML text) in `dir`, extra flags appended.
  // `wrapper` (e.g. {"prlimit", "--fsize=N", "--"}) goes before the command.
  static ServerProcess Start(const std::string& dir, const std::string& config,
                             const std::vector<std::string>& extra = {},
                             const std::vector<std::string>& wrapper = {}) {
    fs::create_directories(dir);
    std::string cfg = dir + "/job.toml";
    std::ofstream(cfg) << config;
    std::string ep_file = dir + "/endpoint";
    fs::remove(ep_file);
    std::vector<std::string> argv = {MetapsBin(), "server", "--config", cfg, "--data-dir", dir + "/db",
                                     "--endpoint-file", ep_file};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.begin(), wrapper.begin(), wrapper.end());
    ServerProcess s;
    s.log = dir + "/server.log";
    auto p = Subprocess::Spawn(argv, s.log);
    EXPECT_TRUE(p.ok()) << p.status();
    s.proc = std::move(p).value();
    auto ep = WaitForFileLine(ep_file, std::chrono::seconds(60), &s.proc);
    // Callers check started(): an ASSERT here would only leave this helper.
    EXPECT_TRUE(ep.ok()) << ep.status() << "\n" << ReadFile(s.log);
    s.endpoint = ep.value_or("");
    return s;
  }

  bool started() const { return !endpoint.empty(); }

  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

// Runs `metaps ARGS...` with its output in `out` and returns its exit code (-1 when it did not
// finish within `limit`).
inline int RunMetaps(const std::vector<std::string>& args, const std::string& out, std::chrono::seconds limit) {
  std::vector<std::string> argv = {MetapsBin()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = Subprocess::Spawn(argv, out);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return -1;
  auto code = p->Wait(limit);
  EXPECT_TRUE(code.ok()) << code.status();
  return code.value_or(-1);
}

}  // namespace metaps::testing
