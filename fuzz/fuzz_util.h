// Helpers shared by the libFuzzer targets: a per-process scratch directory, file writes, input
// splitting, and FUZZ_CHECK for the properties a target asserts (a failed check aborts, which
// libFuzzer reports as a crash and saves the input).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#define FUZZ_CHECK(cond, what)                                                                  \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s: %s\n", __FILE__, __LINE__, #cond, \
                   std::string(what).c_str());                                                  \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)

namespace metaps::fuzz {

// One scratch directory per process, created on first use and removed at exit. Targets reuse it
// for every input (rewriting the same file names), so a run costs no directory churn.
inline const std::string& ScratchDir() {
  // Never destroyed: the atexit handler below runs after static destructors would have.
  static const std::string* const dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "metaps-fuzz-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    auto* made = new std::string(tmpl);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(ScratchDir(), ec);
    });
    return made;
  }();
  return *dir;
}

inline std::string ScratchPath(std::string_view name) { return ScratchDir() + "/" + std::string(name); }

inline void WriteFile(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  FUZZ_CHECK(out.good(), "cannot write " + path);
}

// Splits `input` at the first `parts - 1` NUL bytes; missing parts are empty. The last part keeps
// any further NULs (readers must cope with them as with any other byte).
inline std::vector<std::string_view> SplitNul(std::string_view input, size_t parts) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < parts) {
    const size_t at = input.find('\0');
    if (at == std::string_view::npos) break;
    out.push_back(input.substr(0, at));
    input.remove_prefix(at + 1);
  }
  out.push_back(input);
  while (out.size() < parts) out.push_back({});
  return out;
}

inline bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace metaps::fuzz
