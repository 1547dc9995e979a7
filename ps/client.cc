#include "ps/client.h"

#include "common/first_occurrence.h"
#include "common/thread_name.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <random>

namespace metaps::ps {
namespace {

using Clock = std::chrono::steady_clock;
using internal::ClientOp;

// A buffer of `n` uninitialized T (no zero-fill: every element is written before it is sent or
// read) and the Bytes that owns it.
template <typename T>
std::pair<T*, Bytes> NewBuffer(size_t n) {
  std::shared_ptr<T[]> owner(new T[n == 0 ? 1 : n]);
  T* p = owner.get();
  return {p, Bytes(p, n * sizeof(T), std::shared_ptr<const void>(owner, p))};
}

// Unique keys of a request, where each caller position points, and which unique keys each shard
// owns. The common case (no duplicates, one shard) costs one hash probe per key and no copies.
struct Dedup {
  std::span<const Key> unique;                  // the caller's keys when there are no duplicates
  std::vector<Key> unique_storage;              // unique keys, when there are duplicates
  std::vector<uint32_t> inverse;                // caller index -> unique index; empty: no duplicates
  int32_t num_shards = 1;
  std::vector<std::vector<uint32_t>> by_shard;  // shard -> unique indices; empty when num_shards == 1

  Dedup(std::span<const Key> keys, int32_t shards) : num_shards(shards) {
    // One per thread (Pull/Push may be called from several threads), reused across calls.
    thread_local FirstOccurrence table;
    table.Start(keys);
    const size_t repeat = table.FindFirstRepeat();
    if (repeat == keys.size()) {
      unique = keys;
    } else {
      unique_storage.reserve(keys.size());
      unique_storage.assign(keys.begin(), keys.begin() + repeat);
      table.NumberUnique(repeat, &inverse, [&](size_t i, uint32_t, bool first) {
        if (first) unique_storage.push_back(keys[i]);
      });
      unique = unique_storage;
    }
    if (num_shards > 1) {
      by_shard.resize(num_shards);
      for (auto& b : by_shard) b.reserve(unique.size() / num_shards + 16);
      for (uint32_t u = 0; u < unique.size(); ++u) by_shard[ShardOf(unique[u], num_shards)].push_back(u);
    }
  }

  bool has_duplicates() const { return !inverse.empty(); }
  size_t ShardSize(int32_t shard) const { return num_shards == 1 ? unique.size() : by_shard[shard].size(); }

  // The keys frame for `shard` (a copy: the caller's keys need not outlive the call).
  Bytes ShardKeys(int32_t shard) const {
    if (num_shards == 1) return Bytes::Copy(unique.data(), unique.size() * sizeof(Key));
    const auto& idx = by_shard[shard];
    auto [k, bytes] = NewBuffer<Key>(idx.size());
    for (size_t j = 0; j < idx.size(); ++j) k[j] = unique[idx[j]];
    return bytes;
  }
};

struct PullOp final : ClientOp {
  Dedup dedup;
  size_t num_keys;
  uint32_t dim = 0;
  Bytes single;                            // one shard: its reply, used in place
  std::unique_ptr<float[]> unique_values;  // several shards: rows by unique index
  std::promise<Result<PullResult>> promise;

  PullOp(std::span<const Key> keys, int32_t shards) : dedup(keys, shards), num_keys(keys.size()) {}

  void OnPart(int32_t shard, Message& reply) override {
    const size_t rows = dedup.ShardSize(shard);
    uint32_t d = reply.header.dim;
    if (dim == 0) dim = d;
    if (d != dim || reply.payload.size() != 1 || reply.payload[0].size() != rows * d * sizeof(float)) {
      error = Internal("shard " + std::to_string(shard) + " sent a pull reply of the wrong size");
      return;
    }
    if (dedup.num_shards == 1) {
      single = std::move(reply.payload[0]);
      return;
    }
    if (!unique_values) unique_values.reset(new float[dedup.unique.size() * static_cast<size_t>(dim)]);
    const std::byte* src = reply.payload[0].data();
    const auto& idx = dedup.by_shard[shard];
    const size_t row_bytes = dim * sizeof(float);
    for (size_t j = 0; j < idx.size(); ++j) {
      std::memcpy(&unique_values[static_cast<size_t>(idx[j]) * dim], src + j * row_bytes, row_bytes);
    }
  }

