#include "common/sst_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/internal/test_dirs.h"

namespace metaps {
namespace {

namespace fs = std::filesystem;

std::string TempPath(const std::string& name) { return test::TempPath("sst_file_test", name); }


std::string Key(int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "k%08d", i);
  return buf;
}

std::vector<std::pair<std::string, std::string>> ReadAll(const std::string& path, Status* status) {
  std::vector<std::pair<std::string, std::string>> out;
  *status = ScanSstFile(path, [&](std::string_view k, std::string_view v) {
    out.emplace_back(k, v);
    return true;
  });
  return out;
}

TEST(SstFileTest, TenThousandEntriesRoundTripInOrder) {
  const std::string path = TempPath("round.sst");
  auto w = SstFileWriter::Create(path);
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<std::pair<std::string, std::string>> want;
  // Binary values, an empty one and one of 100 KB among them.
  for (int i = 0; i < 10000; ++i) {
    std::string v = i == 17 ? "" : std::string(i == 4242 ? 100000 : 1 + i % 50, static_cast<char>(i % 256));
    want.emplace_back(Key(i), v);
    ASSERT_TRUE((*w)->Add(want.back().first, want.back().second).ok()) << i;
  }
  EXPECT_EQ((*w)->entries(), 10000u);
  EXPECT_EQ((*w)->file_bytes(), 0u);
  ASSERT_TRUE((*w)->Finish().ok());
  EXPECT_EQ((*w)->file_bytes(), fs::file_size(path));
  EXPECT_GT((*w)->file_bytes(), 0u);
  EXPECT_EQ((*w)->Add(Key(10001), "late").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*w)->Finish().code(), StatusCode::kFailedPrecondition);
  w = Status(StatusCode::kCancelled, "destroyed");  // a finished file stays
  ASSERT_TRUE(fs::exists(path));

  Status s;
  EXPECT_EQ(ReadAll(path, &s), want);
  EXPECT_TRUE(s.ok()) << s;
  // The scan stops when the callback says so.
  int seen = 0;
  ASSERT_TRUE(ScanSstFile(path, [&](std::string_view, std::string_view) { return ++seen < 3; }).ok());
  EXPECT_EQ(seen, 3);
  fs::remove(path);
}

TEST(SstFileTest, KeysOutOfOrderOrRepeatedAreRefusedAndTheFileGoesOn) {
  const std::string path = TempPath("order.sst");
  auto w = SstFileWriter::Create(path);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Add("", "empty key first").ok());
  ASSERT_TRUE((*w)->Add("b", "1").ok());
  EXPECT_EQ((*w)->Add("b", "again").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->Add("a", "earlier").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->Add("", "empty again").code(), StatusCode::kInvalidArgument);
  // Bytewise, not signed-char, order: 0xff sorts after 'c'.
  ASSERT_TRUE((*w)->Add("c", "2").ok());
  ASSERT_TRUE((*w)->Add("\xff", "3").ok());
  EXPECT_EQ((*w)->Add("d", "4").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->entries(), 4u);
  ASSERT_TRUE((*w)->Finish().ok());
  Status s;
  auto got = ReadAll(path, &s);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{
                     {"", "empty key first"}, {"b", "1"}, {"c", "2"}, {"\xff", "3"}}));
  fs::remove(path);
}

TEST(SstFileTest, NoEntriesMeansNoFile) {
  const std::string path = TempPath("empty.sst");
  auto w = SstFileWriter::Create(path);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Finish().ok());
  EXPECT_EQ((*w)->entries(), 0u);
  EXPECT_EQ((*w)->file_bytes(), 0u);
  EXPECT_FALSE(fs::exists(path));
}

TEST(SstFileTest, AnUnfinishedWriterLeavesNoFile) {
  const std::string path = TempPath("abandoned.sst");
  {
    auto w = SstFileWriter::Create(path);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Add("k", "v").ok());
    EXPECT_TRUE(fs::exists(path));
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(SstFileTest, CreateInAMissingDirectoryFails) {
  auto w = SstFileWriter::Create(TempPath("nodir") + "/x.sst");
  EXPECT_FALSE(w.ok());
}

TEST(SstFileTest, MissingFileIsNotFound) {
  const std::string path = TempPath("missing.sst");
  bool called = false;
  Status s = ScanSstFile(path, [&](std::string_view, std::string_view) { return called = true; });
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  EXPECT_FALSE(called);
}

TEST(SstFileTest, DamagedFilesAreDataLossNotACrash) {
  const std::string good = TempPath("good.sst");
  {
    auto w = SstFileWriter::Create(good);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int i = 0; i < 20000; ++i) ASSERT_TRUE((*w)->Add(Key(i), std::string(40, 'v')).ok());
    ASSERT_TRUE((*w)->Finish().ok());
  }
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 50000u);
  auto scan_of = [&](const std::string& name, const std::string& content) {
    const std::string path = TempPath(name);
    std::ofstream(path, std::ios::binary) << content;
    Status s;
    size_t n = ReadAll(path, &s).size();
    fs::remove(path);
    return std::make_pair(s, n);
  };
  for (size_t keep : {size_t{0}, size_t{10}, bytes.size() / 2, bytes.size() - 1}) {
    auto [s, n] = scan_of("truncated.sst", bytes.substr(0, keep));
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << "kept " << keep << ": " << s;
    EXPECT_NE(s.message().find("truncated.sst"), std::string::npos) << s;
  }
  auto [garbage, n_garbage] = scan_of("garbage.sst", std::string(70000, 'x'));
  EXPECT_EQ(garbage.code(), StatusCode::kDataLoss) << garbage;
  EXPECT_EQ(n_garbage, 0u);
  // A flipped byte inside a data block: the block's checksum catches it during the scan.
  std::string flipped = bytes;
  flipped[1000] ^= 0x55;
  auto [corrupt, n_corrupt] = scan_of("flipped.sst", flipped);
  EXPECT_EQ(corrupt.code(), StatusCode::kDataLoss) << corrupt;
  EXPECT_LT(n_corrupt, 20000u);
  fs::remove(good);
}

}  // namespace
}  // namespace metaps
