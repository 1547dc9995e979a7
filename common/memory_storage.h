// MemoryStorage: Storage in memory (one std::map per space), the test double for RocksDbStorage.
//
// Everything a Write stored counts as durable: a MemoryStorage "survives" a simulated crash when
// the test keeps a second handle from Share() and opens the store again on it. Fault injection
// makes chosen Writes fail without applying anything, to prove that callers recover.
// Checkpoint writes one dump file (dir/memory_storage.dump) that Load reads back.
//
// Thread-safety: as Storage; one mutex guards the shared data.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/storage.h"

namespace metaps {

class MemoryStorage final : public Storage {
 public:
  explicit MemoryStorage(std::vector<std::string> spaces);
  // A checkpoint written by Checkpoint(dir).
  static Result<std::unique_ptr<MemoryStorage>> Load(const std::string& dir);

  // Another handle on the same data (unaffected by this handle's Close).
  std::unique_ptr<MemoryStorage> Share() const;

  // Fault injection: the nth Write from now (1-based) fails with kUnavailable and changes nothing.
  void FailNthWrite(uint64_t nth);
  // Every Write fails while set.
  void FailAllWrites(bool fail);
  uint64_t writes() const;  // Writes applied so far (on all handles)
  size_t Count(StorageSpace space) const;

  Result<StorageSpace> FindSpace(std::string_view name) const override;
  Status Get(StorageSpace space, std::string_view key, std::string* value) override;
  Status MultiGet(StorageSpace space, std::span<const std::string_view> keys,
                  const std::function<void(size_t index, std::string_view value)>& found) override;
  Status Write(const StorageBatch& batch, bool sync) override;
  // Collects the run and applies it as one Write at Commit (so fault injection covers it).
  Result<std::unique_ptr<SortedWriter>> NewSortedWriter(StorageSpace space) override;
  Status Scan(StorageSpace space, std::string_view begin, std::string_view end,
              const std::function<bool(std::string_view key, std::string_view value)>& f) override;
  Status Checkpoint(const std::string& dir) override;
  Status Close() override;

 private:
  struct Data {
    std::mutex mu;
    std::vector<std::string> names;
    std::vector<std::map<std::string, std::string, std::less<>>> maps;
    uint64_t writes = 0;
    uint64_t fail_countdown = 0;  // 0: off
    bool fail_all = false;
  };
  explicit MemoryStorage(std::shared_ptr<Data> data) : data_(std::move(data)) {}
  Status CheckOpen(StorageSpace space) const;

  std::shared_ptr<Data> data_;
  std::atomic<bool> closed_{false};
};

}  // namespace metaps
