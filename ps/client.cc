#include "ps/client.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/first_occurrence.h"
#include "common/random_id.h"
#include "common/thread_name.h"

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
  std::span<const Key> unique;                  // the keys sent: the caller's own when none repeat (or a pull's few repeats are kept)
  std::vector<Key> unique_storage;              // unique keys, when there are duplicates
  std::vector<uint32_t> inverse;                // caller index -> unique index; empty: no duplicates
  int32_t num_shards = 1;
  std::vector<std::vector<uint32_t>> by_shard;  // shard -> unique indices; empty when num_shards == 1

  // `skip_if_few`: a pull whose keys barely repeat is sent as it is (repeats included; the server
  // answers every key, in order), see FewRepeats.
  Dedup(std::span<const Key> keys, int32_t shards, bool skip_if_few = false) : num_shards(shards) {
    // One per thread (Pull/Push may be called from several threads), reused across calls.
    thread_local FirstOccurrence table;
    if (skip_if_few && FewRepeats(keys, table)) {
      unique = keys;
    } else {
      Number(keys, table);
    }
    if (num_shards > 1) {
      by_shard.resize(num_shards);
      for (auto& b : by_shard) b.reserve(unique.size() / num_shards + 16);
      for (uint32_t u = 0; u < unique.size(); ++u) by_shard[ShardOf(unique[u], num_shards)].push_back(u);
    }
  }

  // Whether a batch's repeats are too few to be worth removing, judged from its first kSample
  // keys. Removing them costs a hash-table visit per key and a copy of every row back into the
  // caller's order (~9 ns per key here: 0.086 ms of client CPU per 10k-key pull, `perf`); a
  // repeated row sent as it is costs the server's gather, its send and the client's receive of
  // one more row (~55 ns, from the same profiles), so below ~15% repeats sending them is cheaper.
  // For keys drawn at random the repeats among the first m of n keys number about m^2/2K (K the
  // key space), so the batch's share is the sample's share times n/m; skewed keys repeat early and
  // are overestimated, which only means they are deduplicated.
  static bool FewRepeats(std::span<const Key> keys, FirstOccurrence& table) {
    constexpr size_t kSample = 512;
    constexpr double kMaxShare = 0.10;
    if (keys.size() < 2 * kSample) return false;  // small batches: the dedupe is cheap anyway
    table.Start(keys.first(kSample));
    size_t repeats = 0;
    for (size_t i = 0; i < kSample; ++i) repeats += table.Visit(i) != i;  // (a 4 KiB table: no prefetch)
    const double share = static_cast<double>(repeats) / kSample * (static_cast<double>(keys.size()) / kSample);
    return share < kMaxShare;
  }

  void Number(std::span<const Key> keys, FirstOccurrence& table) {
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
  std::vector<Bytes> replies;  // by shard: the reply's rows, in by_shard order

  PullOp(std::span<const Key> keys, int32_t shards, bool dedupe_every_pull)
      : dedup(keys, shards, /*skip_if_few=*/!dedupe_every_pull), num_keys(keys.size()), replies(shards) {}

  void OnPart(int32_t shard, Message& reply) override {
    const size_t rows = dedup.ShardSize(shard);
    uint32_t d = reply.header.dim;
    if (dim == 0) dim = d;
    if (d != dim || reply.payload.size() != 1 || reply.payload[0].size() != rows * d * sizeof(float)) {
      error = Internal("shard " + std::to_string(shard) + " sent a pull reply of the wrong size");
      return;
    }
    replies[shard] = std::move(reply.payload[0]);
  }

  // On the waiter's thread, outside the client's lock.
  Result<PullResult> Take() {
    if (!error.ok()) return error;
    PullResult r;
    r.dim = dim;
    const size_t total = num_keys * static_cast<size_t>(dim);
    if (total == 0) return r;
    if (dedup.num_shards == 1 && !dedup.has_duplicates()) {
      // Unique order is the caller's order: the reply is the result, no copy.
      r.storage = replies[0].Aligned<float>();
      r.values = r.storage.As<float>().first(total);
      return r;
    }
    // Where each unique key's row is, then the rows gathered in the caller's order.
    std::vector<Bytes> aligned(dedup.num_shards);
    std::vector<const float*> row_of(dedup.unique.size());
    for (int32_t s = 0; s < dedup.num_shards; ++s) {
      if (replies[s].empty()) continue;
      aligned[s] = replies[s].Aligned<float>();
      const float* src = aligned[s].As<float>().data();
      if (dedup.num_shards == 1) {
        for (size_t u = 0; u < row_of.size(); ++u) row_of[u] = src + u * dim;
      } else {
        const auto& idx = dedup.by_shard[s];
        for (size_t j = 0; j < idx.size(); ++j) row_of[idx[j]] = src + j * dim;
      }
    }
    auto [dst, bytes] = NewBuffer<float>(total);
    const size_t row_bytes = dim * sizeof(float);
    auto source = [&](size_t i) { return row_of[dedup.has_duplicates() ? dedup.inverse[i] : i]; };
    // Rows that follow each other in a reply are copied as one run: one shard's reply with a few
    // repeated keys is a few long runs, not one small copy per row.
    for (size_t i = 0; i < num_keys;) {
      const float* src = source(i);
      size_t j = i + 1;
      while (j < num_keys && source(j) == src + (j - i) * dim) ++j;
      std::memcpy(dst + i * dim, src, (j - i) * row_bytes);
      i = j;
    }
    r.storage = std::move(bytes);
    r.values = r.storage.As<float>();
    return r;
  }
};

