// ParamStore: one server shard's parameters: sparse embedding tables and dense tensors, with their
// optimizer state, persisted in a Storage (RocksDB in production), fronted by a bounded cache.
//
// Push path: duplicate keys are summed, the summed push is appended as ONE record to the "log"
// space (one sequential write; durable when Write returns), the optimizer is applied to the cached
// rows, which become dirty. A background thread writes dirty rows back to the "rows" space and
// deletes the log records they cover, so a push never costs one storage row write per key, and a
// hot row updated many times between write-backs is written once. Recovery = rows in storage +
// replay, in order, of the log records the rows do not yet include (each row records the sequence
// number of the last push applied to it, so replay is exact and idempotent per row). See
// docs/storage.md for the on-disk formats.
//
// Exactly once across retries and restarts: a push may carry its origin (sender, request id). The
// origin goes into the push's own log record and into the store's window of applied pushes
// (DedupeWindow) in the same step, so PushApplied answers the same before and after a crash: the
// window is rebuilt from the replayed records, and each write-back cut stores it in the "meta"
// space in the batch that records the cut (ids whose records the cut drops survive); checkpoints
// carry it.
//
// Unseen keys read as their deterministic initial value (ps/initializer.h); pulls never write.
//
// Thread-safety: Pull/Push/PullDense/PushDense/Checkpoint/Flush/GetRow are meant to be called
// from one thread (the server's); they are nevertheless serialized by an internal mutex, as is the
// background writer's access to the cache. Stats may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/keys.h"
#include "common/status.h"
#include "common/storage.h"
#include "ps/table_spec.h"

namespace metaps::ps {

// How the push log is written: StoreOptions::log_io.
enum class LogIo : uint8_t {
  kAuto,      // direct when StoreOptions::sync is on, else buffered
  kBuffered,  // through the page cache
  kDirect,    // O_DIRECT where the file system takes it (else buffered)
};

struct StoreOptions {
  std::string data_dir;                       // RocksDB lives here (created if absent)
  uint64_t cache_bytes = 256 << 20;           // budget for cached rows (embedding + optimizer state + metadata)
  bool sync = false;                          // fsync each push's log record (machine-crash durability); without it a killed *process* still loses nothing (WAL is in the OS page cache)
  uint32_t writeback_interval_ms = 2000;      // background write-back of dirty rows
  uint64_t writeback_dirty_bytes = 64 << 20;  // or sooner when this many dirty bytes (capped at cache_bytes / 2)
  std::string restore_from;                   // optional checkpoint dir to restore from when data_dir is empty/new

