// What the METAPS_PROFILE stage profilers (ps/param_store.cc, ps/server.cc) share: the switch and
// destination (the environment variable names a file to append to, or is "1" for stderr) and the
// clocks. Performance tooling only; off unless the variable is set.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace metaps::internal {

struct ProfileSink {
  bool on = false;
  FILE* out = nullptr;

  static ProfileSink FromEnv() {
    ProfileSink s;
    const char* v = std::getenv("METAPS_PROFILE");
    if (v == nullptr || *v == 0) return s;
    s.on = true;
    if (std::string_view(v) != "1") s.out = std::fopen(v, "a");
    if (s.out == nullptr) s.out = stderr;
    return s;
  }
  static uint64_t Now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  static uint64_t ThreadCpuNow() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000ull + ts.tv_nsec;
  }
};

}  // namespace metaps::internal
