// `metaps bench ps`: parameter-server throughput against raw ZeroMQ and raw RocksDB, in one run.
//
// One server process (`metaps server`) and this process as the client, on loopback. The raw
// reference is the same exchange (same request and reply sizes, same pipelining window) with a
// process that does no work: `metaps bench ps-raw-server` answers pulls with a preallocated reply.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>
#include <atomic>
#include <deque>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <zmq.hpp>

#include "common/files.h"
#include "common/keys.h"
#include "common/prefetch.h"
#include "common/subprocess.h"
#include "common/zmq_transport.h"
#include "launch/cli.h"
#include "ps/client.h"
#include "ps/optimizer.h"
#include "ps/param_store.h"

namespace metaps::launch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct BenchFlags {
  bool json = false;
  int64_t dim = 32;
  int64_t batch = 10000;
  int64_t resident_keys = 200000;
  int64_t over_cache_keys = 1000000;
  int64_t window = 4;
  double seconds = 1.0;
  double warmup_seconds = 2.0;
  int64_t rounds = 3;
  double zipf_s = 0.99;
  std::string optimizer = "adam";
  std::string work_dir;
  std::string cases;  // comma-separated subset of the case names; empty: all
  std::vector<std::string> server_sets;  // extra [server] settings, "key=value"
  // ps-raw-server
  std::string endpoint_file;
  // load
  int64_t workers = 8;
  int64_t load_cache_bytes = 16 << 20;
  double load_seconds = 2.0;
};

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Key generators: ranks mapped through a bijective mix so hot keys spread across shards.
class KeyGen {
 public:
  KeyGen(int64_t space, bool zipf, double s, uint64_t seed) : space_(space), zipf_(zipf), rng_(seed) {
    if (zipf) {
      cdf_.resize(space);
      double acc = 0;
      for (int64_t i = 0; i < space; ++i) cdf_[i] = (acc += 1.0 / std::pow(static_cast<double>(i + 1), s));
      for (auto& c : cdf_) c /= acc;
    }
  }
  void Fill(std::vector<Key>& keys) {
    std::uniform_real_distribution<double> u(0, 1);
    std::uniform_int_distribution<int64_t> ui(0, space_ - 1);
    for (auto& k : keys) {
      int64_t r = zipf_ ? std::lower_bound(cdf_.begin(), cdf_.end(), u(rng_)) - cdf_.begin() : ui(rng_);
      k = Mix64(static_cast<uint64_t>(std::min<int64_t>(r, space_ - 1)));
    }
  }

 private:
  int64_t space_;
  bool zipf_;
  std::mt19937_64 rng_;
  std::vector<double> cdf_;
};

// One timed phase: rows/s and CPU milliseconds per request (all threads) of this process and of
// the server process.
struct Phase {
  double rate = 0, client_cpu_ms = 0, server_cpu_ms = 0;
};

// Medians over rounds of each phase of a case, and of the per-round ratios to raw ZeroMQ.
struct Rates {
  double pull = 0, push = 0;
  double pull_client_cpu_ms = 0, pull_server_cpu_ms = 0, push_client_cpu_ms = 0, push_server_cpu_ms = 0;
  double pull_ratio = 0, push_ratio = 0;  // store / raw ZeroMQ, median of the rounds' ratios
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// User + system CPU seconds of a process so far (/proc/<pid>/stat; 0 when unreadable).
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  // Fields after the command name (which is in parentheses and may hold spaces).
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Times `body` (which returns the rows it moved, or an error) and the CPU both processes spent.
template <typename F>
Result<Phase> TimePhase(pid_t server_pid, int64_t batch, F&& body) {
  const double client_cpu0 = ProcessCpuSeconds(0), server_cpu0 = ProcessCpuSeconds(server_pid);
  const auto start = Clock::now();
  METAPS_ASSIGN_OR_RETURN(int64_t rows, body());
  Phase p;
  p.rate = rows / Seconds(start, Clock::now());
  const double requests = std::max(1.0, static_cast<double>(rows) / batch);
  p.client_cpu_ms = 1e3 * (ProcessCpuSeconds(0) - client_cpu0) / requests;
  p.server_cpu_ms = 1e3 * (ProcessCpuSeconds(server_pid) - server_cpu0) / requests;
  return p;
}

// Pulls (or pushes) for ~seconds through the client with `window` requests in flight.
Result<Phase> MeasureStore(ps::PsClient& client, const std::vector<std::vector<Key>>& batches,
                           const std::vector<float>& grads, bool push, const BenchFlags& f, double seconds,
                           pid_t server_pid, uint64_t* step) {
  return TimePhase(server_pid, f.batch, [&]() -> Result<int64_t> {
    std::deque<std::future<Status>> push_q;
    std::deque<std::future<Result<ps::PullResult>>> pull_q;
    int64_t rows = 0;
    size_t i = 0;
    auto finish_one = [&]() -> Status {
      if (push) {
        Status s = push_q.front().get();
        push_q.pop_front();
        METAPS_RETURN_IF_ERROR(s);
      } else {
        auto res = pull_q.front().get();
        pull_q.pop_front();
        METAPS_RETURN_IF_ERROR(res.status());
      }
      rows += f.batch;
      return Status::Ok();
    };
    const auto start = Clock::now();
    while (Seconds(start, Clock::now()) < seconds) {
      const auto& keys = batches[i++ % batches.size()];
      if (push) push_q.push_back(client.Push("emb", keys, grads, ++*step));
      else pull_q.push_back(client.Pull("emb", keys));
      if (static_cast<int64_t>(pull_q.size() + push_q.size()) >= f.window) METAPS_RETURN_IF_ERROR(finish_one());
    }
    while (!pull_q.empty() || !push_q.empty()) METAPS_RETURN_IF_ERROR(finish_one());
    return rows;
  });
}

// The same exchange over plain cppzmq to a server that does no work, on one connection.
//
// With `batches`, the same single-threaded loop is a minimal client of a real server: it sends the
// case's own key batches (duplicates included, as drawn) with the headers a client must send (a
// sender and a fresh request id per request, so no push is taken for a retry) and checks every
// reply (an error reply, or a pull reply of the wrong size, fails the phase). No dedupe, no
// hand-off to an I/O thread, no copy of the reply: what the server sustains on its own, to set
// beside the client library's figure.
class RawExchange {
 public:
  RawExchange(const std::string& endpoint, const BenchFlags& f,
              const std::vector<std::vector<Key>>* batches = nullptr)
      : f_(f), batches_(batches), ctx_(1), s_(ctx_, zmq::socket_type::dealer) {
    s_.connect(endpoint);
    Header pull_h{.type = MsgType::kPull, .table = "emb"};
    pull_h.num_keys = f.batch;
    Header push_h = pull_h;
    push_h.type = MsgType::kPush;
    push_h.dim = static_cast<uint32_t>(f.dim);
    pull_hb_ = EncodeHeader(pull_h);
    push_hb_ = EncodeHeader(push_h);
    keys_.resize(f.batch);
    for (int64_t i = 0; i < f.batch; ++i) keys_[i] = Mix64(i);
    grads_.assign(f.batch * f.dim, 0.001f);
  }

