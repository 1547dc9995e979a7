#include "common/memory_storage.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace metaps {

namespace {
constexpr char kDumpName[] = "memory_storage.dump";
constexpr char kMagic[] = "METAPS-MEMSTORAGE-1\n";

void PutString(std::string* out, std::string_view s) {
  uint64_t n = s.size();
  out->append(reinterpret_cast<const char*>(&n), 8);
  out->append(s);
}
bool GetString(std::string_view* in, std::string* s) {
  if (in->size() < 8) return false;
  uint64_t n;
  std::memcpy(&n, in->data(), 8);
  in->remove_prefix(8);
  if (in->size() < n) return false;
  s->assign(in->data(), n);
  in->remove_prefix(n);
  return true;
}
}  // namespace

MemoryStorage::MemoryStorage(std::vector<std::string> spaces) : data_(std::make_shared<Data>()) {
  data_->names = std::move(spaces);
  data_->maps.resize(data_->names.size());
}

std::unique_ptr<MemoryStorage> MemoryStorage::Share() const {
  return std::unique_ptr<MemoryStorage>(new MemoryStorage(data_));
}

void MemoryStorage::FailNthWrite(uint64_t nth) {
  std::lock_guard<std::mutex> lock(data_->mu);
  data_->fail_countdown = nth;
}
void MemoryStorage::FailAllWrites(bool fail) {
  std::lock_guard<std::mutex> lock(data_->mu);
  data_->fail_all = fail;
}
uint64_t MemoryStorage::writes() const {
  std::lock_guard<std::mutex> lock(data_->mu);
  return data_->writes;
}
size_t MemoryStorage::Count(StorageSpace space) const {
  std::lock_guard<std::mutex> lock(data_->mu);
  return space < data_->maps.size() ? data_->maps[space].size() : 0;
}

Status MemoryStorage::CheckOpen(StorageSpace space) const {
  if (closed_) return FailedPrecondition("memory storage is closed");
  if (space >= data_->maps.size()) return InvalidArgument("storage space " + std::to_string(space) + " out of range");
  return Status::Ok();
}

Result<StorageSpace> MemoryStorage::FindSpace(std::string_view name) const {
  for (size_t i = 0; i < data_->names.size(); ++i) {
    if (data_->names[i] == name) return static_cast<StorageSpace>(i);
  }
  return NotFound("storage has no space \"" + std::string(name) + "\"");
}

Status MemoryStorage::Get(StorageSpace space, std::string_view key, std::string* value) {
  METAPS_RETURN_IF_ERROR(CheckOpen(space));
  std::lock_guard<std::mutex> lock(data_->mu);
  auto& m = data_->maps[space];
  auto it = m.find(key);
  if (it == m.end()) return NotFound("key not found");
  *value = it->second;
  return Status::Ok();
}

Status MemoryStorage::MultiGet(StorageSpace space, std::span<const std::string_view> keys,
                               const std::function<void(size_t, std::string_view)>& found) {
  METAPS_RETURN_IF_ERROR(CheckOpen(space));
  std::lock_guard<std::mutex> lock(data_->mu);
  auto& m = data_->maps[space];
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = m.find(keys[i]);
    if (it != m.end()) found(i, it->second);
  }
  return Status::Ok();
}

Status MemoryStorage::Write(const StorageBatch& batch, bool) {
  if (closed_) return FailedPrecondition("memory storage is closed");
  std::lock_guard<std::mutex> lock(data_->mu);
  if (data_->fail_all) return Unavailable("injected write failure (all writes)");
  if (data_->fail_countdown > 0 && --data_->fail_countdown == 0) {
    return Unavailable("injected write failure");
  }
  Status bad;
  batch.ForEach([&](StorageBatch::Op, StorageSpace space, std::string_view, std::string_view) {
    if (space >= data_->maps.size()) bad = InvalidArgument("storage space out of range");
  });
  METAPS_RETURN_IF_ERROR(bad);
  batch.ForEach([&](StorageBatch::Op op, StorageSpace space, std::string_view key, std::string_view value) {
    auto& m = data_->maps[space];
    switch (op) {
      case StorageBatch::Op::kPut: m.insert_or_assign(std::string(key), std::string(value)); break;
      case StorageBatch::Op::kDelete: {
        auto it = m.find(key);
        if (it != m.end()) m.erase(it);
        break;
      }
      case StorageBatch::Op::kDeleteRange:
        if (key < value) m.erase(m.lower_bound(key), m.lower_bound(value));
        break;
    }
  });
  ++data_->writes;
  return Status::Ok();
}

