#include "common/npy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "common/internal/test_dirs.h"

namespace metaps {
namespace {

namespace fs = std::filesystem;

std::string TempPath(const std::string& name) { return test::TempPath("npy_test", name); }


std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// A .npy file as another writer might lay it out: `dict` padded with spaces and '\n' to a multiple
// of `align`, version `major`.0, then `data`.
std::string MakeNpy(int major, const std::string& dict, const std::string& data, size_t align = 64) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % align != 0) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  for (size_t b = 0; b < prefix - 8; ++b) out += static_cast<char>((header.size() >> (8 * b)) & 0xff);
  return out + header + data;
}

// Bitwise equality, so that NaN and -0.0 count.
bool SameFloats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(NpyTest, ArraysOfAnyRankRoundTrip) {
  struct Case {
    std::vector<int64_t> shape;
    std::vector<float> data;
  };
  const std::vector<Case> cases = {
      {{5}, {1.5f, -2.0f, 0.0f, -0.0f, std::numeric_limits<float>::quiet_NaN()}},
      {{2, 3}, {1, 2, 3, 4, 5, 6}},
      {{2, 1, 2}, {std::numeric_limits<float>::infinity(), -1e-38f, 3.25f, 1e30f}},
      {{0}, {}},
      {{4, 0}, {}},
      {{}, {42.0f}},  // 0-d: one element
  };
  for (const auto& c : cases) {
    const std::string path = TempPath("round.npy");
    ASSERT_TRUE(WriteNpyF32(path, c.data, c.shape).ok());
    auto got = ReadNpyF32(path);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->shape, c.shape);
    EXPECT_TRUE(SameFloats(got->data, c.data)) << "shape rank " << c.shape.size();
    const std::string bytes = FileBytes(path);
    EXPECT_EQ((bytes.size() - c.data.size() * 4) % 64, 0u);  // the data starts at a multiple of 64
    fs::remove(path);
  }
}

