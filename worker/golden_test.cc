// Every golden case in $METAPS_SHARED/golden must be reproduced by the engine in float32: each
// tensor's relative error (|actual - expected| / |expected|) at most 1e-3. Checked in-process on both
// kernel implementations, and through the built CLI (`metaps meta-grad --case`) as a user runs it.
// $METAPS_GOLDEN_DIR, where set, names another directory of cases in the same format: the
// golden_random test points it at random cases from tests/golden_gen.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "worker/golden_case.h"
#include "worker/onednn_kernels.h"
#include "worker/reference_kernels.h"

namespace metaps::worker {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr double kTolerance = 1e-3;

fs::path SharedDir() {
  if (const char* s = std::getenv("METAPS_SHARED")) return s;
  if (const char* src = std::getenv("METAPS_SOURCE")) return fs::path(src) / ".." / "shared";
  return fs::path("..") / "shared";
}

fs::path GoldenDir() {
  if (const char* d = std::getenv("METAPS_GOLDEN_DIR")) return d;
  return SharedDir() / "golden";
}

std::vector<fs::path> GoldenCases() {
  std::vector<fs::path> cases;
  const fs::path dir = GoldenDir();
  if (!fs::is_directory(dir)) return cases;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".json") cases.push_back(e.path());
  }
  std::sort(cases.begin(), cases.end());
  return cases;
}

// Checks every whole tensor (and the loss) within tolerance; returns the largest error.
double ExpectMatches(const json& actual, const json& expected, const std::string& name) {
  auto errors = CompareToExpected(actual, expected);
  EXPECT_TRUE(errors.ok()) << name << ": " << errors.status();
  if (!errors.ok()) return 1e9;
  double worst = 0, worst_row = 0;
  for (const auto& [key, err] : *errors) {
    // The bar is per tensor; grad_emb is one tensor over all ids. Single rows (whose norm may be
    // tiny or zero) are reported, not held to it.
    if (key.find('/') != std::string::npos) {
      worst_row = std::max(worst_row, err);
      continue;
    }
    EXPECT_LE(err, kTolerance) << name << " " << key;
    worst = std::max(worst, err);
  }
  std::printf("  %-36s max tensor error %.3g, max single-row error %.3g\n", name.c_str(), worst, worst_row);
  return worst;
}

// Each case runs with both forms of the first layer, so both stay exercised whatever the shapes.
void RunAll(Kernels* kernels, const char* label) {
  const auto cases = GoldenCases();
  ASSERT_FALSE(cases.empty()) << "no golden cases under " << GoldenDir();
  for (const fs::path& path : cases) {
    auto c = LoadGoldenCase(path.string());
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE(c->expect.is_object()) << path << " has no expect";
    for (FirstLayer first : {FirstLayer::kDense, FirstLayer::kLowRank}) {
      c->options.first_layer = first;
      auto out = RunGoldenCase(*c, kernels);
      ASSERT_TRUE(out.ok()) << path << ": " << out.status();
      ExpectMatches(*out, c->expect,
                    std::string(label) + (first == FirstLayer::kDense ? " dense " : " low-rank ") +
                        path.filename().string());
    }
  }
}

TEST(GoldenTest, OneDnnKernelsReproduceEveryCase) {
  auto kernels = OneDnnKernels::Create();
  ASSERT_TRUE(kernels.ok()) << kernels.status();
  RunAll(kernels->get(), "onednn");
}

TEST(GoldenTest, ReferenceKernelsReproduceEveryCase) {
  ReferenceKernels kernels;
  RunAll(&kernels, "reference");
}

TEST(GoldenTest, CliMetaGradPrintsOneObjectWithTheExpectedKeys) {
  // ctest sets METAPS_BIN; a manual run of this binary without it skips this test.
  const char* bin = std::getenv("METAPS_BIN");
  if (bin == nullptr) GTEST_SKIP() << "METAPS_BIN is not set";
  ASSERT_TRUE(fs::exists(bin)) << bin << " is not built";
  const auto cases = GoldenCases();
  ASSERT_FALSE(cases.empty());
  for (const fs::path& path : cases) {
    const std::string cmd = std::string(bin) + " meta-grad --case '" + path.string() + "'";
    FILE* pipe = popen(cmd.c_str(), "r");
    ASSERT_NE(pipe, nullptr) << cmd;
    std::string text;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) text.append(buf.data(), n);
    ASSERT_EQ(pclose(pipe), 0) << cmd;
    json out;
    ASSERT_NO_THROW(out = json::parse(text)) << text.substr(0, 200);
    ASSERT_TRUE(out.is_object());
    auto c = LoadGoldenCase(path.string());
    ASSERT_TRUE(c.ok()) << c.status();
    std::vector<std::string> want, got;
    for (const auto& [k, v] : c->expect.items()) want.push_back(k);
    for (const auto& [k, v] : out.items()) got.push_back(k);
    EXPECT_EQ(got, want) << path;
    ExpectMatches(out, c->expect, "cli " + path.filename().string());
  }
}

}  // namespace
}  // namespace metaps::worker