struct StatusOp final : ClientOp {
  void OnPart(int32_t, Message&) override {}
  Status Take() { return error; }
};

struct DenseOp final : ClientOp {
  Bytes reply;
  void OnPart(int32_t, Message& r) override {
    if (r.payload.size() != 1 || r.payload[0].size() % sizeof(float) != 0) {
      error = Internal("malformed dense reply");
      return;
    }
    reply = std::move(r.payload[0]);
  }
  Result<std::vector<float>> Take() {
    if (!error.ok()) return error;
    Bytes aligned = reply.Aligned<float>();
    auto v = aligned.As<float>();
    return std::vector<float>(v.begin(), v.end());
  }
};

struct StatsOp final : ClientOp {
  std::vector<std::string> stats;
  explicit StatsOp(int32_t n) : stats(n) {}
  void OnPart(int32_t shard, Message& reply) override { stats[shard] = std::move(reply.header.meta); }
  Result<std::vector<std::string>> Take() {
    if (!error.ok()) return error;
    return std::move(stats);
  }
};

struct CallOp final : ClientOp {
  Message reply;
  void OnPart(int32_t, Message& r) override { reply = std::move(r); }
  Result<Message> Take() {
    if (!error.ok()) return error;
    return std::move(reply);
  }
};

std::string NoReply(int32_t shard, uint32_t timeout_ms) {
  return "no reply from shard " + std::to_string(shard) + " in " + std::to_string(timeout_ms) + " ms";
}

std::string NoReplyAfter(int32_t shard, uint32_t attempts, uint32_t timeout_ms) {
  return "no reply from shard " + std::to_string(shard) + " in " + std::to_string(attempts) + " attempts of " +
         std::to_string(timeout_ms) + " ms";
}

// How often a thread holding the transport wakes to check deadlines, and how often the background
// thread looks for replies nobody waits for.
constexpr auto kTick = std::chrono::milliseconds(100);

}  // namespace

PsClient::PsClient(ClientOptions options, std::unique_ptr<Transport> transport, ShardMap shards)
    : options_(std::move(options)), transport_(std::move(transport)), shards_(std::move(shards)) {
  // Request ids restart at 1 in every process; the incarnation keeps a restarted client's ids
  // apart from its predecessor's in the servers' dedupe windows.
  incarnation_ = RandomHexId();
  for (int32_t s = 0; s < shards_.size(); ++s) peers_.push_back("shard-" + std::to_string(s));
}

