#pragma once

// NameThisThread: names the calling thread, as top -H, perf, gdb and /proc/<pid>/task/*/comm show
// it. Linux keeps the first 15 characters.

#include <pthread.h>

#include <string>

namespace metaps {

inline void NameThisThread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace metaps