  Result<Phase> Measure(bool push, double seconds, pid_t server_pid) {
    return TimePhase(server_pid, f_.batch, [&]() -> Result<int64_t> {
      int64_t inflight = 0, rows = 0;
      Status bad;
      auto recv_one = [&] {
        zmq::message_t m;
        Bytes header;
        size_t frames = 0;
        do {
          (void)s_.recv(m);
          if (batches_ && frames == 0) header = Bytes::Copy(m.data(), m.size());
          ++frames;
        } while (m.more());
        --inflight;
        rows += f_.batch;
        if (batches_ && bad.ok()) bad = CheckReply(header, push ? 0 : m.size(), frames, push);
      };
      const auto start = Clock::now();
      while (Seconds(start, Clock::now()) < seconds && bad.ok()) {
        Bytes hb = push ? push_hb_ : pull_hb_;
        if (batches_) {
          Header h{.type = push ? MsgType::kPush : MsgType::kPull, .table = "emb"};
          h.sender = "bench-minimal#" + std::to_string(getpid());
          h.request_id = ++request_id_;
          h.num_keys = f_.batch;
          if (push) {
            h.dim = static_cast<uint32_t>(f_.dim);
            h.step = request_id_;
          }
          hb = EncodeHeader(h);
        }
        // Each request builds its frames like the client does: keys copied into a fresh buffer.
        std::vector<Key> k = batches_ ? (*batches_)[next_batch_++ % batches_->size()] : keys_;
        s_.send(zmq::message_t(hb.data(), hb.size()), zmq::send_flags::sndmore);
        auto* kv = new std::vector<Key>(std::move(k));
        zmq::message_t km(kv->data(), kv->size() * sizeof(Key), [](void*, void* h) {
          delete static_cast<std::vector<Key>*>(h);
        }, kv);
        if (!push) {
          s_.send(km, zmq::send_flags::none);
        } else {
          s_.send(km, zmq::send_flags::sndmore);
          auto* gv = new std::vector<float>(grads_);
          zmq::message_t gm(gv->data(), gv->size() * sizeof(float), [](void*, void* h) {
            delete static_cast<std::vector<float>*>(h);
          }, gv);
          s_.send(gm, zmq::send_flags::none);
        }
        if (++inflight >= f_.window) recv_one();
      }
      while (inflight > 0) recv_one();
      if (!bad.ok()) return bad.WithContext("minimal client");
      return rows;
    });
  }

 private:
  Status CheckReply(const Bytes& header, size_t payload_bytes, size_t frames, bool push) const {
    METAPS_ASSIGN_OR_RETURN(Header h, DecodeHeader(header));
    METAPS_RETURN_IF_ERROR(StatusFromReply(h));
    const size_t want = static_cast<size_t>(f_.batch * f_.dim) * sizeof(float);
    if (!push && (frames != 2 || payload_bytes != want)) {
      return Internal("pull reply of " + std::to_string(frames) + " frames, " + std::to_string(payload_bytes) +
                      " bytes; expected 2 frames, " + std::to_string(want) + " bytes");
    }
    return Status::Ok();
  }