PsClient::~PsClient() { Stop(); }

Status PsClient::Start() {
  if (shards_.size() == 0) return InvalidArgument("the shard map is empty");
  for (int32_t s = 0; s < shards_.size(); ++s) {
    METAPS_RETURN_IF_ERROR(transport_->Connect(peers_[s], shards_.endpoints[s]));
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
  io_cv_.notify_all();
  transport_->Interrupt();
  if (io_thread_.joinable()) io_thread_.join();
  std::unique_lock<std::mutex> l(mu_);
  // A caller receiving sees stopping_ within one tick (sooner: the Interrupt above) and lets go.
  cv_.wait(l, [&] { return !transport_owned_; });
  // Whatever is left never reached a server or never got an answer.
  auto outbox = std::move(outbox_);
  auto pending = std::move(pending_);
  for (auto& [part, id] : outbox) CompleteLocked(std::move(part), Cancelled("client stopped"));
  for (auto& [id, part] : pending) CompleteLocked(std::move(part), Cancelled("client stopped"));
  cv_.notify_all();
  // Every op is done now; wait for the threads inside Wait() to leave before members go away.
  cv_.wait(l, [&] { return waiters_ == 0; });
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

template <typename O>
std::future<decltype(std::declval<O&>().Take())> PsClient::Submit(std::shared_ptr<O> op,
                                                                 std::vector<Outgoing> parts) {
  op->remaining = static_cast<int>(parts.size());
  // Headers are encoded before the lock; the request id is fixed here and kept by every retry.
  std::vector<std::pair<Part, uint64_t>> ready;
  ready.reserve(parts.size());
  for (auto& o : parts) {
    const uint64_t id = next_request_id_.fetch_add(1);
    o.message.header.request_id = id;
    ready.push_back({Part{op, o.shard, {}, ToFrames(o.message)}, id});
  }
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    Status refused;
    if (stopping_) {
      refused = Cancelled("client stopped");
    } else if (!running_) {
      refused = FailedPrecondition("client is not started");
    }
    if (ready.empty()) {
      op->done.store(true, std::memory_order_release);
    } else if (!refused.ok()) {
      for (auto& [part, id] : ready) CompleteLocked(std::move(part), refused);
    } else if (transport_owned_) {
      // Another thread is receiving on the transport: it sends these as soon as it wakes.
      for (auto& r : ready) outbox_.push_back(std::move(r));
      wake = true;
    } else {
      for (auto& [part, id] : ready) SendLocked(std::move(part), id);
    }
  }
  if (wake) transport_->Interrupt();
  // `this` is only touched while the op is not done, and Stop() (run by the destructor) completes
  // every op before it returns: a future waited on after the client is gone never touches it.
  return std::async(std::launch::deferred, [this, op = std::move(op)] {
    Wait(*op);
    return op->Take();
  });
}

void PsClient::SendLocked(Part part, uint64_t id) {
  part.deadline = Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms);
  Status s = transport_->Send({peers_[part.shard], part.frames});
  if (!s.ok() && !s.IsTransient()) {
    if (CompleteLocked(std::move(part), s)) cv_.notify_all();  // its waiter may be asleep (outbox)
  } else {
    pending_.emplace(id, std::move(part));  // a transient send failure is retried on the deadline
  }
}

void PsClient::FlushOutboxLocked() {
  while (!outbox_.empty()) {
    auto [part, id] = std::move(outbox_.front());
    outbox_.pop_front();
    SendLocked(std::move(part), id);
  }
}

