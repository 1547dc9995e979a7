// rocksdb::Status to metaps Status, and Slice/string_view conversions: the one place RocksDB's
// error kinds map to ours (RocksDbStorage, SstFileWriter). A missing file or directory is
// NotFound, corruption DataLoss, a busy or timed-out call Unavailable.
#pragma once

#include <string>
#include <string_view>

#include <rocksdb/slice.h>
#include <rocksdb/status.h>

#include "common/status.h"

namespace metaps::internal {

inline Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = "rocksdb " + std::string(what) + ": " + s.ToString();
  if (s.IsNotFound() || s.IsPathNotFound()) return NotFound(std::move(msg));
  if (s.IsCorruption()) return DataLoss(std::move(msg));
  if (s.IsInvalidArgument()) return InvalidArgument(std::move(msg));
  if (s.IsNotSupported()) return Unimplemented(std::move(msg));
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) return Unavailable(std::move(msg));
  if (s.IsAborted()) return Aborted(std::move(msg));
  if (s.IsIOError()) return Internal(std::move(msg));
  return Status(StatusCode::kUnknown, std::move(msg));
}

inline rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
inline std::string_view ToView(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

}  // namespace metaps::internal
