// Scratch paths for unit tests, under GoogleTest's testing::TempDir(), unique per process and
// call: TempPath gives a fresh path (removed if it existed), TempDir a directory removed with it.
// Tests only (it includes gtest).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace metaps::test {

inline std::string TempPath(std::string_view prefix, std::string_view name) {
  static int n = 0;
  std::filesystem::path p = std::filesystem::path(::testing::TempDir()) /
                            (std::string(prefix) + "_" + std::to_string(getpid()) + "_" + std::to_string(n++) +
                             (name.empty() ? "" : "_") + std::string(name));
  std::filesystem::remove_all(p);
  return p.string();
}

class TempDir {
 public:
  explicit TempDir(std::string_view prefix) : path_(TempPath(prefix, "")) { std::filesystem::create_directories(path_); }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path(const std::string& sub = "") const {
    return sub.empty() ? path_.string() : (path_ / sub).string();
  }

 private:
  std::filesystem::path path_;
};

}  // namespace metaps::test