  void Finish() override {
    if (!error.ok()) return promise.set_value(error);
    PullResult r;
    r.dim = dim;
    const size_t total = num_keys * static_cast<size_t>(dim);
    const float* src;
    Bytes aligned;
    if (dedup.num_shards == 1) {
      aligned = single.Aligned<float>();
      src = reinterpret_cast<const float*>(aligned.data());
    } else {
      src = unique_values.get();
    }
    if (total == 0) {
      // nothing to copy
    } else if (!dedup.has_duplicates()) {
      // Unique order is the caller's order: one copy, no zero-fill.
      r.values.assign(src, src + total);
    } else {
      r.values.reserve(total);
      for (size_t i = 0; i < num_keys; ++i) {
        const float* row = src + static_cast<size_t>(dedup.inverse[i]) * dim;
        r.values.insert(r.values.end(), row, row + dim);
      }
    }
    promise.set_value(std::move(r));
  }
};

struct StatusOp final : ClientOp {
  std::promise<Status> promise;
  void OnPart(int32_t, Message&) override {}
  void Finish() override { promise.set_value(error); }
};

struct DenseOp final : ClientOp {
  std::promise<Result<std::vector<float>>> promise;
  std::vector<float> values;
  void OnPart(int32_t, Message& reply) override {
    if (reply.payload.size() != 1 || reply.payload[0].size() % sizeof(float) != 0) {
      error = Internal("malformed dense reply");
      return;
    }
    Bytes aligned = reply.payload[0].Aligned<float>();
    auto v = aligned.As<float>();
    values.assign(v.begin(), v.end());
  }
  void Finish() override {
    if (!error.ok()) return promise.set_value(error);
    promise.set_value(std::move(values));
  }
};

struct StatsOp final : ClientOp {
  std::promise<Result<std::vector<std::string>>> promise;
  std::vector<std::string> stats;
  explicit StatsOp(int32_t n) : stats(n) {}
  void OnPart(int32_t shard, Message& reply) override { stats[shard] = reply.header.meta; }
  void Finish() override {
    if (!error.ok()) return promise.set_value(error);
    promise.set_value(std::move(stats));
  }
};

struct CallOp final : ClientOp {
  std::promise<Result<Message>> promise;
  Message reply;
  void OnPart(int32_t, Message& r) override { reply = std::move(r); }
  void Finish() override {
    if (!error.ok()) return promise.set_value(error);
    promise.set_value(std::move(reply));
  }
};

}  // namespace

PsClient::PsClient(ClientOptions options, std::unique_ptr<Transport> transport, ShardMap shards)
    : options_(std::move(options)), transport_(std::move(transport)), shards_(std::move(shards)) {
  // Request ids restart at 1 in every process; the incarnation keeps a restarted client's ids
  // apart from its predecessor's in the servers' dedupe windows.
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%08x%08x", rd(), rd());
  incarnation_ = buf;
}

PsClient::~PsClient() { Stop(); }

Status PsClient::Start() {
  if (shards_.size() == 0) return InvalidArgument("the shard map is empty");
  for (int32_t s = 0; s < shards_.size(); ++s) {
    METAPS_RETURN_IF_ERROR(transport_->Connect("shard-" + std::to_string(s), shards_.endpoints[s]));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return FailedPrecondition("client was stopped");
    running_ = true;
  }
  io_thread_ = std::thread([this] {
    NameThisThread("ps-client-io");
    IoLoop();
  });
  return Status::Ok();
}

void PsClient::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  transport_->Interrupt();
  if (io_thread_.joinable()) io_thread_.join();
  // Whatever is left never reached a server or never got an answer.
  std::deque<Outgoing> left;
  {
    std::lock_guard<std::mutex> l(mu_);
    left.swap(outbox_);
  }
  for (auto& o : left) Complete(Part{o.op, o.shard, {}}, Cancelled("client stopped"));
  auto pending = std::move(pending_);
  for (auto& [id, part] : pending) Complete(part, Cancelled("client stopped"));
}

Header PsClient::MakeHeader(MsgType type, const std::string& table) const {
  Header h;
  h.type = type;
  h.job_id = options_.job_id;
  h.sender = options_.sender + "#" + incarnation_;
  h.auth = options_.auth;
  h.table = table;
  h.epoch = shards_.epoch;
  h.worker_id = options_.worker_id;
  return h;
}

void PsClient::Submit(std::vector<Outgoing> parts) {
  Status refused;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) {
      refused = Cancelled("client stopped");
    } else if (!running_) {
      refused = FailedPrecondition("client is not started");
    } else {
      for (auto& p : parts) outbox_.push_back(std::move(p));
    }
  }
  if (!refused.ok()) {
    for (auto& p : parts) Complete(Part{p.op, p.shard, {}}, refused);
    return;
  }
  transport_->Interrupt();
}