  const BenchFlags& f_;
  const std::vector<std::vector<Key>>* batches_;
  uint64_t request_id_ = 0;
  size_t next_batch_ = 0;
  zmq::context_t ctx_;
  zmq::socket_t s_;
  Bytes pull_hb_, push_hb_;
  std::vector<Key> keys_;
  std::vector<float> grads_;
};

double MeasureRawRocksDb(const std::string& dir, size_t row_bytes, int64_t batch, double seconds) {
  rocksdb::Options o;
  o.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(o, dir, &raw).ok()) return 0;
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string value(row_bytes, 'x');
  std::mt19937_64 rng(1);
  int64_t rows = 0;
  auto start = Clock::now();
  while (Seconds(start, Clock::now()) < seconds) {
    rocksdb::WriteBatch wb;
    for (int64_t i = 0; i < batch; ++i) {
      uint64_t k = rng();
      wb.Put(rocksdb::Slice(reinterpret_cast<const char*>(&k), sizeof(k)), value);
    }
    if (!db->Write(rocksdb::WriteOptions(), &wb).ok()) return 0;
    rows += batch;
  }
  return rows / Seconds(start, Clock::now());
}

// The row-memory floor of one request on this machine: `batch` rows picked uniformly from `rows`
// slots of `stride` bytes (2 MiB-aligned, huge pages, as the row cache keeps them), prefetched as
// far ahead as the store does, and either
//   gather: the first `dim` floats of each copied out, in order (what a pull must read), or
//   update: all `row_floats` floats of each read, changed and written back (what an optimizer
//           step over weights and state must move).
// No index, no locks, no network, one thread: the store's part of a request cannot go below it.
// Milliseconds per request, the median of `reps` requests.
struct MemoryFloor {
  double gather_ms = 0, update_ms = 0;
};

MemoryFloor MeasureMemoryFloor(int64_t rows, size_t stride, uint32_t dim, uint32_t row_floats, int64_t batch,
                               int reps) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes = (static_cast<size_t>(rows) * stride + kHuge - 1) & ~(kHuge - 1);
  std::unique_ptr<std::byte, decltype(&std::free)> mem(static_cast<std::byte*>(std::aligned_alloc(kHuge, bytes)),
                                                        &std::free);
  if (!mem) return {};
  (void)madvise(mem.get(), bytes, MADV_HUGEPAGE);
  std::memset(mem.get(), 0, bytes);  // fault every page in before timing
  std::vector<float> out(static_cast<size_t>(batch) * dim);
  std::vector<uint32_t> idx(batch);
  std::mt19937_64 rng(7);
  auto row = [&](int64_t i) { return reinterpret_cast<float*>(mem.get() + size_t{idx[i]} * stride); };
  auto prefetch = [](const float* p, size_t floats) { PrefetchBytes(p, floats * 4); };
  // As far ahead as the store prefetches: a pull's gather 24 rows, the optimizer 24.
  constexpr int64_t kGatherAhead = 24, kUpdateAhead = 24;
  std::vector<double> gather, update;
  for (int rep = 0; rep < reps; ++rep) {
    for (auto& x : idx) x = static_cast<uint32_t>(rng() % static_cast<uint64_t>(rows));
    auto t0 = Clock::now();
    for (int64_t i = 0; i < batch; ++i) {
      if (i + kGatherAhead < batch) prefetch(row(i + kGatherAhead), dim);
      std::memcpy(&out[static_cast<size_t>(i) * dim], row(i), size_t{dim} * 4);
    }
    auto t1 = Clock::now();
    for (auto& x : idx) x = static_cast<uint32_t>(rng() % static_cast<uint64_t>(rows));
    auto t2 = Clock::now();
    for (int64_t i = 0; i < batch; ++i) {
      if (i + kUpdateAhead < batch) prefetch(row(i + kUpdateAhead), row_floats);
      float* p = row(i);
      for (uint32_t k = 0; k < row_floats; ++k) p[k] = p[k] * 0.999f + 1e-6f;
    }
    auto t3 = Clock::now();
    gather.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    update.push_back(std::chrono::duration<double, std::milli>(t3 - t2).count());
  }
  volatile float sink = out[out.size() / 2];
  (void)sink;
  return {Median(gather), Median(update)};
}

struct ServerProc {
  Subprocess proc;
  std::string endpoint;
};

Result<ServerProc> StartServer(const BenchFlags& f, const std::string& name, int64_t cache_bytes) {
  fs::path dir = fs::path(f.work_dir) / name;
  fs::create_directories(dir);
  std::string cfg = (dir / "job.toml").string();
  std::string extra;
  for (const auto& kv : f.server_sets) extra += kv + "\n";
  std::ofstream(cfg) << "[server]\nlog_level = \"warn\"\n" << extra << "\n[[tables]]\nname = \"emb\"\ndim = " << f.dim
                     << "\noptimizer = \"" << f.optimizer << "\"\nlr = 0.01\n";
  std::string ep_file = (dir / "endpoint").string();
  METAPS_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn({SelfExecutable(), "server", "--config", cfg, "--data-dir",
                                                           (dir / "db").string(), "--cache-bytes",
                                                           std::to_string(cache_bytes), "--endpoint-file", ep_file},
                                                          (dir / "server.log").string()));
  METAPS_ASSIGN_OR_RETURN(std::string ep, WaitForFileLine(ep_file, std::chrono::seconds(30), &p));
  return ServerProc{std::move(p), ep};
}

