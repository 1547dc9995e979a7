// param_store_benchmark: Pull/Push rows/s of a ParamStore on RocksDB, for 10k-key batches of a
// dim-32 Adam table with Zipf keys, cache-resident and with the table 10x over its cache; plus raw
// RocksDB WriteBatch rows/s for 272-byte rows as the yardstick. Not a test.
//
// Usage: param_store_benchmark [--dir DIR] [--seconds S] [--keys N] [--zipf S] [--sync] [--no-writeback]
//                              [--helper-threads N] [--repeats] [--buffered-log] [--ingest-bytes N]
//                              [--replay-gib G]
// (--no-writeback adds a run of the push path alone: log append + apply, write-back held off.
// --repeats: batches of `batch` draws that may repeat keys, as a client that does not sum them
// sends; the store sums them. --zipf 0 draws keys uniformly. --buffered-log: the push log without
// direct I/O. --ingest-bytes N: StoreOptions::writeback_ingest_bytes. --replay-gib G adds a
// restart after a crash with G GiB of push log not yet written back: how long the replay takes,
// the restart time a writeback_log_bytes of G GiB bounds.)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "common/rocksdb_storage.h"
#include "ps/param_store.h"

namespace {

using Clock = std::chrono::steady_clock;
using metaps::Key;
using namespace metaps::ps;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Args {
  std::string dir = "/tmp/param_store_benchmark";
  double seconds = 3.0;
  uint64_t keys = 1'000'000;
  double zipf = 0.99;
  bool sync = false;
  bool no_writeback = false;
  uint32_t dim = 32;
  size_t batch = 10'000;
  int helper_threads = -1;
  bool repeats = false;
  bool buffered_log = false;
  long long ingest_bytes = -1;  // StoreOptions::writeback_ingest_bytes; -1: its default
  double replay_gib = 0;
};

double RawRocksDb(const std::string& dir, double seconds) {
  rocksdb::Options o;
  o.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(o, dir, &raw).ok()) return 0;
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string value(272, 'x');
  std::mt19937_64 rng(1);
  uint64_t rows = 0;
  auto start = Clock::now();
  while (Since(start) < seconds) {
    rocksdb::WriteBatch wb;
    for (int i = 0; i < 10'000; ++i) {
      uint64_t k = rng();
      wb.Put(rocksdb::Slice(reinterpret_cast<const char*>(&k), 8), value);
    }
    if (!db->Write(rocksdb::WriteOptions(), &wb).ok()) return 0;
    rows += 10'000;
  }
  return rows / Since(start);
}

// Zipf(s) over [0, n): rank r has weight 1/(r+1)^s; ranks are scattered over keys by a hash.
class Zipf {
 public:
  Zipf(uint64_t n, double s) : cdf_(n) {
    double sum = 0;
    for (uint64_t r = 0; r < n; ++r) cdf_[r] = (sum += 1.0 / std::pow(double(r + 1), s));
    for (auto& c : cdf_) c /= sum;
  }
  Key operator()(std::mt19937_64& rng) {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    uint64_t r = std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
    return metaps::Mix64(std::min<uint64_t>(r, cdf_.size() - 1));
  }

 private:
  std::vector<double> cdf_;
};

// Batches of `batch` distinct keys (workers deduplicate before they pull or push), or with
// `repeats` of `batch` draws as they come.
std::vector<std::vector<Key>> MakeBatches(Zipf& zipf, size_t batch, size_t count, uint64_t seed, bool repeats) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<Key>> out(count);
  for (auto& b : out) {
    std::unordered_set<Key> seen;
    seen.reserve(batch * 2);
    while (b.size() < batch) {
      Key k = zipf(rng);
      if (repeats || seen.insert(k).second) b.push_back(k);
    }
  }
  return out;
}

struct Rates {
  double pull = 0, push = 0, pull_ms = 0, push_ms = 0;
  StoreStats stats{};
};