namespace {

class MemorySortedWriter final : public SortedWriter {
 public:
  MemorySortedWriter(MemoryStorage* storage, StorageSpace space) : storage_(storage), space_(space) {}
  Status Add(std::string_view key, std::string_view value) override {
    if (committed_) return FailedPrecondition("sorted run already committed");
    if (batch_.count() > 0 && key <= last_) return InvalidArgument("sorted run: key out of order");
    last_.assign(key);
    batch_.Put(space_, key, value);
    bytes_ += key.size() + value.size();
    return Status::Ok();
  }
  Status Commit() override {
    if (committed_) return FailedPrecondition("sorted run already committed");
    committed_ = true;
    return batch_.empty() ? Status::Ok() : storage_->Write(batch_, true);
  }
  uint64_t count() const override { return batch_.count(); }
  uint64_t bytes() const override { return bytes_; }

 private:
  MemoryStorage* storage_;
  StorageSpace space_;
  StorageBatch batch_;
  std::string last_;
  uint64_t bytes_ = 0;
  bool committed_ = false;
};

}  // namespace

Result<std::unique_ptr<SortedWriter>> MemoryStorage::NewSortedWriter(StorageSpace space) {
  METAPS_RETURN_IF_ERROR(CheckOpen(space));
  return std::unique_ptr<SortedWriter>(new MemorySortedWriter(this, space));
}

Status MemoryStorage::Scan(StorageSpace space, std::string_view begin, std::string_view end,
                           const std::function<bool(std::string_view, std::string_view)>& f) {
  METAPS_RETURN_IF_ERROR(CheckOpen(space));
  // Copy the range first so that `f` may call back into this storage.
  std::vector<std::pair<std::string, std::string>> items;
  {
    std::lock_guard<std::mutex> lock(data_->mu);
    auto& m = data_->maps[space];
    for (auto it = m.lower_bound(begin); it != m.end() && (end.empty() || it->first < end); ++it) {
      items.emplace_back(it->first, it->second);
    }
  }
  for (const auto& [k, v] : items) {
    if (!f(k, v)) break;
  }
  return Status::Ok();
}

Status MemoryStorage::Checkpoint(const std::string& dir) {
  if (closed_) return FailedPrecondition("memory storage is closed");
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) return InvalidArgument("checkpoint dir already exists: " + dir);
  std::filesystem::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir + ": " + ec.message());
  std::string out = kMagic;
  {
    std::lock_guard<std::mutex> lock(data_->mu);
    uint64_t n = data_->names.size();
    out.append(reinterpret_cast<const char*>(&n), 8);
    for (size_t i = 0; i < data_->names.size(); ++i) {
      PutString(&out, data_->names[i]);
      uint64_t count = data_->maps[i].size();
      out.append(reinterpret_cast<const char*>(&count), 8);
      for (const auto& [k, v] : data_->maps[i]) {
        PutString(&out, k);
        PutString(&out, v);
      }
    }
  }
  std::ofstream f(dir + "/" + kDumpName, std::ios::binary);
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  f.close();
  if (!f) return Internal("cannot write checkpoint in " + dir);
  return Status::Ok();
}

Result<std::unique_ptr<MemoryStorage>> MemoryStorage::Load(const std::string& dir) {
  std::ifstream f(dir + "/" + kDumpName, std::ios::binary);
  if (!f) return NotFound("no memory storage checkpoint in " + dir);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string all = ss.str();
  std::string_view in(all);
  auto corrupt = [&] { return DataLoss("corrupt memory storage checkpoint in " + dir); };
  if (in.substr(0, sizeof(kMagic) - 1) != kMagic) return corrupt();
  in.remove_prefix(sizeof(kMagic) - 1);
  if (in.size() < 8) return corrupt();
  uint64_t n;
  std::memcpy(&n, in.data(), 8);
  in.remove_prefix(8);
  auto data = std::make_shared<Data>();
  for (uint64_t i = 0; i < n; ++i) {
    std::string name;
    if (!GetString(&in, &name) || in.size() < 8) return corrupt();
    uint64_t count;
    std::memcpy(&count, in.data(), 8);
    in.remove_prefix(8);
    data->names.push_back(name);
    data->maps.emplace_back();
    for (uint64_t j = 0; j < count; ++j) {
      std::string k, v;
      if (!GetString(&in, &k) || !GetString(&in, &v)) return corrupt();
      data->maps.back().emplace(std::move(k), std::move(v));
    }
  }
  return std::unique_ptr<MemoryStorage>(new MemoryStorage(std::move(data)));
}

Status MemoryStorage::Close() {
  closed_ = true;
  return Status::Ok();
}

}  // namespace metaps
