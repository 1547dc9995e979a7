#include "common/sst_file.h"

#include <cerrno>

#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/env.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>
#include <rocksdb/sst_file_writer.h>

namespace metaps {

namespace {

// As in rocksdb_storage.cc, plus a missing file or directory -> kNotFound.
Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  std::string msg = "rocksdb " + what + ": " + s.ToString();
  if (s.IsNotFound() || s.IsPathNotFound()) return NotFound(std::move(msg));
  if (s.IsCorruption()) return DataLoss(std::move(msg));
  if (s.IsInvalidArgument()) return InvalidArgument(std::move(msg));
  if (s.IsNotSupported()) return Unimplemented(std::move(msg));
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) return Unavailable(std::move(msg));
  if (s.IsAborted()) return Aborted(std::move(msg));
  if (s.IsIOError()) return Internal(std::move(msg));
  return Status(StatusCode::kUnknown, std::move(msg));
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view ToView(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

}  // namespace

struct SstFileWriter::Rep {
  rocksdb::Options options;  // RocksDB's defaults: bytewise comparator, block-based table
  rocksdb::SstFileWriter writer{rocksdb::EnvOptions(), options};
};

SstFileWriter::SstFileWriter(std::string path, std::unique_ptr<Rep> rep)
    : path_(std::move(path)), rep_(std::move(rep)) {}

SstFileWriter::~SstFileWriter() {
  if (!finished_) {
    rep_.reset();  // closes the file before it is removed
    ::unlink(path_.c_str());
  }
}

Result<std::unique_ptr<SstFileWriter>> SstFileWriter::Create(const std::string& path) {
  auto rep = std::make_unique<Rep>();
  METAPS_RETURN_IF_ERROR(FromRocks(rep->writer.Open(path), "creating sst file " + path));
  return std::unique_ptr<SstFileWriter>(new SstFileWriter(path, std::move(rep)));
}

Status SstFileWriter::Add(std::string_view key, std::string_view value) {
  if (finished_) return FailedPrecondition("sst file " + path_ + " is already finished");
  // Checked here as well as by RocksDB: its message does not say which keys, and an empty first
  // key must be accepted while an empty repeated one must not.
  if (entries_ > 0 && key <= std::string_view(last_key_)) {
    return InvalidArgument("sst file " + path_ + ": key of " + std::to_string(key.size()) +
                           " bytes is not greater than the previous key (entry " + std::to_string(entries_) +
                           ")");
  }
  METAPS_RETURN_IF_ERROR(FromRocks(rep_->writer.Put(ToSlice(key), ToSlice(value)), "sst file " + path_));
  last_key_.assign(key.data(), key.size());
  ++entries_;
  return Status::Ok();
}

Status SstFileWriter::Finish() {
  if (finished_) return FailedPrecondition("sst file " + path_ + " is already finished");
  finished_ = true;
  Status s;
  if (entries_ > 0) {
    rocksdb::ExternalSstFileInfo info;
    s = FromRocks(rep_->writer.Finish(&info), "finishing sst file " + path_);
    if (s.ok()) file_bytes_ = info.file_size;
  }
  rep_.reset();  // closes the file
  if (entries_ == 0 || !s.ok()) ::unlink(path_.c_str());
  return s;
}

Status ScanSstFile(const std::string& path,
                   const std::function<bool(std::string_view, std::string_view)>& f) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return NotFound("no sst file " + path);
  rocksdb::Options options;
  rocksdb::SstFileReader reader(options);
  METAPS_RETURN_IF_ERROR(FromRocks(reader.Open(path), "opening sst file " + path));
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(ro));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (!f(ToView(it->key()), ToView(it->value()))) break;
  }
  return FromRocks(it->status(), "reading sst file " + path);
}

}  // namespace metaps
