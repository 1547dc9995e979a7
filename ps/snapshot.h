// Snapshots for serving: the embedding rows of a job's parameter servers, without optimizer
// state, as RocksDB SST files (docs/snapshot.md has the whole format).
//
// A snapshot directory holds manifest.json, dense/<tensor>.npy and, per sparse table and shard,
// rows/<table>/shard-<i>.sst: key = the feature key as a big-endian u64 (so files sort by key),
// value = the row's dim weights as little-endian f32. A full snapshot holds every row the servers
// ever stored; a delta only the rows updated after its base snapshot (by per-shard push sequence
// numbers), so base + deltas, applied in order, give the newer state. A key in no file has never
// been updated: its value is the table's deterministic initial value (ps/initializer.h).
//
// This file has the parameter-server half: exporting the rows of one shard's checkpoint
// (ExportCheckpointShard), the manifest's "tables" entries, and SnapshotRows, which serving
// uses to look rows up. The model and the dense tensors' meaning belong to the caller
// (`metaps export` and `metaps serve`, launch/).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/keys.h"
#include "common/status.h"
#include "ps/initializer.h"
#include "ps/lineage.h"

namespace metaps {
class RocksDbStorage;
}

namespace metaps::ps {

// One file of a snapshot, its path relative to the snapshot directory.
struct SnapshotFile {
  std::string path;
  uint64_t rows = 0;
  uint64_t bytes = 0;
  std::string xxh3;  // XXH3-64 of the file's bytes (seed 0), 16 hex digits
};

// A sparse table of a snapshot.
struct SnapshotTable {
  std::string name;
  uint32_t dim = 0;
  InitSpec init;                    // the value of a key in no file: InitializeRow(init, Hash64(name), key)
  std::vector<SnapshotFile> files;  // one per shard that has rows of it
};

// What ExportCheckpointShard read and wrote.
struct ShardExport {
  int shard = 0;
  uint64_t applied_seq = 0;  // the checkpoint's: a delta on top of this export starts after it
  Lineage lineage;           // the checkpoint's (ps/lineage.h): a delta on top must descend from it
  std::map<std::string, SnapshotFile> files;        // sparse table -> its file (tables with rows only)
  std::map<std::string, std::vector<float>> dense;  // dense table -> its values as stored (if stored)
  std::map<std::string, uint32_t> sparse_dims;      // every sparse table of the shard -> dim
  uint64_t rows_exported = 0;
  uint64_t rows_unchanged = 0;  // rows left out of a delta
};

// The state a delta is written on top of: one shard of the base snapshot.
struct ShardBase {
  uint64_t applied_seq = 0;
  Lineage lineage;
};

// Exports the rows of one shard's checkpoint (a directory ParamStore::Checkpoint wrote) into
// out_dir/rows/<table>/shard-<shard>.sst. With a base (a delta) only rows whose last update has
// a sequence number above the base's are written, and only when the checkpoint's state descends
// from the base's (CheckDescends; FailedPrecondition otherwise). Dense tables' rows are returned,
// not written. A table with no row to write gets no file. Fails without leaving a partial file
// behind under a name the manifest could list (files are written to .tmp names, renamed last).
Result<ShardExport> ExportCheckpointShard(const std::string& checkpoint_dir, int shard, const ShardBase* base,
                                          const std::string& out_dir);

// XXH3-64 (seed 0) of a file's bytes as 16 lowercase hex digits.
Result<std::string> FileXxh3(const std::string& path);

nlohmann::json SnapshotTablesToJson(const std::vector<SnapshotTable>& tables);
// Reads a manifest's "tables" array; InvalidArgument naming the entry and key that is wrong.
Result<std::vector<SnapshotTable>> SnapshotTablesFromJson(const nlohmann::json& tables);

// The rows of a snapshot and its deltas, for lookups (serving). Open verifies every file against
// its manifest entry (size and checksum), then ingests them into a RocksDB under work_dir (one
// column family per table; base first, then each delta, so newer rows win). Lookups are
// thread-safe.
class SnapshotRows {
 public:
  // `manifests`: the manifests' "tables" of the snapshot directories, in the same order as
  // `dirs` (the full snapshot first, then its deltas in order; the caller checks the chain).
  // work_dir must not exist or be empty; it is the caller's to remove.
  // `base` (optional): rows already loaded for dirs[0, base_dirs), e.g. by the model in service
  // when a follower's chain grows by a delta. Its RocksDB is checkpointed (hard links) into
  // work_dir and only the later snapshots' files are checked and ingested. The caller vouches
  // that base was opened on exactly those directories; base keeps serving meanwhile.
  static Result<std::unique_ptr<SnapshotRows>> Open(const std::vector<std::string>& dirs,
                                                    const std::vector<std::vector<SnapshotTable>>& tables,
                                                    const std::string& work_dir,
                                                    const SnapshotRows* base = nullptr, size_t base_dirs = 0);
  ~SnapshotRows();

  // The tables of the newest snapshot (a delta may not add or change a table).
  const std::vector<SnapshotTable>& tables() const { return tables_; }
  const SnapshotTable* FindTable(std::string_view name) const;
  uint64_t rows_ingested() const { return rows_ingested_; }  // by the whole chain, base included
  uint64_t rows_taken_from_base() const { return rows_from_base_; }

  // Writes keys.size() * dim floats of `table` to out, in key order; keys in no file get their
  // initial value. *stored (optional) counts the keys found in the files.
  Status Lookup(std::string_view table, std::span<const Key> keys, float* out,
                uint64_t* stored = nullptr) const;

 private:
  SnapshotRows() = default;
  std::vector<SnapshotTable> tables_;
  std::unique_ptr<RocksDbStorage> db_;
  std::vector<uint32_t> spaces_;  // per tables_ entry
  uint64_t rows_ingested_ = 0;
  uint64_t rows_from_base_ = 0;
};

}  // namespace metaps::ps