TEST(NpyTest, HeaderIsByteForByteWhatNumpyWrites) {
  const std::string path = TempPath("known.npy");
  ASSERT_TRUE(WriteNpyF32(path, std::vector<float>{1, 2, 3}, {3}).ok());
  // numpy.save(path, numpy.array([1, 2, 3], dtype='<f4')): header length 118, data at 128.
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
  const std::string want = std::string("\x93NUMPY\x01\x00\x76\x00", 10) + dict +
                           std::string(128 - 10 - dict.size() - 1, ' ') + "\n" + FloatBytes({1, 2, 3});
  EXPECT_EQ(FileBytes(path), want);

  ASSERT_TRUE(WriteNpyF32(path, std::vector<float>(6, 0.5f), {2, 3}).ok());
  const std::string two_d = FileBytes(path);
  ASSERT_EQ(two_d.size(), 128u + 24u);
  EXPECT_EQ(two_d.substr(10, 59), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
  EXPECT_EQ(two_d[127], '\n');
  EXPECT_EQ(two_d.find_first_not_of(' ', 69), 127u);
  fs::remove(path);
}

TEST(NpyTest, WriteRefusesAShapeThatDoesNotMatchTheData) {
  const std::string path = TempPath("bad_shape.npy");
  std::vector<float> three = {1, 2, 3};
  EXPECT_EQ(WriteNpyF32(path, three, {2, 2}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteNpyF32(path, three, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteNpyF32(path, three, {-1, -3}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteNpyF32(path, {}, {int64_t{1} << 62, 4, 0}).code(),
            StatusCode::kInvalidArgument);  // overflows
  EXPECT_FALSE(fs::exists(path));
}

TEST(NpyTest, WriteReplacesAtomicallyAndLeavesNoTemporaryFiles) {
  const std::string dir = TempPath("dir");
  fs::create_directories(dir);
  const std::string path = dir + "/a.npy";
  ASSERT_TRUE(WriteNpyF32(path, std::vector<float>{1, 2}, {2}).ok());
  ASSERT_TRUE(WriteNpyF32(path, std::vector<float>{7}, {1}).ok());
  auto got = ReadNpyF32(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->data, std::vector<float>{7});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  Status s = WriteNpyF32(dir + "/missing/b.npy", std::vector<float>{1}, {1});
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_NE(s.message().find("missing/b.npy"), std::string::npos) << s;
  fs::remove_all(dir);
}

TEST(NpyTest, ReadsOtherWritersLayoutsAndVersion2) {
  const std::string path = TempPath("other.npy");
  const std::string data = FloatBytes({1, 2, 3, 4, 5, 6});
  const std::vector<std::string> dicts = {
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",       // numpy's own
      "{\"shape\": (2,3), \"fortran_order\": False, \"descr\": \"<f4\"}",  // another order and quoting
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",     // numpy under Python 2
  };
  for (const auto& dict : dicts) {
    for (int major : {1, 2}) {
      for (size_t align : {16, 64}) {  // numpy before 1.9 aligned to 16
        WriteBytes(path, MakeNpy(major, dict, data, align));
        auto got = ReadNpyF32(path);
        ASSERT_TRUE(got.ok()) << dict << " v" << major << ": " << got.status();
        EXPECT_EQ(got->shape, (std::vector<int64_t>{2, 3}));
        EXPECT_EQ(got->data, (std::vector<float>{1, 2, 3, 4, 5, 6}));
      }
    }
  }
  fs::remove(path);
}

TEST(NpyTest, RefusesWhatItCannotReadNamingTheFile) {
  const std::string path = TempPath("refused.npy");
  const std::string f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
  const std::string three = FloatBytes({1, 2, 3});
  struct Case {
    std::string what;
    std::string bytes;
    StatusCode code;
    std::string mentions;
  };
  const std::string good = MakeNpy(1, f4, three);
  std::string version3 = MakeNpy(2, f4, three);
  version3[6] = '\x03';
  const std::vector<Case> cases = {
      {"float64", MakeNpy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", three + three),
       StatusCode::kInvalidArgument, "'<f8'"},
      {"big-endian", MakeNpy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", three),
       StatusCode::kInvalidArgument, "'>f4'"},
      {"structured", MakeNpy(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", three),
       StatusCode::kInvalidArgument, "structured"},
      {"fortran", MakeNpy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 1), }", three),
       StatusCode::kInvalidArgument, "fortran"},
      {"version 3", version3, StatusCode::kInvalidArgument, "version 3.0"},
      {"bad magic", "\x93NUMPZ" + good.substr(6), StatusCode::kInvalidArgument, "magic"},
      {"not npy", "hello world, this is text", StatusCode::kInvalidArgument, "magic"},
      {"empty", "", StatusCode::kInvalidArgument, "magic"},
      {"data truncated", good.substr(0, good.size() - 1), StatusCode::kDataLoss, "truncated"},
      {"no data", good.substr(0, 128), StatusCode::kDataLoss, "truncated"},
      {"header truncated", good.substr(0, 60), StatusCode::kDataLoss, "truncated"},
      {"prefix truncated", good.substr(0, 9), StatusCode::kDataLoss, "truncated"},
      {"trailing bytes", good + "x", StatusCode::kDataLoss, "trailing"},
      {"unparsable header", MakeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,", three),
       StatusCode::kDataLoss, "header"},
      {"missing key", MakeNpy(1, "{'descr': '<f4', 'shape': (3,), }", three), StatusCode::kDataLoss,
       "fortran_order"},
      {"negative dim", MakeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }", three),
       StatusCode::kDataLoss, "shape"},
      {"huge shape",
       MakeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", three),
       StatusCode::kDataLoss, "overflow"},
  };
  for (const auto& c : cases) {
    WriteBytes(path, c.bytes);
    auto got = ReadNpyF32(path);
    ASSERT_FALSE(got.ok()) << c.what;
    EXPECT_EQ(got.status().code(), c.code) << c.what << ": " << got.status();
    EXPECT_NE(got.status().message().find(path), std::string::npos) << c.what << ": " << got.status();
    EXPECT_NE(got.status().message().find(c.mentions), std::string::npos) << c.what << ": " << got.status();
  }
  // The good one reads, so the failures above are the damage, not the helper.
  WriteBytes(path, good);
  EXPECT_TRUE(ReadNpyF32(path).ok());
  fs::remove(path);
  auto missing = ReadNpyF32(path);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace metaps
