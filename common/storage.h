// Storage: the small ordered key-value interface a server shard persists through.
//
// A Storage holds a fixed set of named namespaces ("spaces"; RocksDB column families), chosen when
// it is opened. Keys and values are arbitrary byte strings; keys are ordered bytewise within a
// space. A StorageBatch groups puts and deletes across spaces and is applied atomically by Write:
// after a crash either all of a batch is visible or none of it, and batches become visible in the
// order they were written (a recovered store holds a prefix of the acknowledged batches).
//
// Durability: a Write that returned OK survives the death of the *process* (for RocksDB: the WAL
// is in the OS page cache). With `sync = true` it also survives a machine crash (fsync).
//
// Implementations: RocksDbStorage (common/rocksdb_storage.h), MemoryStorage (common/memory_storage.h,
// a std::map test double with fault injection).
//
// Thread-safety: all methods may be called concurrently from several threads, except Close, which
// REQUIRES that no other call is in progress or follows.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace metaps {

// Index of a namespace within one Storage; obtained from Storage::FindSpace.
using StorageSpace = uint32_t;

// An ordered list of updates, applied atomically by Storage::Write. Owns copies of its keys and
// values (one contiguous buffer; appending is a memcpy, no per-entry allocation).
class StorageBatch {
 public:
  enum class Op : uint8_t { kPut = 1, kDelete = 2, kDeleteRange = 3 };

  void Put(StorageSpace space, std::string_view key, std::string_view value) {
    Append(Op::kPut, space, key, value);
  }
  // Appends a put whose value is `size` bytes the caller fills in through the returned pointer,
  // which stays valid until the next call on this batch.
  char* PutUninitialized(StorageSpace space, std::string_view key, size_t size) {
    return AppendHeader(Op::kPut, space, key, size);
  }
  // Reserves room for `bytes` more bytes of entries (avoids regrowth while appending).
  void Reserve(size_t bytes) { rep_.reserve(rep_.size() + bytes); }
  void Delete(StorageSpace space, std::string_view key) { Append(Op::kDelete, space, key, {}); }
  // Deletes every key k with begin <= k < end.
  void DeleteRange(StorageSpace space, std::string_view begin, std::string_view end) {
    Append(Op::kDeleteRange, space, begin, end);
  }

  size_t count() const { return count_; }
  size_t ByteSize() const { return rep_.size(); }
  bool empty() const { return count_ == 0; }
  void Clear() {
    rep_.clear();
    count_ = 0;
  }

  // Calls f(op, space, key, value_or_end) for each entry in order.
  template <typename F>
  void ForEach(F&& f) const {
    size_t pos = 0;
    while (pos < rep_.size()) {
      Header h;
      std::memcpy(&h, rep_.data() + pos, sizeof(h));
      pos += sizeof(h);
      std::string_view key(rep_.data() + pos, h.key_size);
      pos += h.key_size;
      std::string_view value(rep_.data() + pos, h.value_size);
      pos += h.value_size;
      f(static_cast<Op>(h.op), h.space, key, value);
    }
  }

 private:
  struct Header {
    uint8_t op;
    uint8_t pad[3];
    StorageSpace space;
    uint32_t key_size;
    uint32_t value_size;
  };
  char* AppendHeader(Op op, StorageSpace space, std::string_view key, size_t value_size) {
    Header h{};
    h.op = static_cast<uint8_t>(op);
    h.space = space;
    h.key_size = static_cast<uint32_t>(key.size());
    h.value_size = static_cast<uint32_t>(value_size);
    size_t pos = rep_.size();
    rep_.resize(pos + sizeof(h) + key.size() + value_size);
    char* p = rep_.data() + pos;
    std::memcpy(p, &h, sizeof(h));
    if (!key.empty()) std::memcpy(p + sizeof(h), key.data(), key.size());
    ++count_;
    return p + sizeof(h) + key.size();
  }
  void Append(Op op, StorageSpace space, std::string_view key, std::string_view value) {
    char* v = AppendHeader(op, space, key, value.size());
    if (!value.empty()) std::memcpy(v, value.data(), value.size());
  }

  std::string rep_;
  size_t count_ = 0;
};

// One sorted run of puts into a space (Storage::NewSortedWriter). Not thread-safe; the storage
// must outlive it.
class SortedWriter {
 public:
  virtual ~SortedWriter() = default;
  // InvalidArgument when `key` is not greater than every key added before (nothing is added).
  virtual Status Add(std::string_view key, std::string_view value) = 0;
  // Makes every pair added visible and durable, all at once; after an error none of them is
  // (a later write or run may still be made). Adds after Commit fail. A writer destroyed without
  // Commit leaves nothing behind. A run with no pairs commits as a no-op.
  virtual Status Commit() = 0;
  virtual uint64_t count() const = 0;  // pairs added
  virtual uint64_t bytes() const = 0;  // key and value bytes added
};

class Storage {
 public:
  virtual ~Storage() = default;

  // The namespace called `name`; NotFound naming it when the storage was not opened with it.
  virtual Result<StorageSpace> FindSpace(std::string_view name) const = 0;

  // NotFound when absent; other codes for I/O errors.
  virtual Status Get(StorageSpace space, std::string_view key, std::string* value) = 0;

  // Looks up all keys at once (one consistent view). For each key that exists calls
  // found(index, value); `value` is valid only during the call. Absent keys are skipped.
  // Returns the first I/O error, if any.
  virtual Status MultiGet(StorageSpace space, std::span<const std::string_view> keys,
                          const std::function<void(size_t index, std::string_view value)>& found) = 0;

  // Applies `batch` atomically. See the header comment for what `sync` promises.
  virtual Status Write(const StorageBatch& batch, bool sync) = 0;
  // A writer of one sorted run of puts into `space`: pairs added in strictly ascending key order,
  // made visible to reads and durable (against a machine crash too) together by Commit. Cheaper
  // than Write for bulk rows: RocksDB writes them straight into a table file and ingests it (no
  // WAL, memtable or flush). Keys it adds replace existing values, as puts do.
  virtual Result<std::unique_ptr<SortedWriter>> NewSortedWriter(StorageSpace space) = 0;

  // Visits keys k with begin <= k < end (end empty: to the end of the space) in order, calling
  // f(key, value) until it returns false. Views are valid only during the call.
  virtual Status Scan(StorageSpace space, std::string_view begin, std::string_view end,
                      const std::function<bool(std::string_view key, std::string_view value)>& f) = 0;

  // Creates a consistent, openable copy of the whole store at `dir`, which must not exist.
  // RocksDB: hard links to its immutable files (cheap); MemoryStorage: a dump file.
  virtual Status Checkpoint(const std::string& dir) = 0;

  // Releases resources; later calls fail. Idempotent. Destruction closes too.
  virtual Status Close() = 0;
};

// Helpers for big-endian fixed-width keys (bytewise order = numeric order).
inline void AppendBigEndian64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 7; i >= 0; --i) {
    b[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  out->append(b, 8);
}
inline void AppendBigEndian32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 3; i >= 0; --i) {
    b[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  out->append(b, 4);
}
// REQUIRES: p points at 8 (resp. 4) readable bytes.
inline uint64_t DecodeBigEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
inline uint32_t DecodeBigEndian32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

}  // namespace metaps
