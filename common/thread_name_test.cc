#include "common/thread_name.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

namespace metaps {
namespace {

std::string CommOf(long tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string name;
  std::getline(f, name);
  return name;
}

TEST(ThreadNameTest, NamesTheCallingThreadCutToFifteenCharacters) {
  std::string seen;
  std::thread t([&] {
    NameThisThread("ps-helper-with-a-long-name");
    seen = CommOf(syscall(SYS_gettid));
  });
  t.join();
  EXPECT_EQ(seen, "ps-helper-with-");
}

}  // namespace
}  // namespace metaps