bool PsClient::CompleteLocked(Part part, Result<Message> reply) {
  Op& op = *part.op;
  if (!reply.ok()) {
    if (op.error.ok()) op.error = reply.status().WithContext("shard " + std::to_string(part.shard));
  } else if (Status s = StatusFromReply(reply->header); !s.ok()) {
    if (op.error.ok()) op.error = s.WithContext("shard " + std::to_string(part.shard));
  } else if (op.error.ok()) {
    op.OnPart(part.shard, *reply);
  }
  if (--op.remaining != 0) return false;
  // After this store a waiter may take the result and drop the op without the lock: `op` is not
  // touched again here (only `part` still holds it).
  op.done.store(true, std::memory_order_release);
  return true;
}

void PsClient::OnReplyLocked(Result<Message> msg) {
  if (!msg.ok()) return;  // not a message of ours (the transport already framed it)
  auto it = pending_.find(msg->header.request_id);
  // A reply to no pending request (one that already timed out, or a duplicate) is dropped on purpose.
  if (it == pending_.end()) return;
  Part part = std::move(it->second);
  pending_.erase(it);
  if (CompleteLocked(std::move(part), std::move(*msg))) cv_.notify_all();
}

void PsClient::ExpireLocked() {
  if (pending_.empty()) return;
  const auto now = Clock::now();
  const auto timeout = std::chrono::milliseconds(options_.request_timeout_ms);
  bool finished = false;
  for (auto it = pending_.begin(); it != pending_.end();) {
    Part& part = it->second;
    if (part.deadline > now) {
      ++it;
      continue;
    }
    if (part.attempts < options_.max_retries) {
      // Same frames, same request id: the server recognizes a push it already applied.
      ++part.attempts;
      if (options_.on_retry) {
        options_.on_retry(part.shard, DeadlineExceeded(NoReply(part.shard, options_.request_timeout_ms)),
                          part.attempts);
      }
      part.deadline = now + timeout;
      (void)transport_->Send({peers_[part.shard], part.frames});
      ++it;
      continue;
    }
    Part done = std::move(part);
    it = pending_.erase(it);
    const int32_t shard = done.shard;
    finished |= CompleteLocked(std::move(done), DeadlineExceeded(NoReplyAfter(shard, options_.max_retries + 1,
                                                                               options_.request_timeout_ms)));
  }
  if (finished) cv_.notify_all();
}

void PsClient::Wait(Op& op) {
  if (op.done.load(std::memory_order_acquire)) return;
  std::unique_lock<std::mutex> l(mu_);
  ++waiters_;
  while (!op.done.load(std::memory_order_acquire)) {
    if (transport_owned_ || stopping_) {
      // Another thread receives (its replies may be ours), or Stop() is about to fail every op.
      cv_.wait(l);
      continue;
    }
    transport_owned_ = true;
    Lead(op, l);
    FlushOutboxLocked();  // nothing queued for the transport may outlive its owner
    transport_owned_ = false;
    cv_.notify_all();     // a waiter may take over
  }
  if (--waiters_ == 0 && stopping_) cv_.notify_all();
}

void PsClient::Lead(Op& op, std::unique_lock<std::mutex>& l) {
  while (!op.done.load(std::memory_order_acquire) && !stopping_) {
    FlushOutboxLocked();
    ExpireLocked();
    if (op.done.load(std::memory_order_acquire)) break;
    ReceiveOne(l, kTick);
  }
}

bool PsClient::ReceiveOne(std::unique_lock<std::mutex>& l, std::chrono::milliseconds timeout) {
  l.unlock();
  auto env = transport_->Recv(timeout);
  // Decoded before the lock is taken again: senders need it meanwhile.
  Result<Message> msg = env.ok() ? FromFrames(std::move(env->frames)) : Result<Message>(env.status());
  l.lock();
  if (!env.ok()) return false;
  OnReplyLocked(std::move(msg));
  return true;
}

void PsClient::IoLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stopping_) {
    io_cv_.wait_for(l, kTick);
    if (stopping_ || transport_owned_ || (pending_.empty() && outbox_.empty())) continue;
    // Nobody is receiving: read what has arrived, then resend or fail what is past its deadline.
    transport_owned_ = true;
    while (!stopping_ && ReceiveOne(l, std::chrono::milliseconds(0))) {
    }
    FlushOutboxLocked();
    ExpireLocked();
    transport_owned_ = false;
    cv_.notify_all();
  }
}