  // Additions beyond the first draft:
  // Write back sooner when the log holds this many bytes not yet covered by a write-back (bounds
  // replay time after a crash and the log's footprint). Default: 1 GiB (a replay of ~8M row
  // updates of 32 floats: ~1-2 s here, docs/storage.md; each write-back rewrites every dirty row,
  // so a low bound under a heavy push load means many write-backs that coalesce little). With
  // buffered log writes the log's pages stay dirty in the page cache, and 1 GiB keeps them below
  // the kernel's write-back thresholds; with direct log writes (log_io) a bigger bound costs no page cache.
  uint64_t writeback_log_bytes = 1ull << 30;
  // Nice value of the background write-back thread (Linux: per thread), so that on contended
  // cores the request loop goes first; the write-back still keeps up, since pushes wait for it
  // once the cache fills with dirty rows (backpressure). 0: the process's own priority.
  int writeback_nice = 10;
  // false: the destructor skips the final write-back, leaving state as a killed process would
  // (the log still covers every acknowledged push). For crash-recovery tests.
  bool final_flush_on_close = true;
  // Where the push log lives. false (default): append-only segment files in data_dir/pushlog
  // (one writev per push; much cheaper than a RocksDB write of the same bytes). true, or when
  // data_dir is empty: the storage's "log" space.
  bool log_in_storage = false;
  // Size of a push log segment file. Full segments are closed, retired ones recycled (their
  // pages stay cached: a push's append is a copy, not an allocation); see FileLog. A push
  // bigger than this gets a segment to itself.
  uint64_t log_segment_bytes = 32ull << 20;
  // How the push log's segments are written (LogIo). kDirect: with direct I/O (O_DIRECT) from a
  // staging buffer, where the file system takes it (else buffered writes). A direct append costs
  // less CPU than a copy into the page cache and leaves no dirty log pages for the kernel to
  // write back, but every byte then goes to the device and each append waits for it. With
  // `sync` every record has to reach the device anyway, and direct writes pushed 1.2-1.6x the
  // rows of buffered writes with fdatasync here (bench ps, param_store_benchmark --sync); without
  // it, a buffered append only reaches the page cache (enough for a killed process; most of the
  // log never reaches the disk), while direct writes put all of it there and slowed pushes to a
  // table over its cache (docs/storage.md). Hence kAuto (default): direct with `sync` only.
  LogIo log_io = LogIo::kAuto;
  // log_io resolved: whether the push log is to be written with direct I/O.
  bool LogDirect() const { return log_io == LogIo::kDirect || (log_io == LogIo::kAuto && sync); }
  // Bounds of the window of applied push ids (see PushOrigin): the newest
  // dedupe_ids_per_sender ids of each of the dedupe_senders most recently active senders.
  // Default: 4096 senders, 1024 ids each.
  size_t dedupe_senders = 4096;
  size_t dedupe_ids_per_sender = 1024;
  // A write-back of at least this many row bytes writes its rows as sorted runs that the
  // storage ingests whole (Storage::NewSortedWriter; RocksDB: table files, no WAL, memtable or
  // flush): about half the CPU of the WAL and memtable path (whose WAL record checksum is this
  // RocksDB build's slow CRC32c), while a table file per trickle of rows (a periodic write-back
  // of a few dirty rows) would litter the storage with tiny files. Default: 4 MiB (~10k rows of
  // 32 floats with Adam), so that a cache under pressure, which writes back ~cache_bytes / 2 at a
  // time, ingests too (docs/storage.md); 0: always.
  uint64_t writeback_ingest_bytes = 4ull << 20;
  // Such a write-back commits a run (a table file) every this many row bytes, and its rows are
  // evictable only once their run is committed. Default: 64 MiB.
  uint64_t writeback_run_bytes = 64ull << 20;
  // Threads besides the request thread (and a big push's log side thread) that share the row
  // work of one big request: a pull's gather of resident rows, a push's optimizer rows. They
  // shorten a request where cores are idle; on a box whose cores are all busy they only add
  // hand-offs. -1 (default): hardware threads / 4 - 1, at most 7 (none below 8 hardware threads).
  int helper_threads = -1;
  // helper_threads with -1 resolved for this machine.
  static int ResolveHelperThreads(int configured);
};

// Who sent a push, for exactly-once application of retries: a retried push carries the same
// sender and request id. A client's sender name carries its incarnation (docs/wire.md).
struct PushOrigin {
  std::string_view sender;
  uint64_t request_id = 0;
};

struct RowInfo {
  std::vector<float> value;  // the dim weights (optimizer state is not included)
  uint64_t update_count;     // pushes applied to this row; 0 for an unseen key
  uint64_t last_step;        // `step` of the last push applied; 0 for an unseen key
};

struct StoreStats {
  uint64_t rows_cached, cache_bytes, rows_dirty, cache_hits, cache_misses, log_records, writebacks,
      rows_written;
  // Additions:
  uint64_t log_records_pending;  // log records not yet covered by a write-back
  uint64_t replayed_records;     // log records replayed when this store opened
  uint64_t writeback_errors;     // failed background write-backs (retried; the log keeps the data)
  // Push-log segments started since open (file log only): new files, and retired ones reused.
  // Mostly new files under a steady load means the spare pool is too small for the log volume.
  uint64_t log_segments_created, log_segments_reused;
  // fdatasync calls that made push-log records durable (with `sync`): fewer than log_records
  // when big pushes queued up behind a sync and shared the next one (group commit).
  uint64_t log_syncs;
  // Helper threads (StoreOptions::helper_threads, resolved), and how many times one joined a
  // request's row work: joins near zero with helpers configured means their cores were busy.
  uint64_t helper_threads, helper_joins;
  // Whether the push log's current segment is written with direct I/O (StoreOptions::log_io
  // and a file system that takes it).
  bool log_direct_io;
};

class ParamStore {
 public:
  // Opens over `storage`, which must have the spaces "rows", "log" and "meta" (see
  // ParamStore::kSpaces). Registers new tables, checks that known tables kept their dim and
  // optimizer state size (FailedPrecondition otherwise), replays the log, starts the writer.
  //
  // restore_from: a checkpoint is restored by ParamStore::PrepareDataDir, which the caller runs
  // BEFORE opening the storage on data_dir (Open receives an already opened storage). If
  // restore_from is set and the storage is still empty, Open fails with FailedPrecondition.
  static Result<std::unique_ptr<ParamStore>> Open(StoreOptions options, std::vector<TableSpec> tables,
                                                  std::unique_ptr<Storage> storage /* already opened on options.data_dir */);

  // The spaces Open expects the storage to have.
  static constexpr const char* kSpaces[] = {"rows", "log", "meta"};

  // If options.restore_from is set and options.data_dir is absent or empty, fills data_dir with a
  // copy of the checkpoint's database (SST files hard-linked when on the same filesystem, other
  // files copied) so that the storage then opened on data_dir starts from the checkpoint. Does
  // nothing otherwise (a server restarted over its own data keeps it). Validates the manifest.
  static Status PrepareDataDir(const StoreOptions& options);
  // Where a checkpoint made by Checkpoint(dir) keeps its database (dir + "/db").
  static std::string CheckpointDbDir(const std::string& checkpoint_dir);
  // Opens a checkpoint made by Checkpoint(dir) for reading: its manifest (validated) and its
  // database, read-only (the snapshot export reads it; docs/storage.md has the row layout).
  static Result<std::pair<nlohmann::json, std::unique_ptr<Storage>>> OpenCheckpoint(
      const std::string& checkpoint_dir);