Rates Measure(ParamStore* store, const std::vector<std::vector<Key>>& batches, const Args& a, uint64_t* step) {
  Rates r;
  std::vector<float> out(a.batch * a.dim);
  std::vector<float> grads(a.batch * a.dim);
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0, 0.01f);
  for (auto& x : grads) x = g(rng);
  for (int phase = 0; phase < 2; ++phase) {
    uint64_t rows = 0, ops = 0;
    size_t i = 0;
    auto start = Clock::now();
    while (Since(start) < a.seconds) {
      const auto& keys = batches[i++ % batches.size()];
      metaps::Status s = phase == 0 ? store->Pull("emb", keys, out.data())
                                    : store->Push("emb", keys, grads, ++*step);
      if (!s.ok()) {
        std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
        std::exit(1);
      }
      rows += keys.size();
      ++ops;
    }
    double secs = Since(start);
    (phase == 0 ? r.pull : r.push) = rows / secs;
    (phase == 0 ? r.pull_ms : r.push_ms) = 1000.0 * secs / ops;
  }
  r.stats = store->Stats();
  return r;
}

std::unique_ptr<ParamStore> OpenStore(const Args& a, const std::string& dir, uint64_t cache_bytes,
                                      bool no_writeback = false, bool crash_on_close = false) {
  StoreOptions o;
  o.log_io = a.buffered_log ? LogIo::kBuffered : LogIo::kDirect;
  if (a.ingest_bytes >= 0) o.writeback_ingest_bytes = static_cast<uint64_t>(a.ingest_bytes);
  o.final_flush_on_close = !crash_on_close;
  if (no_writeback) {
    o.writeback_interval_ms = 3600 * 1000;
    o.writeback_dirty_bytes = ~0ull >> 2;
    o.writeback_log_bytes = ~0ull >> 2;
  }
  o.data_dir = dir;
  o.cache_bytes = cache_bytes;
  o.sync = a.sync;
  o.helper_threads = a.helper_threads;
  TableSpec t;
  t.name = "emb";
  t.dim = a.dim;
  t.optimizer = DefaultOptimizerSpec(OptimizerKind::kAdam);
  t.init.kind = InitKind::kNormal;
  auto storage = metaps::RocksDbStorage::Open(dir, metaps::RocksDbOptions{});
  if (!storage.ok()) {
    std::fprintf(stderr, "%s\n", storage.status().ToString().c_str());
    std::exit(1);
  }
  auto store = ParamStore::Open(o, {t}, std::move(storage).value());
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(store).value();
}