void PsClient::Complete(Part part, Result<Message> reply) {
  Op& op = *part.op;
  if (!reply.ok()) {
    if (op.error.ok()) op.error = reply.status().WithContext("shard " + std::to_string(part.shard));
  } else if (Status s = StatusFromReply(reply->header); !s.ok()) {
    if (op.error.ok()) op.error = s.WithContext("shard " + std::to_string(part.shard));
  } else if (op.error.ok()) {
    op.OnPart(part.shard, *reply);
  }
  if (--op.remaining == 0) op.Finish();
}

void PsClient::IoLoop() {
  auto timeout = std::chrono::milliseconds(options_.request_timeout_ms);
  while (true) {
    std::deque<Outgoing> batch;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      batch.swap(outbox_);
    }
    for (auto& o : batch) {
      uint64_t id = next_request_id_.fetch_add(1);
      o.message.header.request_id = id;
      Part part{o.op, o.shard, Clock::now() + timeout, ToFrames(o.message)};
      Status s = transport_->Send({"shard-" + std::to_string(o.shard), part.frames});
      if (!s.ok() && !s.IsTransient()) {
        Complete(std::move(part), s);
      } else {
        pending_.emplace(id, std::move(part));  // a transient send failure is retried on the deadline
      }
    }
    // Wake at least every 100 ms to expire deadlines.
    auto env = transport_->Recv(std::chrono::milliseconds(100));
    if (env.ok()) {
      auto msg = FromFrames(std::move(env->frames));
      if (msg.ok()) {
        auto it = pending_.find(msg->header.request_id);
        if (it != pending_.end()) {
          Part part = std::move(it->second);
          pending_.erase(it);
          Complete(std::move(part), std::move(*msg));
        }
        // A reply to no pending request (one that already timed out) is dropped on purpose.
      }
    }
    if (!pending_.empty()) {
      auto now = Clock::now();
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->second.deadline <= now) {
          Part& part = it->second;
          if (part.attempts < options_.max_retries) {
            // Same frames, same request id: the server recognizes a push it already applied.
            ++part.attempts;
            if (options_.on_retry) {
              options_.on_retry(part.shard,
                                DeadlineExceeded("no reply from shard " + std::to_string(part.shard) + " in " +
                                                 std::to_string(options_.request_timeout_ms) + " ms"),
                                part.attempts);
            }
            part.deadline = now + timeout;
            (void)transport_->Send({"shard-" + std::to_string(part.shard), part.frames});
            ++it;
            continue;
          }
          Part done = std::move(part);
          it = pending_.erase(it);
          Complete(std::move(done), DeadlineExceeded("no reply from shard " + std::to_string(done.shard) + " in " +
                                                     std::to_string(options_.max_retries + 1) + " attempts of " +
                                                     std::to_string(options_.request_timeout_ms) + " ms"));
        } else {
          ++it;
        }
      }
    }
  }
}

std::future<Result<PullResult>> PsClient::Pull(const std::string& table, std::span<const Key> keys) {
  auto op = std::make_shared<PullOp>(keys, shards_.size());
  auto fut = op->promise.get_future();
  std::vector<Outgoing> parts;
  for (int32_t s = 0; s < shards_.size(); ++s) {
    if (op->dedup.ShardSize(s) == 0) continue;
    Message m{MakeHeader(MsgType::kPull, table), {op->dedup.ShardKeys(s)}};
    m.header.num_keys = op->dedup.ShardSize(s);
    parts.push_back({s, std::move(m), op});
  }
  op->remaining = static_cast<int>(parts.size());
  if (parts.empty()) {
    op->Finish();
    return fut;
  }
  Submit(std::move(parts));
  return fut;
}

