#include "ps/client.h"

#include <cstring>

namespace metaps::ps {
namespace {

using Clock = std::chrono::steady_clock;
using internal::ClientOp;

// Unique keys of a request, where each caller position points, and which unique keys each shard owns.
struct Dedup {
  std::vector<Key> unique;
  std::vector<uint32_t> inverse;                // caller index -> unique index
  std::vector<std::vector<uint32_t>> by_shard;  // shard -> unique indices

  Dedup(std::span<const Key> keys, int32_t num_shards) {
    std::unordered_map<Key, uint32_t> index;
    index.reserve(keys.size() * 2);
    inverse.resize(keys.size());
    unique.reserve(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      auto [it, fresh] = index.try_emplace(keys[i], static_cast<uint32_t>(unique.size()));
      if (fresh) unique.push_back(keys[i]);
      inverse[i] = it->second;
    }
    by_shard.resize(num_shards);
    if (num_shards == 1) {
      by_shard[0].resize(unique.size());
      for (uint32_t u = 0; u < unique.size(); ++u) by_shard[0][u] = u;
    } else {
      for (uint32_t u = 0; u < unique.size(); ++u) by_shard[ShardOf(unique[u], num_shards)].push_back(u);
    }
  }

  Bytes ShardKeys(int32_t shard) const {
    const auto& idx = by_shard[shard];
    std::vector<Key> k(idx.size());
    for (size_t j = 0; j < idx.size(); ++j) k[j] = unique[idx[j]];
    return Bytes::FromVector(std::move(k));
  }
};

struct PullOp final : ClientOp {
  Dedup dedup;
  uint32_t dim = 0;
  std::vector<float> unique_values;
  std::promise<Result<PullResult>> promise;

  PullOp(std::span<const Key> keys, int32_t shards) : dedup(keys, shards) {}

  void OnPart(int32_t shard, Message& reply) override {
    const auto& idx = dedup.by_shard[shard];
    uint32_t d = reply.header.dim;
    if (dim == 0) {
      dim = d;
      unique_values.resize(dedup.unique.size() * static_cast<size_t>(dim));
    }
    if (d != dim || reply.payload.size() != 1 || reply.payload[0].size() != idx.size() * d * sizeof(float)) {
      error = Internal("shard " + std::to_string(shard) + " sent a pull reply of the wrong size");
      return;
    }
    const auto* src = reinterpret_cast<const float*>(reply.payload[0].data());
    if (dedup.by_shard.size() == 1) {
      std::memcpy(unique_values.data(), src, reply.payload[0].size());
      return;
    }
    for (size_t j = 0; j < idx.size(); ++j) {
      std::memcpy(&unique_values[static_cast<size_t>(idx[j]) * dim], src + j * dim, dim * sizeof(float));
    }
  }

  void Finish() override {
    if (!error.ok()) return promise.set_value(error);
    PullResult r;
    r.dim = dim;
    if (dedup.unique.size() == dedup.inverse.size()) {
      // No duplicates: unique order is the caller's order.
      r.values = std::move(unique_values);
    } else {
      r.values.resize(dedup.inverse.size() * static_cast<size_t>(dim));
      for (size_t i = 0; i < dedup.inverse.size(); ++i) {
        std::memcpy(&r.values[i * dim], &unique_values[static_cast<size_t>(dedup.inverse[i]) * dim],
                    dim * sizeof(float));
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
    : options_(std::move(options)), transport_(std::move(transport)), shards_(std::move(shards)) {}

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
  io_thread_ = std::thread([this] { IoLoop(); });
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
  h.sender = options_.sender;
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
      Status s = transport_->Send({"shard-" + std::to_string(o.shard), ToFrames(o.message)});
      Part part{o.op, o.shard, Clock::now() + timeout};
      if (!s.ok()) {
        Complete(std::move(part), s);
      } else {
        pending_.emplace(id, std::move(part));
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
          Part part = std::move(it->second);
          it = pending_.erase(it);
          Complete(std::move(part), DeadlineExceeded("no reply within " +
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
    if (op->dedup.by_shard[s].empty()) continue;
    Message m{MakeHeader(MsgType::kPull, table), {op->dedup.ShardKeys(s)}};
    m.header.num_keys = op->dedup.by_shard[s].size();
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
  Dedup dedup(keys, shards_.size());
  // Sum duplicate rows here, so each shard receives every key once.
  std::vector<float> summed;
  const float* unique_grads = grads.data();
  if (dedup.unique.size() != keys.size()) {
    summed.assign(dedup.unique.size() * dim, 0.f);
    for (size_t i = 0; i < keys.size(); ++i) {
      float* dst = &summed[static_cast<size_t>(dedup.inverse[i]) * dim];
      const float* src = &grads[i * dim];
      for (size_t d = 0; d < dim; ++d) dst[d] += src[d];
    }
    unique_grads = summed.data();
  }
  std::vector<Outgoing> parts;
  for (int32_t s = 0; s < shards_.size(); ++s) {
    const auto& idx = dedup.by_shard[s];
    if (idx.empty()) continue;
    std::vector<float> g(idx.size() * dim);
    for (size_t j = 0; j < idx.size(); ++j) {
      std::memcpy(&g[j * dim], unique_grads + static_cast<size_t>(idx[j]) * dim, dim * sizeof(float));
    }
    Message m{MakeHeader(MsgType::kPush, table), {dedup.ShardKeys(s), Bytes::FromVector(std::move(g))}};
    m.header.num_keys = idx.size();
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
