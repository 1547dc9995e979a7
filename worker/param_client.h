// ParamClient: what the worker needs from the parameter servers. The real implementation wraps
// ps::PsClient (chosen in launch/, since worker/ does not depend on ps/); LocalParams is an
// in-memory double with plain SGD for tests and single-process runs.
//
// Pull returns rows in the caller's key order; Push sums duplicates. Dense tensors are whole
// vectors. All calls are asynchronous and thread-safe.
#pragma once

#include <future>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/keys.h"
#include "common/status.h"

namespace metaps::worker {

class ParamClient {
 public:
  virtual ~ParamClient() = default;
  virtual std::future<Result<std::vector<float>>> Pull(const std::string& table, std::span<const Key> keys) = 0;
  virtual std::future<Status> Push(const std::string& table, std::span<const Key> keys, std::span<const float> grads,
                                   uint64_t step) = 0;
  virtual std::future<Result<std::vector<float>>> PullDense(const std::string& tensor) = 0;
  virtual std::future<Status> PushDense(const std::string& tensor, std::span<const float> grads, uint64_t step) = 0;
};

// In-memory parameters: rows start at zero, dense tensors at zero with `dense_sizes`; Push applies
// SGD with `lr`. Thread-safe.
class LocalParams final : public ParamClient {
 public:
  LocalParams(std::map<std::string, uint32_t> row_dims, std::map<std::string, size_t> dense_sizes, float lr);
  std::future<Result<std::vector<float>>> Pull(const std::string& table, std::span<const Key> keys) override;
  std::future<Status> Push(const std::string& table, std::span<const Key> keys, std::span<const float> grads,
                           uint64_t step) override;
  std::future<Result<std::vector<float>>> PullDense(const std::string& tensor) override;
  std::future<Status> PushDense(const std::string& tensor, std::span<const float> grads, uint64_t step) override;

 private:
  std::mutex mu_;
  std::map<std::string, uint32_t> row_dims_;
  std::map<std::string, std::unordered_map<Key, std::vector<float>>> rows_;  // GUARDED_BY(mu_)
  std::map<std::string, std::vector<float>> dense_;                          // GUARDED_BY(mu_)
  float lr_;
};

}  // namespace metaps::worker