std::future<Result<PullResult>> PsClient::Pull(const std::string& table, std::span<const Key> keys) {
  auto op = std::make_shared<PullOp>(keys, shards_.size(), options_.dedupe_every_pull);
  std::vector<Outgoing> parts;
  for (int32_t s = 0; s < shards_.size(); ++s) {
    if (op->dedup.ShardSize(s) == 0) continue;
    Message m{MakeHeader(MsgType::kPull, table), {op->dedup.ShardKeys(s)}};
    m.header.num_keys = op->dedup.ShardSize(s);
    parts.push_back({s, std::move(m), op});
  }
  return Submit(std::move(op), std::move(parts));
}

std::future<Status> PsClient::Push(const std::string& table, std::span<const Key> keys,
                                   std::span<const float> grads, uint64_t step) {
  auto op = std::make_shared<StatusOp>();
  if (keys.empty()) return Submit(std::move(op), {});
  if (grads.size() % keys.size() != 0) {
    op->error = InvalidArgument("push of " + std::to_string(keys.size()) + " keys with " +
                                std::to_string(grads.size()) + " gradient values");
    return Submit(std::move(op), {});
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
  return Submit(std::move(op), std::move(parts));
}

std::future<Result<std::vector<float>>> PsClient::PullDense(const std::string& tensor) {
  auto op = std::make_shared<DenseOp>();
  std::vector<Outgoing> parts;
  parts.push_back({DenseShard(tensor), Message{MakeHeader(MsgType::kPullDense, tensor), {}}, op});
  return Submit(std::move(op), std::move(parts));
}

std::future<Status> PsClient::PushDense(const std::string& tensor, std::span<const float> grads, uint64_t step) {
  auto op = std::make_shared<StatusOp>();
  Message m{MakeHeader(MsgType::kPushDense, tensor),
            {Bytes::FromVector(std::vector<float>(grads.begin(), grads.end()))}};
  m.header.dim = static_cast<uint32_t>(grads.size());
  m.header.step = step;
  std::vector<Outgoing> parts;
  parts.push_back({DenseShard(tensor), std::move(m), op});
  return Submit(std::move(op), std::move(parts));
}

std::future<Status> PsClient::Checkpoint(const std::string& dir) {
  auto op = std::make_shared<StatusOp>();
  std::vector<Outgoing> parts;
  for (int32_t s = 0; s < shards_.size(); ++s) {
    Message m{MakeHeader(MsgType::kCheckpoint, ""), {}};
    m.header.meta = dir + "/shard-" + std::to_string(s);
    parts.push_back({s, std::move(m), op});
  }
  return Submit(std::move(op), std::move(parts));
}

std::future<Result<std::vector<std::string>>> PsClient::Stats() {
  auto op = std::make_shared<StatsOp>(shards_.size());
  std::vector<Outgoing> parts;
  for (int32_t s = 0; s < shards_.size(); ++s) parts.push_back({s, Message{MakeHeader(MsgType::kStats, ""), {}}, op});
  return Submit(std::move(op), std::move(parts));
}

std::future<Result<Message>> PsClient::Call(int32_t shard, Message request) {
  auto op = std::make_shared<CallOp>();
  if (shard < 0 || shard >= shards_.size()) {
    op->error = InvalidArgument("no shard " + std::to_string(shard));
    return Submit(std::move(op), {});
  }
  Header base = MakeHeader(request.header.type, request.header.table);
  request.header.job_id = base.job_id;
  request.header.sender = base.sender;
  request.header.auth = base.auth;
  request.header.epoch = base.epoch;
  request.header.worker_id = base.worker_id;
  std::vector<Outgoing> parts;
  parts.push_back({shard, std::move(request), op});
  return Submit(std::move(op), std::move(parts));
}

}  // namespace metaps::ps