Result<std::unique_ptr<ps::PsClient>> Connect(const std::string& endpoint) {
  auto c = std::make_unique<ps::PsClient>(ps::ClientOptions{.sender = "bench"}, std::make_unique<ZmqTransport>(),
                                          ShardMap{0, {endpoint}});
  METAPS_RETURN_IF_ERROR(c->Start());
  return c;
}

// Pushes every key of the space once so the table holds all its rows.
Status Populate(ps::PsClient& c, int64_t space, const BenchFlags& f) {
  std::vector<Key> keys(f.batch);
  std::vector<float> grads(f.batch * f.dim, 0.001f);
  for (int64_t start = 0; start < space; start += f.batch) {
    int64_t n = std::min(f.batch, space - start);
    keys.resize(n);
    for (int64_t i = 0; i < n; ++i) keys[i] = Mix64(static_cast<uint64_t>(start + i));
    METAPS_RETURN_IF_ERROR(c.Push("emb", keys, std::span<const float>(grads.data(), n * f.dim)).get());
  }
  return Status::Ok();
}

int RunBench(BenchFlags f) {
  if (f.work_dir.empty()) f.work_dir = (fs::temp_directory_path() / ("metaps-bench-ps-" + std::to_string(getpid()))).string();
  fs::create_directories(f.work_dir);
  auto fail = [&](const Status& s) {
    std::cerr << "bench ps: " << s.ToString() << "\n";
    return 1;
  };
  // Row bytes as the store keeps them for adam: weights + 2 moments + 24 bytes of metadata.
  auto kind = ps::ParseOptimizerKind(f.optimizer);
  if (!kind.ok()) return fail(kind.status());
  auto opt = ps::Optimizer::Create(ps::DefaultOptimizerSpec(*kind));
  if (!opt.ok()) return fail(opt.status());
  const uint32_t row_floats = static_cast<uint32_t>(f.dim) + (*opt)->StateFloats(static_cast<uint32_t>(f.dim));
  size_t row_bytes = size_t{row_floats} * 4 + 24;
  nlohmann::json out;

  // Raw ZeroMQ reference: one no-work server for the whole run. Every round of every case times
  // it right before the store, op by op, so that both see the same machine (on a shared box the
  // rates drift by 2x within a minute); the ratios are medians of the rounds' ratios.
  std::string raw_ep_file = f.work_dir + "/raw-endpoint";
  auto raw = Subprocess::Spawn({SelfExecutable(), "bench", "ps-raw-server", "--endpoint-file", raw_ep_file,
                                "--dim", std::to_string(f.dim), "--batch", std::to_string(f.batch)},
                               f.work_dir + "/raw-server.log");
  if (!raw.ok()) return fail(raw.status());
  auto raw_ep = WaitForFileLine(raw_ep_file, std::chrono::seconds(30), &*raw);
  if (!raw_ep.ok()) return fail(raw_ep.status());
  RawExchange raw_x(*raw_ep, f);
  auto stop_raw = [&] {
    (void)raw->Signal(SIGTERM);
    (void)raw->Wait(std::chrono::seconds(5));
  };
  double raw_rocks = MeasureRawRocksDb(f.work_dir + "/raw-rocksdb", row_bytes, f.batch, f.seconds);
  std::cerr << "raw rocksdb WriteBatch " << raw_rocks << " rows/s of " << row_bytes << " bytes\n";
  const size_t slot_bytes = ps::ParamStore::SlotBytes(row_floats);
  const MemoryFloor floor = MeasureMemoryFloor(f.resident_keys, slot_bytes, static_cast<uint32_t>(f.dim), row_floats,
                                               f.batch, 60);
  std::cerr << "row-memory floor (" << f.resident_keys << " slots of " << slot_bytes << " bytes): gather "
            << floor.gather_ms << " ms, update " << floor.update_ms << " ms per request\n";

  struct Case {
    std::string name;
    bool zipf;
    bool over_cache;
  };
  std::vector<Case> cases = {{"uniform_resident", false, false},
                             {"zipf_resident", true, false},
                             {"zipf_over_cache", true, true},
                             {"uniform_over_cache", false, true}};
  std::map<std::string, Rates> results, raw_results;
  auto cpu_json = [](const Rates& r) {
    return nlohmann::json{{"pull_client", r.pull_client_cpu_ms}, {"pull_server", r.pull_server_cpu_ms},
                          {"push_client", r.push_client_cpu_ms}, {"push_server", r.push_server_cpu_ms}};
  };
  for (const auto& c : cases) {
    if (!f.cases.empty() && ("," + f.cases + ",").find("," + c.name + ",") == std::string::npos) continue;
    int64_t space = c.over_cache ? f.over_cache_keys : f.resident_keys;
    // Resident: room for everything twice over. Over cache: a tenth of the table.
    int64_t cache = c.over_cache ? static_cast<int64_t>(space * row_bytes / 10) : static_cast<int64_t>(space * row_bytes * 2 + (64 << 20));
    auto server = StartServer(f, c.name, cache);
    if (!server.ok()) return stop_raw(), fail(server.status());
    auto client = Connect(server->endpoint);
    if (!client.ok()) return stop_raw(), fail(client.status());
    if (Status s = Populate(**client, space, f); !s.ok()) return stop_raw(), fail(s);
    KeyGen gen(space, c.zipf, f.zipf_s, 42);
    std::vector<std::vector<Key>> batches(16, std::vector<Key>(f.batch));
    for (auto& b : batches) gen.Fill(b);
    std::vector<float> grads(f.batch * f.dim, 0.001f);
    uint64_t step = 0;
    // The headline case also times a minimal client against the same server (see RawExchange):
    // the server's own rate, apart from the client library's.
    std::unique_ptr<RawExchange> minimal;
    if (c.name == "uniform_resident") minimal = std::make_unique<RawExchange>(server->endpoint, f, &batches);
    // One pass of {raw pull, store pull, raw push, store push}, `seconds` each, into `into`, and
    // with `minimal_into`, the minimal client's pull and push after the store's.
    auto pass = [&](double seconds, std::vector<Phase>* into, std::vector<Phase>* minimal_into) -> Status {
      for (int op = 0; op < 2; ++op) {
        const bool push = op == 1;
        auto rp = raw_x.Measure(push, seconds, raw->pid());
        if (!rp.ok()) return rp.status();
        auto sp = MeasureStore(**client, batches, grads, push, f, seconds, server->proc.pid(), &step);
        if (!sp.ok()) return sp.status();
        into[2 * op].push_back(*rp);
        into[2 * op + 1].push_back(*sp);
        if (minimal && minimal_into) {
          auto mp = minimal->Measure(push, seconds, server->proc.pid());
          if (!mp.ok()) return mp.status();
          minimal_into[op].push_back(*mp);
        }
      }
      return Status::Ok();
    };
    // Warm-up, untimed in the figures (its rates are reported apart): a new server's first
    // gigabyte or so of pushes creates the push log's segment files, whose fresh page-cache pages
    // cost 3-40x a recycled segment's per append on this VM (docs/performance-log.md), and the raw
    // exchange's buffers settle too. The rounds then see what a long-running server sees.
    std::vector<Phase> warm[4];
    if (f.warmup_seconds > 0) {
      if (Status s = pass(f.warmup_seconds, warm, nullptr); !s.ok()) return stop_raw(), fail(s);
    }
    // rounds x {raw pull, store pull, raw push, store push}
    std::vector<Phase> phases[4];
    std::vector<Phase> minimal_phases[2];  // pull, push
    auto stats_before = (*client)->Stats().get();
    for (int64_t round = 0; round < f.rounds; ++round) {
      if (Status s = pass(f.seconds, phases, minimal_phases); !s.ok()) return stop_raw(), fail(s);
    }
    minimal.reset();
    auto stats = (*client)->Stats().get();
    (*client)->Stop();
    (void)server->proc.Signal(SIGTERM);
    (void)server->proc.Wait(std::chrono::seconds(60));
    // Median of a field over the rounds of one phase; median of the rounds' own rate ratios.
    auto median_of = [](const std::vector<Phase>& rounds, double Phase::*field) {
      std::vector<double> v;
      for (const auto& p : rounds) v.push_back(p.*field);
      return Median(v);
    };
    auto ratio_of = [](const std::vector<Phase>& num, const std::vector<Phase>& den) {
      std::vector<double> v;
      for (size_t i = 0; i < num.size(); ++i) v.push_back(num[i].rate / den[i].rate);
      return Median(v);
    };
    auto median = [&](int k, double Phase::*field) { return median_of(phases[k], field); };
    auto ratio = [&](int k) { return ratio_of(phases[k], phases[k - 1]); };
    Rates raw_r, r;
    for (int op = 0; op < 2; ++op) {
      for (Rates* x : {&raw_r, &r}) {
        const int k = 2 * op + (x == &r ? 1 : 0);
        (op == 0 ? x->pull : x->push) = median(k, &Phase::rate);
        (op == 0 ? x->pull_client_cpu_ms : x->push_client_cpu_ms) = median(k, &Phase::client_cpu_ms);
        (op == 0 ? x->pull_server_cpu_ms : x->push_server_cpu_ms) = median(k, &Phase::server_cpu_ms);
      }
    }
    r.pull_ratio = ratio(1);
    r.push_ratio = ratio(3);
    results[c.name] = r;
    raw_results[c.name] = raw_r;
    nlohmann::json rounds = nlohmann::json::array();
    for (size_t i = 0; i < phases[0].size(); ++i) {
      rounds.push_back({{"raw_pull", phases[0][i].rate}, {"pull", phases[1][i].rate},
                        {"raw_push", phases[2][i].rate}, {"push", phases[3][i].rate}});
    }
    nlohmann::json cj = {{"keys", space}, {"cache_bytes", cache}, {"pull_rows_per_s", r.pull},
                         {"push_rows_per_s", r.push}, {"pull_ratio_to_raw_zmq", r.pull_ratio},
                         {"push_ratio_to_raw_zmq", r.push_ratio},
                         {"raw_zmq_pull_rows_per_s", raw_r.pull}, {"raw_zmq_push_rows_per_s", raw_r.push},
                         {"cpu_ms_per_request", cpu_json(r)}, {"raw_zmq_cpu_ms_per_request", cpu_json(raw_r)},
                         {"rounds", rounds}};
    if (!minimal_phases[0].empty()) {
      // Each ratio against the same round's raw exchange, as for the library's figures.
      nlohmann::json mj;
      for (int op = 0; op < 2; ++op) {
        const std::vector<Phase>& m = minimal_phases[op];
        const std::string name = op == 0 ? "pull" : "push";
        mj[name + "_rows_per_s"] = median_of(m, &Phase::rate);
        mj[name + "_ratio_to_raw_zmq"] = ratio_of(m, phases[2 * op]);
        mj["cpu_ms_per_request"][name + "_client"] = median_of(m, &Phase::client_cpu_ms);
        mj["cpu_ms_per_request"][name + "_server"] = median_of(m, &Phase::server_cpu_ms);
      }
      cj["minimal_client"] = mj;
      out["minimal_client_pull_ratio_to_raw_zmq"] = mj["pull_ratio_to_raw_zmq"];
      out["minimal_client_push_ratio_to_raw_zmq"] = mj["push_ratio_to_raw_zmq"];
      std::cerr << c.name << ": minimal client (one thread; no dedupe, I/O thread or copy-out) against the same "
                << "server: pull " << mj["pull_rows_per_s"].get<double>() << " rows/s ("
                << mj["pull_ratio_to_raw_zmq"].get<double>() << "x raw), push " << mj["push_rows_per_s"].get<double>()
                << " rows/s (" << mj["push_ratio_to_raw_zmq"].get<double>() << "x raw); cpu ms/request: pull client "
                << mj["cpu_ms_per_request"]["pull_client"].get<double>() << " server "
                << mj["cpu_ms_per_request"]["pull_server"].get<double>() << ", push client "
                << mj["cpu_ms_per_request"]["push_client"].get<double>() << " server "
                << mj["cpu_ms_per_request"]["push_server"].get<double>() << "\n";
    }
    if (f.warmup_seconds > 0) {
      cj["warmup"] = {{"raw_pull", warm[0][0].rate}, {"pull", warm[1][0].rate},
                      {"raw_push", warm[2][0].rate}, {"push", warm[3][0].rate}};
    }
    if (stats.ok()) cj["server_stats"] = nlohmann::json::parse((*stats)[0], nullptr, false);
    // The store's part of a request (wall time inside the store's Pull or Push, from the server's
    // counters over the measured rounds), beside the row-memory floor of the same request.
    if (stats.ok() && stats_before.ok()) {
      auto a = nlohmann::json::parse((*stats_before)[0], nullptr, false);
      auto b = nlohmann::json::parse((*stats)[0], nullptr, false);
      auto per_request = [&](const char* ns, const char* rows) -> nlohmann::json {
        if (!a.contains(ns) || !b.contains(ns)) return nullptr;
        const double n = (b[rows].get<double>() - a[rows].get<double>()) / static_cast<double>(f.batch);
        if (n <= 0) return nullptr;
        return (b[ns].get<double>() - a[ns].get<double>()) / 1e6 / n;
      };
      cj["store_ms_per_request"] = {{"pull", per_request("pull_store_ns", "rows_pulled")},
                                    {"push", per_request("push_store_ns", "rows_pushed")}};
      if (!c.over_cache && !c.zipf && cj["store_ms_per_request"]["pull"].is_number() &&
          cj["store_ms_per_request"]["push"].is_number()) {
        const double sp = cj["store_ms_per_request"]["pull"], su = cj["store_ms_per_request"]["push"];
        std::cerr << c.name << ": store part per request: pull " << sp << " ms (" << sp / floor.gather_ms
                  << "x the row-memory gather floor), push " << su << " ms (" << su / floor.update_ms
                  << "x the row-memory update floor)\n";
      }
    }
    out[c.name] = cj;
    std::cerr << c.name << ": pull " << r.pull << " rows/s (" << r.pull_ratio << "x raw " << raw_r.pull << "), push "
              << r.push << " rows/s (" << r.push_ratio << "x raw " << raw_r.push << "); cpu ms/request: pull client "
              << r.pull_client_cpu_ms << " server " << r.pull_server_cpu_ms << " (raw " << raw_r.pull_client_cpu_ms
              << " / " << raw_r.pull_server_cpu_ms << "), push client " << r.push_client_cpu_ms << " server "
              << r.push_server_cpu_ms << " (raw " << raw_r.push_client_cpu_ms << " / " << raw_r.push_server_cpu_ms
              << ")\n";
  }
  stop_raw();
  // The headline figures are the cache-resident uniform case's (null when it was not run).
  auto or_null = [](bool have, double v) { return have ? nlohmann::json(v) : nlohmann::json(); };
  const bool have_base = results.count("uniform_resident") > 0;
  const Rates& base = results["uniform_resident"];
  const Rates& raw_base = raw_results["uniform_resident"];
  out["pull_rows_per_s"] = or_null(have_base, base.pull);
  out["push_rows_per_s"] = or_null(have_base, base.push);
  out["raw_zmq_rows_per_s"] = or_null(have_base, raw_base.pull);
  out["raw_zmq_push_rows_per_s"] = or_null(have_base, raw_base.push);
  if (have_base) out["raw_zmq_cpu_ms_per_request"] = cpu_json(raw_base);
  out["raw_rocksdb_rows_per_s"] = raw_rocks;
  out["row_bytes"] = row_bytes;
  out["row_memory_floor_ms_per_request"] = {{"gather", floor.gather_ms}, {"update", floor.update_ms},
                                            {"rows", f.resident_keys}, {"slot_bytes", slot_bytes}};
  out["pull_ratio_to_raw_zmq"] = or_null(have_base, base.pull_ratio);
  out["push_ratio_to_raw_zmq"] = or_null(have_base, base.push_ratio);
  const bool have_zipf = results.count("zipf_over_cache") && results.count("zipf_resident");
  out["zipf_over_cache_pull_ratio_to_resident"] =
      or_null(have_zipf, results["zipf_over_cache"].pull / results["zipf_resident"].pull);
  out["zipf_over_cache_push_ratio_to_resident"] =
      or_null(have_zipf, results["zipf_over_cache"].push / results["zipf_resident"].push);
  out["dim"] = f.dim;
  out["batch"] = f.batch;
  out["window"] = f.window;
  out["hardware_threads"] = std::thread::hardware_concurrency();
  out["rounds"] = f.rounds;
  out["seconds_per_phase"] = f.seconds;
  out["warmup_seconds_per_phase"] = f.warmup_seconds;
  std::error_code ec;
  fs::remove_all(f.work_dir, ec);
  std::cout << out.dump() << std::endl;
  return 0;
}


