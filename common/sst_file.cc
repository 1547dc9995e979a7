#include "common/sst_file.h"

#include <cerrno>

#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/env.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>
#include <rocksdb/sst_file_writer.h>

#include "common/internal/rocksdb_util.h"

namespace metaps {

namespace {

using internal::FromRocks;
using internal::ToSlice;
using internal::ToView;

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
