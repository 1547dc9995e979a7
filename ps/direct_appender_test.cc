// DirectAppender (ps/internal/direct_appender.h): the file holds exactly the appended stream,
// whatever the sizes of the appends and of the staging memory, and a failed write loses nothing
// appended before it.
#include "ps/internal/direct_appender.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace metaps::ps::internal {
namespace {

namespace fs = std::filesystem;
constexpr size_t kBlock = DirectAppender::kBlock;

class DirectFile {
 public:
  DirectFile() {
    static int n = 0;
    path_ = (fs::path(testing::TempDir()) / ("direct_appender_test_" + std::to_string(getpid()) + "_" +
                                             std::to_string(n++)))
                .string();
  }
  ~DirectFile() {
    if (fd_ >= 0) ::close(fd_);
    fs::remove(path_);
  }
  // Opens the file for direct writes; false where the file system refuses O_DIRECT.
  bool Open() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
    return fd_ >= 0;
  }
  int fd() const { return fd_; }
  std::string Read() const {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() % 251 + 1);  // never 0: padding is told apart
  return s;
}

// The file is the stream, then zeros up to the end of its last block.
void ExpectFileHolds(const DirectFile& f, const std::string& stream) {
  const std::string bytes = f.Read();
  ASSERT_GE(bytes.size(), stream.size());
  EXPECT_EQ(bytes.size() % kBlock, 0u);
  EXPECT_EQ(bytes.size(), (stream.size() + kBlock - 1) / kBlock * kBlock);
  EXPECT_TRUE(bytes.compare(0, stream.size(), stream) == 0) << "the file differs from the stream";
  EXPECT_EQ(bytes.find_first_not_of('\0', stream.size()), std::string::npos) << "padding is not zeros";
}

TEST(DirectAppenderTest, TheFileHoldsExactlyTheStreamOfStagedAndStreamedAppends) {
  DirectFile f;
  if (!f.Open()) GTEST_SKIP() << "the file system of " << f.path() << " refuses O_DIRECT";
  std::mt19937_64 rng(3);
  // A 2 MiB stage: appends up to 3x its size go through Append a stage at a time.
  DirectAppender a(1);
  ASSERT_TRUE(a.ok());
  std::string stream = RandomBytes(rng, 24);
  ASSERT_TRUE(a.Start(f.fd(), stream.data(), stream.size()).ok());
  for (int i = 0; i < 200; ++i) {
    // Sizes around block and stage boundaries as well as small ones.
    const size_t kinds[] = {1, 24, kBlock - 1, kBlock, kBlock + 1, 100'000, (size_t{2} << 20) - 7,
                            (size_t{2} << 20) + 5000, 6'000'000};
    const size_t n = (i % 3 == 0) ? kinds[rng() % std::size(kinds)] : rng() % 20'000 + 1;
    const std::string piece = RandomBytes(rng, n);
    const int how = static_cast<int>(rng() % 3);
    if (how == 0) {
      // Staged, possibly several before one Flush.
      char* dst = a.Reserve(n);
      if (dst == nullptr) {
        ASSERT_TRUE(a.Flush().ok());
        dst = a.Reserve(n);
      }
      if (dst != nullptr) {
        std::memcpy(dst, piece.data(), n);
        if (rng() % 2 == 0) {
          ASSERT_TRUE(a.Flush().ok());
        }
      } else {
        iovec v{const_cast<char*>(piece.data()), n};
        ASSERT_TRUE(a.Append(&v, 1).ok());
      }
    } else {
      // Streamed, split into two iovecs (Append writes what is staged first).
      const size_t cut = n / 3;
      iovec v[2] = {{const_cast<char*>(piece.data()), cut}, {const_cast<char*>(piece.data()) + cut, n - cut}};
      ASSERT_TRUE(a.Append(v, 2).ok());
    }
    stream += piece;
    if (a.staged() == 0) {
      ASSERT_EQ(static_cast<size_t>(a.end()), stream.size());
    }
    if (i % 25 == 0 && a.staged() == 0) {
      ExpectFileHolds(f, stream);
      if (HasFailure()) return;
    }
  }
  ASSERT_TRUE(a.Flush().ok());
  EXPECT_EQ(static_cast<size_t>(a.end()), stream.size());
  ExpectFileHolds(f, stream);
}

