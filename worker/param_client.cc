#include "worker/param_client.h"

namespace metaps::worker {
namespace {
template <typename T>
std::future<T> Ready(T v) {
  std::promise<T> p;
  p.set_value(std::move(v));
  return p.get_future();
}
}  // namespace

LocalParams::LocalParams(std::map<std::string, uint32_t> row_dims, std::map<std::string, size_t> dense_sizes, float lr)
    : row_dims_(std::move(row_dims)), lr_(lr) {
  for (auto& [name, n] : dense_sizes) dense_[name].assign(n, 0.f);
}

std::future<Result<std::vector<float>>> LocalParams::Pull(const std::string& table, std::span<const Key> keys) {
  std::lock_guard<std::mutex> l(mu_);
  auto d = row_dims_.find(table);
  if (d == row_dims_.end()) return Ready<Result<std::vector<float>>>(NotFound("no table '" + table + "'"));
  std::vector<float> out(keys.size() * d->second, 0.f);
  auto& rows = rows_[table];
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = rows.find(keys[i]);
    if (it != rows.end()) std::copy(it->second.begin(), it->second.end(), out.begin() + i * d->second);
  }
  return Ready<Result<std::vector<float>>>(std::move(out));
}

std::future<Status> LocalParams::Push(const std::string& table, std::span<const Key> keys,
                                      std::span<const float> grads, uint64_t) {
  std::lock_guard<std::mutex> l(mu_);
  auto d = row_dims_.find(table);
  if (d == row_dims_.end()) return Ready(NotFound("no table '" + table + "'"));
  if (grads.size() != keys.size() * d->second) return Ready(InvalidArgument("grads do not match keys x dim"));
  auto& rows = rows_[table];
  for (size_t i = 0; i < keys.size(); ++i) {
    auto& r = rows[keys[i]];
    r.resize(d->second, 0.f);
    for (uint32_t j = 0; j < d->second; ++j) r[j] -= lr_ * grads[i * d->second + j];
  }
  return Ready(Status::Ok());
}

std::future<Result<std::vector<float>>> LocalParams::PullDense(const std::string& tensor) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = dense_.find(tensor);
  if (it == dense_.end()) return Ready<Result<std::vector<float>>>(NotFound("no tensor '" + tensor + "'"));
  return Ready<Result<std::vector<float>>>(it->second);
}

std::future<Status> LocalParams::PushDense(const std::string& tensor, std::span<const float> grads, uint64_t) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = dense_.find(tensor);
  if (it == dense_.end()) return Ready(NotFound("no tensor '" + tensor + "'"));
  if (grads.size() != it->second.size()) return Ready(InvalidArgument("dense grads of the wrong size"));
  for (size_t j = 0; j < grads.size(); ++j) it->second[j] -= lr_ * grads[j];
  return Ready(Status::Ok());
}

}  // namespace metaps::worker