void Print(const char* name, const Rates& r) {
  std::printf("%-28s pull %10.0f rows/s (%.2f ms/10k)   push %10.0f rows/s (%.2f ms/10k)\n", name, r.pull, r.pull_ms,
              r.push, r.push_ms);
  std::printf("%-28s hits %lu misses %lu cached %lu rows (%lu MiB) writebacks %lu rows_written %lu\n", "",
              (unsigned long)r.stats.cache_hits, (unsigned long)r.stats.cache_misses,
              (unsigned long)r.stats.rows_cached, (unsigned long)(r.stats.cache_bytes >> 20),
              (unsigned long)r.stats.writebacks, (unsigned long)r.stats.rows_written);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (f == "--dir") a.dir = next();
    else if (f == "--seconds") a.seconds = std::stod(next());
    else if (f == "--keys") a.keys = std::stoull(next());
    else if (f == "--zipf") a.zipf = std::stod(next());
    else if (f == "--sync") a.sync = true;
    else if (f == "--no-writeback") a.no_writeback = true;
    else if (f == "--helper-threads") a.helper_threads = std::stoi(next());
    else if (f == "--repeats") a.repeats = true;
    else if (f == "--buffered-log") a.buffered_log = true;
    else if (f == "--ingest-bytes") a.ingest_bytes = std::stoll(next());
    else if (f == "--replay-gib") a.replay_gib = std::stod(next());
    else {
      std::fprintf(stderr, "usage: %s [--dir DIR] [--seconds S] [--keys N] [--zipf S] [--sync] [--no-writeback] [--helper-threads N] [--repeats] [--buffered-log] [--ingest-bytes N] [--replay-gib G]\n", argv[0]);
      return 2;
    }
  }
  std::filesystem::remove_all(a.dir);
  std::filesystem::create_directories(a.dir);

  double raw = RawRocksDb(a.dir + "/raw", a.seconds);
  std::printf("raw RocksDB WriteBatch (10k x 272 B rows): %.0f rows/s\n", raw);

  Zipf zipf(a.keys, a.zipf);
  auto batches = MakeBatches(zipf, a.batch, 256, 1, a.repeats);
  const uint64_t row_charge = 40 + uint64_t{a.dim} * 3 * 4 + 32;  // slot + index bookkeeping
  const uint64_t table_bytes = a.keys * row_charge;
  std::printf("table: %lu keys x dim %u adam = %lu MiB cached; zipf %.2f; batches of %zu %s%s\n",
              (unsigned long)a.keys, a.dim, (unsigned long)(table_bytes >> 20), a.zipf, a.batch,
              a.repeats ? "draws (keys may repeat)" : "distinct keys", a.sync ? "; sync" : "");

  // Fill the table once: every key gets a row in RocksDB.
  uint64_t step = 0;
  {
    auto store = OpenStore(a, a.dir + "/store", table_bytes / 10);
    std::vector<Key> keys(a.batch);
    std::vector<float> grads(a.batch * a.dim, 0.001f);
    auto start = Clock::now();
    for (uint64_t base = 0; base < a.keys; base += a.batch) {
      keys.resize(std::min<uint64_t>(a.batch, a.keys - base));
      for (size_t i = 0; i < keys.size(); ++i) keys[i] = metaps::Mix64(base + i);
      auto s = store->Push("emb", keys, std::span<const float>(grads.data(), keys.size() * a.dim), ++step);
      if (!s.ok()) return 1;
    }
    auto s = store->Flush();
    if (!s.ok()) return 1;
    std::printf("fill: %lu rows pushed and written back in %.1f s\n", (unsigned long)a.keys, Since(start));
  }
  {
    auto store = OpenStore(a, a.dir + "/store", table_bytes * 2);
    // Warm the cache with every key.
    std::vector<Key> keys(a.batch);
    std::vector<float> out(a.batch * a.dim);
    for (uint64_t base = 0; base < a.keys; base += a.batch) {
      keys.resize(std::min<uint64_t>(a.batch, a.keys - base));
      for (size_t i = 0; i < keys.size(); ++i) keys[i] = metaps::Mix64(base + i);
      (void)store->Pull("emb", keys, out.data());
    }
    Print("cache-resident", Measure(store.get(), batches, a, &step));
  }
  if (a.no_writeback) {
    // The push path alone (log append + apply), with the background write-back held off.
    auto store = OpenStore(a, a.dir + "/store", table_bytes * 2, true);
    std::vector<float> out(a.batch * a.dim);
    for (const auto& b : batches) (void)store->Pull("emb", b, out.data());
    Print("cache-resident, no writeback", Measure(store.get(), batches, a, &step));
  }
  if (a.replay_gib > 0) {
    // Pushes with the write-back held off until the log holds replay_gib GiB, then a close that
    // leaves what a killed process leaves; the reopen replays it all.
    uint64_t records = 0, bytes = 0;
    {
      // (A cache 4x the table: no memory pressure, so dirty rows start no write-back either.)
      auto store = OpenStore(a, a.dir + "/store", table_bytes * 4, /*no_writeback=*/true, /*crash_on_close=*/true);
      std::vector<float> grads(a.batch * a.dim, 0.001f);
      for (size_t i = 0; bytes < a.replay_gib * (1ull << 30); ++i) {
        const auto& keys = batches[i % batches.size()];
        if (!store->Push("emb", keys, std::span<const float>(grads.data(), keys.size() * a.dim), ++step).ok()) return 1;
        bytes += keys.size() * (sizeof(Key) + a.dim * sizeof(float));
        ++records;
      }
    }
    auto start = Clock::now();
    auto store = OpenStore(a, a.dir + "/store", table_bytes * 4);
    const double secs = Since(start);
    std::printf("restart after a crash: %lu records (%.2f GiB of keys and gradients) replayed in %.2f s (%.2f GiB/s)%s\n",
                (unsigned long)store->Stats().replayed_records, bytes / double(1ull << 30), secs,
                bytes / double(1ull << 30) / secs, records == store->Stats().replayed_records ? "" : " MISMATCH");
  }
  {
    auto store = OpenStore(a, a.dir + "/store", table_bytes / 10);
    // Warm with the workload itself.
    std::vector<float> out(a.batch * a.dim);
    for (int i = 0; i < 20; ++i) (void)store->Pull("emb", batches[i % batches.size()], out.data());
    Print("10x over cache", Measure(store.get(), batches, a, &step));
  }
  std::filesystem::remove_all(a.dir);
  return 0;
}