// Resident memory of a process from /proc/<pid>/status: `field` is VmRSS (all), RssAnon (its
// own heap and stacks) or RssFile (mapped files: RocksDB's mmap reads, reclaimable page cache).
uint64_t RssBytes(pid_t pid, const std::string& field = "RssAnon") {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}

// `bench load`: W concurrent workers (threads, each with its own client and connection) pull and
// push Zipf batches against one server with a small cache, each keeping 2 requests in flight (the
// clients' windows and the sockets' high-water marks bound every queue). Prints the server's
// memory every half second; the last line is JSON.
int RunLoad(BenchFlags f) {
  if (f.work_dir.empty()) f.work_dir = (fs::temp_directory_path() / ("metaps-bench-load-" + std::to_string(getpid()))).string();
  fs::create_directories(f.work_dir);
  auto server = StartServer(f, "load", f.load_cache_bytes);
  if (!server.ok()) return std::cerr << "bench load: " << server.status() << "\n", 1;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> pulled{0}, pushed{0}, errors{0};
  std::vector<std::thread> workers;
  for (int64_t w = 0; w < f.workers; ++w) {
    workers.emplace_back([&, w] {
      auto c = Connect(server->endpoint);
      if (!c.ok()) return (void)++errors;
      KeyGen gen(f.over_cache_keys, true, f.zipf_s, 100 + w);
      std::vector<Key> keys(f.batch);
      std::vector<float> grads(f.batch * f.dim, 0.001f);
      std::deque<std::future<Status>> window;
      for (uint64_t step = 0; !stop; ++step) {
        gen.Fill(keys);
        auto r = (*c)->Pull("emb", keys).get();
        if (!r.ok()) ++errors;
        else pulled += f.batch;
        window.push_back((*c)->Push("emb", keys, grads, step));
        if (window.size() >= 2) {
          if (!window.front().get().ok()) ++errors;
          else pushed += f.batch;
          window.pop_front();
        }
      }
      for (auto& p : window) p.get().ok() ? (void)(pushed += f.batch) : (void)++errors;
    });
  }
  nlohmann::json memory = nlohmann::json::array();
  uint64_t max_rss = 0;
  auto start = Clock::now();
  while (Seconds(start, Clock::now()) < f.seconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    uint64_t rss = RssBytes(server->proc.pid()), file = RssBytes(server->proc.pid(), "RssFile");
    max_rss = std::max(max_rss, rss);
    double t = Seconds(start, Clock::now());
    memory.push_back({t, rss, file});
    std::cerr << "t=" << std::fixed << std::setprecision(1) << t << "s server anon " << rss / (1 << 20) << " MiB, mapped files "
              << file / (1 << 20) << " MiB (cache budget "
              << f.load_cache_bytes / (1 << 20) << " MiB), pulled " << pulled.load() << " pushed " << pushed.load() << " rows\n";
  }
  stop = true;
  for (auto& t : workers) t.join();
  double secs = Seconds(start, Clock::now());
  (void)server->proc.Signal(SIGTERM);
  (void)server->proc.Wait(std::chrono::seconds(60));
  std::error_code ec;
  fs::remove_all(f.work_dir, ec);
  // The documented overhead above the cache budget (docs/operations.md): RocksDB memtables of the
  // rows space (up to 2 x 64 MiB) and its block cache (64 MiB), the push log's buffers, the
  // sockets' queues (bounded by the clients' windows) and the process itself.
  const uint64_t documented_overhead = 320ull << 20;
  nlohmann::json out = {{"workers", f.workers},
                        {"cache_bytes", f.load_cache_bytes},
                        {"max_rss_bytes", max_rss},  // anonymous memory; mapped files are page cache
                        {"memory_columns", {"t_s", "anon_bytes", "mapped_file_bytes"}},
                        {"overhead_bytes", max_rss > static_cast<uint64_t>(f.load_cache_bytes) ? max_rss - f.load_cache_bytes : 0},
                        {"documented_overhead_bytes", documented_overhead},
                        {"within_budget", max_rss <= f.load_cache_bytes + documented_overhead},
                        {"pull_rows_per_s", pulled / secs},
                        {"push_rows_per_s", pushed / secs},
                        {"errors", errors.load()},
                        {"memory", memory}};
  std::cout << out.dump() << std::endl;
  return errors.load() == 0 ? 0 : 1;
}

