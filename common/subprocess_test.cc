#include "common/subprocess.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

namespace metaps {
namespace {

using std::chrono::milliseconds;

TEST(SubprocessTest, AChildOnAStdinPipeRunsUntilThePipeIsClosed) {
  auto cat = Subprocess::Spawn({"/bin/cat"}, SpawnOptions{.log_file = "/dev/null", .stdin_pipe = true});
  ASSERT_TRUE(cat.ok()) << cat.status();
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_TRUE(cat->running()) << "cat read EOF before the pipe was closed";
  cat->CloseStdin();
  auto code = cat->Wait(milliseconds(10000));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST(SubprocessTest, ALaterChildDoesNotInheritAnEarlierOnesStdinPipe) {
  // Were the write end inherited, the second cat would hold the first one's stdin open.
  auto first = Subprocess::Spawn({"/bin/cat"}, SpawnOptions{.log_file = "/dev/null", .stdin_pipe = true});
  auto second = Subprocess::Spawn({"/bin/cat"}, SpawnOptions{.log_file = "/dev/null", .stdin_pipe = true});
  ASSERT_TRUE(first.ok() && second.ok());
  first->CloseStdin();
  auto code = first->Wait(milliseconds(10000));
  ASSERT_TRUE(code.ok()) << "the first cat is still waiting for input: " << code.status();
  EXPECT_TRUE(second->running());
}

TEST(SubprocessTest, AMovedSubprocessKeepsItsStdinPipe) {
  auto cat = Subprocess::Spawn({"/bin/cat"}, SpawnOptions{.log_file = "/dev/null", .stdin_pipe = true});
  ASSERT_TRUE(cat.ok());
  Subprocess moved = std::move(cat).value();
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_TRUE(moved.running());
  moved.CloseStdin();
  EXPECT_EQ(moved.Wait(milliseconds(10000)).value_or(-1), 0);
}

TEST(SubprocessTest, FindInPathFindsProgramsAndNamesTheMissingOne) {
  auto sh = FindInPath("sh");
  ASSERT_TRUE(sh.ok()) << sh.status();
  EXPECT_EQ(sh->back(), 'h');
  EXPECT_EQ(FindInPath("/some/path").value_or(""), "/some/path");
  auto missing = FindInPath("metaps-no-such-program");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("metaps-no-such-program"), std::string::npos);
}

}  // namespace
}  // namespace metaps
