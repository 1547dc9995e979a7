#include "worker/push_audit.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace metaps::worker {
namespace {

constexpr uint32_t kMagic = 0x3141504d;  // "MPA1"
constexpr uint32_t kDense = 1;
constexpr size_t kHeaderBytes = 24;

void PutU32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }

}  // namespace

Result<std::unique_ptr<PushAuditLog>> PushAuditLog::Open(const std::string& path) {
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Internal("push audit log " + path + ": " + std::strerror(errno));
  return std::unique_ptr<PushAuditLog>(new PushAuditLog(fd, path));
}

PushAuditLog::~PushAuditLog() { ::close(fd_); }

Status PushAuditLog::Append(std::string_view table, bool dense, uint64_t step, std::span<const Key> keys) {
  std::string rec;
  rec.reserve(kHeaderBytes + table.size() + keys.size() * 8);
  PutU32(rec, kMagic);
  PutU32(rec, static_cast<uint32_t>(table.size()));
  PutU32(rec, static_cast<uint32_t>(keys.size()));
  PutU32(rec, dense ? kDense : 0);
  PutU64(rec, step);
  rec.append(table);
  rec.append(reinterpret_cast<const char*>(keys.data()), keys.size() * sizeof(Key));
  // One write(2): O_APPEND makes it one contiguous record even with concurrent writers.
  ssize_t n = ::write(fd_, rec.data(), rec.size());
  if (n < 0) return Internal("push audit log " + path_ + ": " + std::strerror(errno));
  if (static_cast<size_t>(n) != rec.size()) return Internal("push audit log " + path_ + ": short write");
  return Status::Ok();
}

Result<std::vector<PushAuditRecord>> ReadPushAudit(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("no push audit log " + path);
  std::string data((std::istreambuf_iterator<char>(in)), {});
  std::vector<PushAuditRecord> out;
  size_t pos = 0;
  while (pos + kHeaderBytes <= data.size()) {
    uint32_t magic, name_len, nkeys, flags;
    uint64_t step;
    std::memcpy(&magic, data.data() + pos, 4);
    std::memcpy(&name_len, data.data() + pos + 4, 4);
    std::memcpy(&nkeys, data.data() + pos + 8, 4);
    std::memcpy(&flags, data.data() + pos + 12, 4);
    std::memcpy(&step, data.data() + pos + 16, 8);
    size_t size = kHeaderBytes + name_len + size_t{nkeys} * 8;
    if (magic != kMagic || pos + size > data.size()) break;  // a torn tail
    PushAuditRecord r;
    r.table.assign(data.data() + pos + kHeaderBytes, name_len);
    r.dense = (flags & kDense) != 0;
    r.step = step;
    r.keys.resize(nkeys);
    std::memcpy(r.keys.data(), data.data() + pos + kHeaderBytes + name_len, size_t{nkeys} * 8);
    out.push_back(std::move(r));
    pos += size;
  }
  return out;
}

std::future<Status> AuditedParams::Push(const std::string& table, std::span<const Key> keys,
                                        std::span<const float> grads, uint64_t step) {
  auto ack = std::make_shared<std::future<Status>>(inner_->Push(table, keys, grads, step));
  // The caller's keys need not outlive this call.
  return std::async(std::launch::deferred, [ack, log = log_, table, step, k = std::vector<Key>(keys.begin(), keys.end())] {
    Status s = ack->get();
    if (!s.ok()) return s;
    return log->Append(table, false, step, k);
  });
}

std::future<Status> AuditedParams::PushDense(const std::string& tensor, std::span<const float> grads, uint64_t step) {
  auto ack = std::make_shared<std::future<Status>>(inner_->PushDense(tensor, grads, step));
  return std::async(std::launch::deferred, [ack, log = log_, tensor, step] {
    Status s = ack->get();
    if (!s.ok()) return s;
    return log->Append(tensor, true, step, {});
  });
}

}  // namespace metaps::worker