// Answers every request with a preallocated reply of the size a real server would send.
int RunRawServer(const BenchFlags& f) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::router);
  s.bind("tcp://127.0.0.1:*");
  std::string ep = s.get(zmq::sockopt::last_endpoint);
  if (Status w = WriteFileAtomically(f.endpoint_file, ep + "\n"); !w.ok()) {
    std::cerr << "ps-raw-server: " << w << "\n";
    return 1;
  }
  auto values = std::make_shared<std::vector<float>>(f.batch * f.dim, 0.5f);
  Header rh{.type = MsgType::kPullReply};
  Bytes reply_header = EncodeHeader(rh);
  signal(SIGTERM, SIG_DFL);
  while (true) {
    std::vector<zmq::message_t> frames;
    do {
      frames.emplace_back();
      if (!s.recv(frames.back())) return 0;
    } while (frames.back().more());
    s.send(frames[0], zmq::send_flags::sndmore);
    if (frames.size() == 3) {  // id, header, keys: a pull
      s.send(zmq::message_t(reply_header.data(), reply_header.size()), zmq::send_flags::sndmore);
      // Zero-copy from the preallocated buffer, like the real server's reply.
      s.send(zmq::message_t(values->data(), values->size() * sizeof(float), nullptr, nullptr), zmq::send_flags::none);
    } else {
      s.send(zmq::message_t(reply_header.data(), reply_header.size()), zmq::send_flags::none);
    }
  }
}

}  // namespace

