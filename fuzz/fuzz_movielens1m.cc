// fuzz_movielens1m: untrusted bytes -> users.dat, movies.dat, ratings.dat (split at the first two
// NUL bytes, in that order) in a scratch directory -> ReadMovieLens1M. Malformed lines must be
// reported and skipped or stop the read with InvalidArgument; never a crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/reader_checks.h"

using namespace metaps;        // NOLINT
using namespace metaps::fuzz;  // NOLINT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = SplitNul(std::string_view(reinterpret_cast<const char*>(data), size), 3);
  WriteFile(ScratchPath("users.dat"), parts[0]);
  WriteFile(ScratchPath("movies.dat"), parts[1]);
  WriteFile(ScratchPath("ratings.dat"), parts[2]);
  const data::ReadOptions o = FuzzReadOptions(size, ScratchDir());
  CheckDataset(data::ReadMovieLens1M(ScratchDir(), o), o);
  return 0;
}