TEST(DirectAppenderTest, StartOverwritesTheFirstBlockOfAReusedFile) {
  DirectFile f;
  {
    std::ofstream out(f.path(), std::ios::binary);
    out << std::string(3 * kBlock, 'x');
  }
  if (!f.Open()) GTEST_SKIP() << "the file system of " << f.path() << " refuses O_DIRECT";
  DirectAppender a;
  ASSERT_TRUE(a.Start(f.fd(), "head", 4).ok());
  const std::string bytes = f.Read();
  ASSERT_EQ(bytes.size(), 3 * kBlock);  // not truncated: the old blocks after the first remain
  EXPECT_EQ(bytes.substr(0, 4), "head");
  EXPECT_EQ(bytes.find_first_not_of('\0', 4), kBlock);
  EXPECT_EQ(bytes.substr(kBlock), std::string(2 * kBlock, 'x'));
}

// A write cut short (here by the file-size limit, on a block boundary past the stream's end)
// fails, the stream's end stays put, and the next append overwrites what the failed one left:
// the file holds the stream without the failed bytes, also when they were staged behind
// others, and when a first stage of them was written before the failure.
TEST(DirectAppenderTest, AFailedWriteLeavesTheStreamAsItWas) {
  DirectFile f;
  if (!f.Open()) GTEST_SKIP() << "the file system of " << f.path() << " refuses O_DIRECT";
  std::mt19937_64 rng(9);
  DirectAppender a(1);  // a 2 MiB stage
  const size_t stage = size_t{2} << 20;
  std::string stream = RandomBytes(rng, 24);
  ASSERT_TRUE(a.Start(f.fd(), stream.data(), stream.size()).ok());
  for (const char* how : {"streamed", "staged", "streamed past a stage"}) {
    SCOPED_TRACE(how);
    const bool staged = std::string(how) == "staged";
    const bool long_one = std::string(how) == "streamed past a stage";
    const std::string before = RandomBytes(rng, 5000);
    iovec v{const_cast<char*>(before.data()), before.size()};
    ASSERT_TRUE(a.Append(&v, 1).ok());
    stream += before;
    const std::string lost = RandomBytes(rng, long_one ? 2 * stage + 999 : 3 * kBlock + 123);
    const size_t first_block = stream.size() / kBlock * kBlock;
    rlimit old{};
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
    auto old_handler = signal(SIGXFSZ, SIG_IGN);
    rlimit small = old;
    // One block past the stream's end, or (long) one past the first stage write.
    small.rlim_cur = first_block + (long_one ? stage : 0) + 2 * kBlock;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
    Status s;
    if (staged) {
      std::memcpy(a.Reserve(lost.size()), lost.data(), lost.size());
      s = a.Flush();
    } else {
      iovec l{const_cast<char*>(lost.data()), lost.size()};
      s = a.Append(&l, 1);
    }
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(a.staged(), 0u);
    EXPECT_EQ(static_cast<size_t>(a.end()), stream.size());
    EXPECT_GE(f.Read().size(), static_cast<size_t>(small.rlim_cur));  // part of it reached the file
    const std::string after = RandomBytes(rng, 100);
    iovec w{const_cast<char*>(after.data()), after.size()};
    ASSERT_TRUE(a.Append(&w, 1).ok());
    stream += after;
    const std::string bytes = f.Read();
    ASSERT_GE(bytes.size(), stream.size());
    EXPECT_TRUE(bytes.compare(0, stream.size(), stream) == 0) << "the file differs from the stream";
    // The rest of the block after the stream is zeros; the failed write's later blocks remain
    // (a reader stops at the stream's end, see FileLog).
    const size_t block_end = (stream.size() + kBlock - 1) / kBlock * kBlock;
    EXPECT_EQ(bytes.find_first_not_of('\0', stream.size()), bytes.size() > block_end ? block_end : std::string::npos);
  }
}

}  // namespace
}  // namespace metaps::ps::internal
