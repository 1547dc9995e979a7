// fuzz_movielens100k: untrusted bytes -> u.user, u.item, u.data (split at the first two NUL bytes,
// in that order) in a scratch directory -> ReadMovieLens100k. Malformed lines must be reported
// ("file:line: reason") and skipped or stop the read with InvalidArgument; never a crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/reader_checks.h"

using namespace metaps;        // NOLINT
using namespace metaps::fuzz;  // NOLINT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = SplitNul(std::string_view(reinterpret_cast<const char*>(data), size), 3);
  WriteFile(ScratchPath("u.user"), parts[0]);
  WriteFile(ScratchPath("u.item"), parts[1]);
  WriteFile(ScratchPath("u.data"), parts[2]);
  const data::ReadOptions o = FuzzReadOptions(size, ScratchDir());
  CheckDataset(data::ReadMovieLens100k(ScratchDir(), o), o);
  return 0;
}