  // Bytes one cached row of `row_floats` floats (weights and optimizer state) takes, header and
  // alignment included: the slot stride of the row cache.
  static size_t SlotBytes(uint32_t row_floats);

  const TableSpec* FindTable(std::string_view name) const;  // nullptr if unknown

  // Writes keys.size()*dim floats to out, in key order (duplicates allowed). Unseen keys: initial values, nothing written.
  Status Pull(std::string_view table, std::span<const Key> keys, float* out);
  // Sums duplicate keys' grads, appends one durable log record, applies the optimizer to each unique row, marks rows dirty. Returns only once the record is durable. `step` is the worker's clock, stored as last_step.
  // `origin` (optional): logged with the push and added to the window of applied pushes once the
  // record is durable (see PushApplied). Nothing is recorded for a push that fails or is empty.
  Status Push(std::string_view table, std::span<const Key> keys, std::span<const float> grads, uint64_t step,
              const PushOrigin* origin = nullptr);
  // Push, but it returns once the push is applied in memory, with *durable_at set to the
  // sequence number that DurableSeq() must reach before the push may be acknowledged
  // (WaitDurable). A push of 1024 rows or more has its log record appended on the store's log
  // thread meanwhile, so that the caller can go on with its next request (the server does; its
  // replies wait for durability: docs/server.md). `hold` keeps keys and grads alive until the
  // record is written; it may be null when the caller waits in WaitDurable before releasing them.
  // Pushes are logged and applied in call order. An error means the push was not applied.
  Status PushDeferred(std::string_view table, std::span<const Key> keys, std::span<const float> grads,
                      uint64_t step, const PushOrigin* origin, std::shared_ptr<const void> hold,
                      uint64_t* durable_at);
  // Called by the thread that runs a big push (PushDeferred) between parts of its optimizer
  // work, with the store's lock held: the server sends the replies whose pushes have become
  // durable meanwhile (their records are appended on the log thread), instead of holding them
  // until the push is done. The hook must not call the store, except AppliedSeq, DurableSeq and
  // WaitDurable. Set it before the store is used from other threads; an empty one is not called.
  void SetProgressHook(std::function<void()> hook);
  // Called on the store's log thread, with no lock held, each time it has made a deferred push's
  // record durable (DurableSeq() has moved on), and once when an append fails (the store has
  // then stopped: Failure()). The server wakes its request loop with it, so that a reply leaves
  // as soon as it may while the loop waits for the next request instead of for the log. It must
  // be cheap and must not call the store, except AppliedSeq and DurableSeq. Thread-safe; once it
  // returns, the hook it replaced is no longer called (it waits for a record being appended).
  void SetDurableHook(std::function<void()> hook);
  // The sequence number of the last push applied in memory: any answer the store gives now may
  // reflect pushes up to it (and a reply that carries such an answer waits for it to be durable).
  uint64_t AppliedSeq() const;
  // Every push up to this sequence number is durable in the log.
  uint64_t DurableSeq() const;
  // Blocks until DurableSeq() >= seq. Not OK when a log append failed before that: the store has
  // then stopped (Failure()), and the pushes from the failed one on are not durable.
  Status WaitDurable(uint64_t seq) const;
  // Dense tensors: one row of dim floats.
  Status PullDense(std::string_view table, float* out);
  Status PushDense(std::string_view table, std::span<const float> grads, uint64_t step,
                   const PushOrigin* origin = nullptr);
  // True when a push with this origin was applied and is still in the window (also after a crash
  // and restart, or a restore from a checkpoint taken after it).
  bool PushApplied(std::string_view sender, uint64_t request_id) const;
  // Consistent: flushes/records a cut, then storage checkpoint + manifest.json (tables, sequence
  // numbers, time). `dir` must not exist or be empty. Layout: dir/db (the storage's checkpoint),
  // dir/manifest.json (written last: a checkpoint without it is incomplete).
  Status Checkpoint(const std::string& dir);
  Status Flush();  // synchronously write back all dirty rows (and truncate the log)
  Result<RowInfo> GetRow(std::string_view table, Key key);  // for tests/inspection
  // Not OK once the store has stopped: a push's log append failed after its rows had changed
  // (pushes of 1024 rows and more are applied while their record is appended). Every call then fails with this status and
  // nothing more is written back; reopening the directory recovers the state before that push.
  Status Failure() const;
  StoreStats Stats() const;
  ~ParamStore();  // stops the background writer after a final flush

  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  struct Impl;

 private:
  explicit ParamStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace metaps::ps
