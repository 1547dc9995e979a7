// Small file helpers shared by every role.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace metaps {

// Writes `text` to `path` through a temporary file and a rename, so a reader (another process
// polling for an endpoint file, a restart reading state) sees either the old file or the whole new
// one, never half of it. Internal with the path on failure.
Status WriteFileAtomically(const std::string& path, std::string_view text);

// Creates (or truncates) `path` with permission `mode` before writing `text`, so a secret (a job
// token, a CURVE secret key with mode 0600) is never readable by others, not even briefly.
Status WriteFileWithMode(const std::string& path, std::string_view text, unsigned mode);

// Reads the whole of `path` into `out` (resized; its capacity is reused) with plain reads: a
// std::istreambuf_iterator copy goes at ~0.3 GB/s. Internal with the path on failure.
Status ReadFileInto(const std::string& path, std::string* out);

// A new directory <system temp dir>/<prefix>-XXXXXX (mkdtemp). Internal on failure.
Result<std::string> MakeTempDir(std::string_view prefix);

// Removes the directory tree `dir` when it goes out of scope, unless Keep() was called (a
// temporary directory, or a half-written output removed on every early return).
class RemoveAllOnExit {
 public:
  explicit RemoveAllOnExit(std::string dir) : dir_(std::move(dir)) {}
  ~RemoveAllOnExit();
  RemoveAllOnExit(const RemoveAllOnExit&) = delete;
  RemoveAllOnExit& operator=(const RemoveAllOnExit&) = delete;
  void Keep() { dir_.clear(); }

 private:
  std::string dir_;
};

}  // namespace metaps
