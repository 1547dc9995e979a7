// Push audit log: an opt-in record of every push the servers ACKNOWLEDGED, for tests that check
// "nothing acknowledged is lost" against the rows' stored update counts (docs/operations.md).
//
// PushAuditLog appends one binary record per acknowledged push with a single write(2) on an
// O_APPEND file, so records of concurrent pushes never interleave and a killed process leaves at
// most its in-flight push unrecorded (an acknowledged push not yet recorded shows up as excess,
// never as a loss). Record layout, little-endian:
//
//   u32 magic 0x3141504d ("MPA1") | u32 table name bytes | u32 key count | u32 flags (1 = dense)
//   | u64 step | table name | key count x u64 keys
//
// A dense tensor's record has no keys (the whole tensor was updated). ReadPushAudit stops at a
// torn or foreign tail record.
//
// AuditedParams wraps a ParamClient: each Push/PushDense future, once it resolves OK, appends the
// record before handing the Status back (the worker waits on every ack before its round ends, so
// the record follows the ack by at most the rest of the round's local work). Pulls pass through.
//
// Thread-safety: both classes may be used from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/keys.h"
#include "common/status.h"
#include "worker/param_client.h"

namespace metaps::worker {

class PushAuditLog {
 public:
  // Opens (creating it, or appending to an existing one) the log at `path`; creates the parent
  // directory.
  static Result<std::unique_ptr<PushAuditLog>> Open(const std::string& path);
  ~PushAuditLog();
  PushAuditLog(const PushAuditLog&) = delete;
  PushAuditLog& operator=(const PushAuditLog&) = delete;

  Status Append(std::string_view table, bool dense, uint64_t step, std::span<const Key> keys);
  const std::string& path() const { return path_; }

 private:
  PushAuditLog(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

struct PushAuditRecord {
  std::string table;
  bool dense = false;
  uint64_t step = 0;
  std::vector<Key> keys;  // empty for a dense tensor
};

// Every complete record of the log at `path`, in order (NotFound if there is no such file).
Result<std::vector<PushAuditRecord>> ReadPushAudit(const std::string& path);

class AuditedParams final : public ParamClient {
 public:
  // `inner` and `log` must outlive this object.
  AuditedParams(ParamClient* inner, PushAuditLog* log) : inner_(inner), log_(log) {}
  std::future<Result<std::vector<float>>> Pull(const std::string& table, std::span<const Key> keys) override {
    return inner_->Pull(table, keys);
  }
  std::future<Status> Push(const std::string& table, std::span<const Key> keys, std::span<const float> grads,
                           uint64_t step) override;
  std::future<Result<std::vector<float>>> PullDense(const std::string& tensor) override {
    return inner_->PullDense(tensor);
  }
  std::future<Status> PushDense(const std::string& tensor, std::span<const float> grads, uint64_t step) override;

 private:
  ParamClient* inner_;
  PushAuditLog* log_;
};

}  // namespace metaps::worker