std::future<Status> PsClient::Push(const std::string& table, std::span<const Key> keys,
                                   std::span<const float> grads, uint64_t step) {
  auto op = std::make_shared<StatusOp>();
  auto fut = op->promise.get_future();
  if (keys.empty()) {
    op->Finish();
    return fut;
  }
  if (grads.size() % keys.size() != 0) {
    op->error = InvalidArgument("push of " + std::to_string(keys.size()) + " keys with " +
                                std::to_string(grads.size()) + " gradient values");
    op->Finish();
    return fut;
  }
  const size_t dim = grads.size() / keys.size();
  const size_t row_bytes = dim * sizeof(float);
  Dedup dedup(keys, shards_.size());
  // Gradients by unique index: the caller's when there are no duplicates, else summed here (in
  // first-occurrence order, so each shard receives every key once).
  const float* unique_grads = grads.data();
  Bytes summed_bytes;
  if (dedup.has_duplicates()) {
    auto [sum, bytes] = NewBuffer<float>(dedup.unique.size() * dim);
    size_t seen = 0;  // unique indices are handed out in order: u == seen means a first occurrence
    for (size_t i = 0; i < keys.size(); ++i) {
      const uint32_t u = dedup.inverse[i];
      float* dst = sum + static_cast<size_t>(u) * dim;
      const float* src = &grads[i * dim];
      if (u == seen) {
        std::memcpy(dst, src, row_bytes);
        ++seen;
      } else {
        for (size_t d = 0; d < dim; ++d) dst[d] += src[d];
      }
    }
    unique_grads = sum;
    summed_bytes = std::move(bytes);
  }
  std::vector<Outgoing> parts;
  for (int32_t s = 0; s < shards_.size(); ++s) {
    const size_t rows = dedup.ShardSize(s);
    if (rows == 0) continue;
    Bytes g;
    if (shards_.size() == 1) {
      g = summed_bytes.empty() ? Bytes::Copy(unique_grads, rows * row_bytes) : summed_bytes;
    } else {
      const auto& idx = dedup.by_shard[s];
      auto [dst, bytes] = NewBuffer<float>(rows * dim);
      for (size_t j = 0; j < rows; ++j) {
        std::memcpy(dst + j * dim, unique_grads + static_cast<size_t>(idx[j]) * dim, row_bytes);
      }
      g = std::move(bytes);
    }
    Message m{MakeHeader(MsgType::kPush, table), {dedup.ShardKeys(s), std::move(g)}};
    m.header.num_keys = rows;
    m.header.dim = static_cast<uint32_t>(dim);
    m.header.step = step;
    parts.push_back({s, std::move(m), op});
  }
  op->remaining = static_cast<int>(parts.size());
  Submit(std::move(parts));
  return fut;
}

std::future<Result<std::vector<float>>> PsClient::PullDense(const std::string& tensor) {
  auto op = std::make_shared<DenseOp>();
  auto fut = op->promise.get_future();
  op->remaining = 1;
  Submit({{DenseShard(tensor), Message{MakeHeader(MsgType::kPullDense, tensor), {}}, op}});
  return fut;
}

std::future<Status> PsClient::PushDense(const std::string& tensor, std::span<const float> grads, uint64_t step) {
  auto op = std::make_shared<StatusOp>();
  auto fut = op->promise.get_future();
  op->remaining = 1;
  Message m{MakeHeader(MsgType::kPushDense, tensor),
            {Bytes::FromVector(std::vector<float>(grads.begin(), grads.end()))}};
  m.header.dim = static_cast<uint32_t>(grads.size());
  m.header.step = step;
  Submit({{DenseShard(tensor), std::move(m), op}});
  return fut;
}

std::future<Status> PsClient::Checkpoint(const std::string& dir) {
  auto op = std::make_shared<StatusOp>();
  auto fut = op->promise.get_future();
  std::vector<Outgoing> parts;
  for (int32_t s = 0; s < shards_.size(); ++s) {
    Message m{MakeHeader(MsgType::kCheckpoint, ""), {}};
    m.header.meta = dir + "/shard-" + std::to_string(s);
    parts.push_back({s, std::move(m), op});
  }
  op->remaining = static_cast<int>(parts.size());
  Submit(std::move(parts));
  return fut;
}

std::future<Result<std::vector<std::string>>> PsClient::Stats() {
  auto op = std::make_shared<StatsOp>(shards_.size());
  auto fut = op->promise.get_future();
  std::vector<Outgoing> parts;
  for (int32_t s = 0; s < shards_.size(); ++s) parts.push_back({s, Message{MakeHeader(MsgType::kStats, ""), {}}, op});
  op->remaining = static_cast<int>(parts.size());
  Submit(std::move(parts));
  return fut;
}

std::future<Result<Message>> PsClient::Call(int32_t shard, Message request) {
  auto op = std::make_shared<CallOp>();
  auto fut = op->promise.get_future();
  op->remaining = 1;
  if (shard < 0 || shard >= shards_.size()) {
    op->error = InvalidArgument("no shard " + std::to_string(shard));
    op->Finish();
    return fut;
  }
  Header base = MakeHeader(request.header.type, request.header.table);
  request.header.job_id = base.job_id;
  request.header.sender = base.sender;
  request.header.auth = base.auth;
  request.header.epoch = base.epoch;
  request.header.worker_id = base.worker_id;
  Submit({{shard, std::move(request), op}});
  return fut;
}

}  // namespace metaps::ps