void RegisterBenchPsCommand(CLI::App& bench, Action* action) {
  auto f = std::make_shared<BenchFlags>();
  auto* cmd = bench.add_subcommand("ps", "Parameter-server pull/push throughput vs raw ZeroMQ and RocksDB");
  cmd->add_flag("--json", f->json, "End with one JSON line (always printed last)");
  cmd->add_option("--dim", f->dim, "Row width in float32");
  cmd->add_option("--batch", f->batch, "Keys per request");
  cmd->add_option("--resident-keys", f->resident_keys, "Key space of the cache-resident cases");
  cmd->add_option("--server-set", f->server_sets, "Extra [server] setting for the server, e.g. writeback_interval_ms=10000");
  cmd->add_option("--over-cache-keys", f->over_cache_keys, "Key space of the cases 10x over the cache");
  cmd->add_option("--window", f->window, "Requests in flight");
  cmd->add_option("--seconds", f->seconds, "Measuring time per phase (each round times raw and store pulls and pushes)");
  cmd->add_option("--warmup-seconds", f->warmup_seconds,
                  "Untimed warm-up per phase before each case's rounds (0: none); its rates are reported apart")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--rounds", f->rounds, "Rounds per case; figures are medians over the rounds")->check(CLI::PositiveNumber);
  cmd->add_option("--optimizer", f->optimizer, "Server optimizer (sgd, adagrad, adam, ftrl)");
  cmd->add_option("--work-dir", f->work_dir, "Scratch directory (removed afterwards)");
  cmd->add_option("--cases", f->cases, "Comma-separated cases to run (default: all)");
  cmd->callback([f, action] { *action = [f] { return RunBench(*f); }; });

  auto* load = bench.add_subcommand("load", "W workers against one server with a small cache: server memory over time");
  load->add_option("--workers", f->workers, "Concurrent workers (threads with their own connection)");
  load->add_option("--cache-bytes", f->load_cache_bytes, "Server cache budget");
  load->add_option("--keys", f->over_cache_keys, "Key space (Zipf)");
  load->add_option("--batch", f->batch, "Keys per request");
  load->add_option("--seconds", f->load_seconds, "Duration");
  load->add_option("--work-dir", f->work_dir, "Scratch directory (removed afterwards)");
  load->callback([f, action] {
    *action = [f] {
      BenchFlags g = *f;
      g.seconds = g.load_seconds;
      return RunLoad(g);
    };
  });

  auto* raw = bench.add_subcommand("ps-raw-server", "(internal) raw ZeroMQ reference server for bench ps");
  raw->group("");  // hidden
  raw->add_option("--endpoint-file", f->endpoint_file)->required();
  raw->add_option("--dim", f->dim);
  raw->add_option("--batch", f->batch);
  raw->callback([f, action] { *action = [f] { return RunRawServer(*f); }; });
}

}  // namespace metaps::launch
