#include "ps/server.h"

#include "common/internal/profile_sink.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <nlohmann/json.hpp>

namespace metaps::ps {
namespace {

uint64_t NanosSince(std::chrono::steady_clock::time_point start) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
}

// Request-loop timing for performance work: on when METAPS_PROFILE is set (a file to append to,
// or "1" for stderr); totals about every 2 seconds.
struct LoopProfile {
  enum Stage { kRecv, kDecode, kPull, kPush, kOther, kSend, kCount };
  static constexpr const char* kNames[kCount] = {"recv(wait)", "decode", "handle.pull", "handle.push", "handle.other",
                                                 "send"};
  using Sink = internal::ProfileSink;
  const Sink sink = Sink::FromEnv();
  const bool on = sink.on;
  FILE* const out = sink.out;
  uint64_t last = on ? Sink::Now() : 0;
  uint64_t ns[kCount] = {}, count[kCount] = {}, cpu[kCount] = {};
  uint64_t cpu_last = 0;
  static uint64_t Now() { return Sink::Now(); }
  void Add(Stage s, uint64_t t0, uint64_t t1) {
    ns[s] += t1 - t0;
    ++count[s];
    const uint64_t c = Sink::ThreadCpuNow();
    if (cpu_last != 0) cpu[s] += c - cpu_last;
    cpu_last = c;
  }
  void MaybePrint(uint64_t now) {
    if (now - last < 2'000'000'000ull) return;
    std::fprintf(out, "[server profile %.1fs]\n", (now - last) / 1e9);
    last = now;
    for (int i = 0; i < kCount; ++i) {
      if (count[i] == 0) continue;
      std::fprintf(out, "  %-13s total %8.1f ms (cpu %8.1f)  per-call %8.3f ms (cpu %8.3f)  count %lu\n", kNames[i],
                   ns[i] / 1e6, cpu[i] / 1e6, ns[i] / 1e6 / count[i], cpu[i] / 1e6 / count[i], (unsigned long)count[i]);
      ns[i] = count[i] = cpu[i] = 0;
    }
    std::fflush(out);
  }
};

// Names longer than this are not echoed: a reply must stay under kMaxHeaderBytes whatever the
// request carried (found by fuzz_wire).
constexpr size_t kMaxEcho = 4096;

Message ReplyTo(const Header& request, MsgType type) {
  Message m;
  m.header.type = type;
  m.header.job_id = request.job_id.size() <= kMaxEcho ? request.job_id : std::string();
  m.header.request_id = request.request_id;
  m.header.epoch = request.epoch;
  m.header.table = request.table.size() <= kMaxEcho ? request.table : std::string();
  return m;
}

// Keys frame of a request, checked against the declared count.
Result<std::span<const Key>> KeysOf(const Message& m, size_t frame, Bytes* holder) {
  if (m.payload.size() <= frame) {
    return InvalidArgument(std::string(MsgTypeName(m.header.type)) + " needs a keys frame");
  }
  const Bytes& b = m.payload[frame];
  if (m.header.num_keys > kMaxKeysPerMessage) {
    return InvalidArgument("message declares " + std::to_string(m.header.num_keys) + " keys; the limit is " +
                           std::to_string(kMaxKeysPerMessage));
  }
  if (b.size() % sizeof(Key) != 0) {
    return InvalidArgument("keys frame of " + std::to_string(b.size()) + " bytes is not a whole number of u64 keys");
  }
  if (b.size() / sizeof(Key) != m.header.num_keys) {
    return InvalidArgument("header declares " + std::to_string(m.header.num_keys) + " keys but the frame holds " +
                           std::to_string(b.size() / sizeof(Key)));
  }
  *holder = b.Aligned<Key>();
  return holder->As<Key>();
}

Result<std::span<const float>> FloatsOf(const Message& m, size_t frame, uint64_t expected, Bytes* holder) {
  if (m.payload.size() <= frame) {
    return InvalidArgument(std::string(MsgTypeName(m.header.type)) + " needs a values frame");
  }
  const Bytes& b = m.payload[frame];
  if (b.size() % sizeof(float) != 0 || b.size() / sizeof(float) != expected) {
    return InvalidArgument("values frame of " + std::to_string(b.size()) + " bytes; expected " +
                           std::to_string(expected) + " float32 values");
  }
  *holder = b.Aligned<float>();
  return holder->As<float>();
}

}  // namespace

Server::Server(ServerOptions options, std::unique_ptr<Transport> transport, std::unique_ptr<ParamStore> store,
               Logger logger)
    : options_(std::move(options)),
      transport_(std::move(transport)),
      store_(std::move(store)),
      logger_(std::move(logger)) {}

Server::~Server() = default;

Result<std::string> Server::Bind() { return transport_->Bind(options_.bind); }

void Server::Stop() {
  stop_ = true;
  transport_->Interrupt();
}

Status Server::Serve() {
  logger_->info("shard {} serving", options_.shard_id);
  LoopProfile prof;
  // Between parts of a big push, the replies that became durable meanwhile leave (this thread
  // owns the transport; the hook runs on it).
  store_->SetProgressHook([this] { (void)SendDurable(false); });
  // The log thread wakes the loop's receive when a push becomes durable (or the log fails), so
  // that the loop waits for whichever comes first, the next request or the log, and the held
  // reply leaves as soon as it may.
  store_->SetDurableHook([transport = transport_.get()] { transport->Interrupt(); });
  struct HookReset {
    ParamStore* store;
    ~HookReset() {
      store->SetProgressHook(nullptr);
      store->SetDurableHook(nullptr);
    }
  } hook_reset{store_.get()};
  auto store_failed = [&](const Status& f) {
    // The memory holds a push the log does not: stop, so that a restart replays the log.
    logger_->critical("shard {} store failed, stopping: {}", options_.shard_id, f.ToString());
    return f;
  };
  while (!stop_) {
    // Replies whose pushes are durable go first. With replies held, the receive also ends when
    // the log makes one durable (the durable hook interrupts it): the loop goes on with the next
    // request while the log writes, and sends each reply once its push is durable.
    if (Status f = SendDurable(false); !f.ok()) return store_failed(f);
    const uint64_t t0 = prof.on ? LoopProfile::Now() : 0;
    auto env = transport_->Recv(held_.empty() ? std::chrono::milliseconds(500) : std::chrono::milliseconds(100));
    const uint64_t t1 = prof.on ? LoopProfile::Now() : 0;
    if (prof.on) prof.Add(LoopProfile::kRecv, t0, t1);
    if (!env.ok()) {
      if (env.status().code() == StatusCode::kDeadlineExceeded || env.status().code() == StatusCode::kCancelled) {
        // Woken (by the log, or by Stop): send what is durable. Timed out with replies held (the
        // log is slow, or failed and wakes nobody again): wait for the log itself, which answers
        // the held replies, with the error if it failed. (No store lock taken per wake-up.)
        const bool wait = env.status().code() == StatusCode::kDeadlineExceeded;
        if (Status f = SendDurable(wait); !f.ok()) return store_failed(f);
        continue;
      }
      logger_->error("receive failed: {}", env.status().ToString());
      // (With replies held the receive did not wait: wait for the log instead of spinning.)
      if (Status f = SendDurable(true); !f.ok()) return store_failed(f);
      continue;
    }
    std::string peer = std::move(env->peer);
    auto msg = FromFrames(std::move(env->frames));
    const uint64_t t2 = prof.on ? LoopProfile::Now() : 0;
    if (prof.on) prof.Add(LoopProfile::kDecode, t1, t2);
    Message reply;
    bool reply_needed = true, shutdown = false;
    uint64_t durable_at = 0;
    if (!msg.ok()) {
      ++counters_.requests;
      ++counters_.errors;
      logger_->warn("malformed message from {}: {}", peer.size() > 1 ? "a peer" : peer, msg.status().ToString());
      reply = ErrorReply(Header{}, msg.status());
    } else {
      reply = HandleDeferred(*msg, &reply_needed, &shutdown, &durable_at);
    }
    const uint64_t t3 = prof.on ? LoopProfile::Now() : 0;
    if (prof.on) {
      const MsgType type = msg.ok() ? msg->header.type : MsgType::kError;
      prof.Add(type == MsgType::kPull ? LoopProfile::kPull : type == MsgType::kPush ? LoopProfile::kPush : LoopProfile::kOther, t2, t3);
    }
    const bool error_reply = reply.header.type == MsgType::kError;
    if (reply_needed) {
      // Any answer may reflect every push applied so far (a pull's rows, a retried push's ack).
      durable_at = std::max(durable_at, store_->AppliedSeq());
      if (held_.empty() && durable_at <= store_->DurableSeq()) {
        SendReply(peer, reply);
      } else {
        held_.push_back({std::move(peer), std::move(reply), durable_at});
      }
    }
    if (prof.on) {
      const uint64_t t4 = LoopProfile::Now();
      prof.Add(LoopProfile::kSend, t3, t4);
      prof.MaybePrint(t4);
    }
    if (shutdown) break;
    const bool push = msg.ok() && (msg->header.type == MsgType::kPush || msg->header.type == MsgType::kPushDense);
    if (push && reply_needed && error_reply) {
      if (Status f = store_->Failure(); !f.ok()) {
        while (!held_.empty() && SendDurable(true).ok()) {
        }
        return store_failed(f);
      }
    }
  }
  while (!held_.empty()) {
    if (Status f = SendDurable(true); !f.ok()) return store_failed(f);
  }
  logger_->info("shard {} stopping; flushing", options_.shard_id);
  return store_->Flush();
}

void Server::SendReply(const std::string& peer, const Message& reply) {
  Status s = transport_->Send({peer, ToFrames(reply)});
  if (!s.ok()) logger_->warn("reply could not be sent: {}", s.ToString());
}

Status Server::SendDurable(bool wait) {
  while (!held_.empty()) {
    HeldReply& h = held_.front();
    if (h.durable_at > store_->DurableSeq()) {
      if (!wait) return Status::Ok();
      wait = false;
      if (Status f = store_->WaitDurable(h.durable_at); !f.ok()) {
        const uint64_t durable = store_->DurableSeq();
        for (HeldReply& r : held_) {
          if (r.durable_at > durable) {
            ++counters_.errors;
            r.reply = ErrorReply(r.reply.header, f);
          }
          SendReply(r.peer, r.reply);
        }
        held_.clear();
        return f;
      }
    }
    SendReply(h.peer, h.reply);
    held_.pop_front();
  }
  return Status::Ok();
}

Message Server::Handle(Message& request, bool* reply_needed, bool* shutdown) {
  uint64_t durable_at = 0;
  Message reply = HandleDeferred(request, reply_needed, shutdown, &durable_at);
  if (*reply_needed && reply.header.type != MsgType::kError) {
    if (Status f = store_->WaitDurable(std::max(durable_at, store_->AppliedSeq())); !f.ok()) {
      ++counters_.errors;
      return ErrorReply(reply.header, f);
    }
  }
  return reply;
}

Message Server::HandleDeferred(Message& request, bool* reply_needed, bool* shutdown, uint64_t* durable_at) {
  ++counters_.requests;
  *reply_needed = true;
  const Header& h = request.header;
  if ((!options_.job_id.empty() && h.job_id != options_.job_id) ||
      (!options_.auth.empty() && h.auth != options_.auth)) {
    ++counters_.rejected;
    *reply_needed = false;
    logger_->warn("dropped {} from '{}': {}", MsgTypeName(h.type), h.sender,
                  h.job_id != options_.job_id ? "job id '" + h.job_id + "' is not this job's"
                                              : std::string("wrong or missing job token"));
    return {};
  }
  auto r = Dispatch(request, shutdown, durable_at);
  if (!r.ok()) {
    ++counters_.errors;
    return ErrorReply(h, r.status());
  }
  return std::move(r).value();
}

Result<Message> Server::Dispatch(Message& request, bool* shutdown, uint64_t* durable_at) {
  switch (request.header.type) {
    case MsgType::kPull: return HandlePull(request);
    case MsgType::kPush:
    case MsgType::kPushDense: {
      // The store records (sender, request id) atomically with the push's durable log record.
      if (store_->PushApplied(request.header.sender, request.header.request_id)) {
        ++counters_.duplicate_pushes;
        return ReplyTo(request.header, MsgType::kPushAck);
      }
      return request.header.type == MsgType::kPush ? HandlePush(request, durable_at) : HandlePushDense(request);
    }
    case MsgType::kPullDense: return HandlePullDense(request);
    case MsgType::kCheckpoint: return HandleCheckpoint(request);
    case MsgType::kStats: return HandleStats(request);
    case MsgType::kPing: return ReplyTo(request.header, MsgType::kPong);
    case MsgType::kShutdown:
      *shutdown = true;
      return ReplyTo(request.header, MsgType::kShutdownAck);
    default:
      return Unimplemented(std::string("a server does not handle ") + MsgTypeName(request.header.type) +
                           " messages");
  }
}

Result<Message> Server::HandlePull(Message& request) {
  const TableSpec* t = store_->FindTable(request.header.table);
  if (!t) return NotFound("no table '" + request.header.table + "'");
  if (t->dense) return InvalidArgument("'" + t->name + "' is a dense tensor; use pullDense");
  Bytes hold;
  METAPS_ASSIGN_OR_RETURN(auto keys, KeysOf(request, 0, &hold));
  // Uninitialized: Pull writes every value (no zero-fill of a buffer about to be overwritten).
  // The transport sends it without a copy and frees it once sent.
  const size_t n = keys.size() * static_cast<size_t>(t->dim);
  std::shared_ptr<float[]> values(new float[n == 0 ? 1 : n]);
  const auto start = std::chrono::steady_clock::now();
  Status pulled = store_->Pull(t->name, keys, values.get());
  counters_.pull_store_ns += NanosSince(start);
  METAPS_RETURN_IF_ERROR(pulled);
  counters_.rows_pulled += keys.size();
  Message reply = ReplyTo(request.header, MsgType::kPullReply);
  reply.header.num_keys = keys.size();
  reply.header.dim = t->dim;
  float* data = values.get();
  reply.payload.emplace_back(data, n * sizeof(float), std::shared_ptr<const void>(std::move(values), data));
  return reply;
}

Result<Message> Server::HandlePush(Message& request, uint64_t* durable_at) {
  const TableSpec* t = store_->FindTable(request.header.table);
  if (!t) return NotFound("no table '" + request.header.table + "'");
  if (t->dense) return InvalidArgument("'" + t->name + "' is a dense tensor; use pushDense");
  if (request.header.dim != t->dim) {
    return InvalidArgument("push declares dim " + std::to_string(request.header.dim) + " but table '" + t->name +
                           "' has dim " + std::to_string(t->dim));
  }
  Bytes hk, hv;
  METAPS_ASSIGN_OR_RETURN(auto keys, KeysOf(request, 0, &hk));
  METAPS_ASSIGN_OR_RETURN(auto grads, FloatsOf(request, 1, keys.size() * static_cast<uint64_t>(t->dim), &hv));
  const PushOrigin origin{request.header.sender, request.header.request_id};
  const auto start = std::chrono::steady_clock::now();
  // The frames (not copies: the transport's buffers) stay alive until the log thread has
  // written the push's record; the reply waits for that (Serve).
  auto hold = std::make_shared<std::pair<Bytes, Bytes>>(hk, hv);
  Status pushed = store_->PushDeferred(t->name, keys, grads, request.header.step, &origin, std::move(hold), durable_at);
  counters_.push_store_ns += NanosSince(start);
  METAPS_RETURN_IF_ERROR(pushed);
  counters_.rows_pushed += keys.size();
  Message reply = ReplyTo(request.header, MsgType::kPushAck);
  reply.header.num_keys = keys.size();
  return reply;
}

Result<Message> Server::HandlePullDense(Message& request) {
  const TableSpec* t = store_->FindTable(request.header.table);
  if (!t) return NotFound("no tensor '" + request.header.table + "'");
  if (!t->dense) return InvalidArgument("'" + t->name + "' is a sparse table; use pull");
  std::vector<float> values(t->dim);
  METAPS_RETURN_IF_ERROR(store_->PullDense(t->name, values.data()));
  Message reply = ReplyTo(request.header, MsgType::kPullDenseReply);
  reply.header.dim = t->dim;
  reply.payload.push_back(Bytes::FromVector(std::move(values)));
  return reply;
}

Result<Message> Server::HandlePushDense(Message& request) {
  const TableSpec* t = store_->FindTable(request.header.table);
  if (!t) return NotFound("no tensor '" + request.header.table + "'");
  if (!t->dense) return InvalidArgument("'" + t->name + "' is a sparse table; use push");
  Bytes hv;
  METAPS_ASSIGN_OR_RETURN(auto grads, FloatsOf(request, 0, t->dim, &hv));
  const PushOrigin origin{request.header.sender, request.header.request_id};
  METAPS_RETURN_IF_ERROR(store_->PushDense(t->name, grads, request.header.step, &origin));
  return ReplyTo(request.header, MsgType::kPushAck);
}

Result<Message> Server::HandleCheckpoint(Message& request) {
  if (request.header.meta.empty()) return InvalidArgument("checkpoint needs a target directory in meta");
  METAPS_RETURN_IF_ERROR(store_->Checkpoint(request.header.meta));
  logger_->info("checkpoint written to {}", request.header.meta);
  Message reply = ReplyTo(request.header, MsgType::kCheckpointAck);
  reply.header.meta = request.header.meta;
  return reply;
}

nlohmann::json StoreStatsJson(const StoreStats& s) {
  return {
      {"rows_cached", s.rows_cached},
      {"cache_bytes", s.cache_bytes},
      {"rows_dirty", s.rows_dirty},
      {"cache_hits", s.cache_hits},
      {"cache_misses", s.cache_misses},
      {"log_records", s.log_records},
      {"writebacks", s.writebacks},
      {"rows_written", s.rows_written},
      {"log_records_pending", s.log_records_pending},
      {"writeback_errors", s.writeback_errors},
      {"replayed_records", s.replayed_records},
      {"log_segments_created", s.log_segments_created},
      {"log_segments_reused", s.log_segments_reused},
      {"log_syncs", s.log_syncs},
      {"helper_threads", s.helper_threads},
      {"helper_joins", s.helper_joins},
      {"log_direct_io", s.log_direct_io},
  };
}

Result<Message> Server::HandleStats(Message& request) {
  nlohmann::json j = StoreStatsJson(store_->Stats());
  j.update(nlohmann::json{
      {"shard", options_.shard_id},
      {"requests", counters_.requests},
      {"errors", counters_.errors},
      {"rejected", counters_.rejected},
      {"rows_pulled", counters_.rows_pulled},
      {"rows_pushed", counters_.rows_pushed},
      {"duplicate_pushes", counters_.duplicate_pushes},
      {"pull_store_ns", counters_.pull_store_ns},
      {"push_store_ns", counters_.push_store_ns},
  });
  Message reply = ReplyTo(request.header, MsgType::kStatsReply);
  reply.header.meta = j.dump();
  return reply;
}

}  // namespace metaps::ps
