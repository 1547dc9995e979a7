// Snapshots for serving, the job's half: `metaps export` turns a run's checkpoint into a snapshot
// directory and `metaps serve` reads one (docs/snapshot.md has the format; ps/snapshot.h the
// rows).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/status.h"
#include "ps/snapshot.h"
#include "worker/job.h"
#include "worker/trainer.h"

namespace metaps::launch {

struct ExportOptions {
  std::string run_dir;  // a `metaps run` directory: job.toml, model.json, checkpoints
  std::string
      checkpoint;  // default: RUN_DIR/checkpoint (the final one), else the newest RUN_DIR/checkpoints/round-*
  std::string out;    // default: RUN_DIR/snapshots/<full|delta>-<time>; must not exist
  std::string since;  // a snapshot of the same job: write a delta on top of it
};

struct ExportSummary {
  std::string out, id, kind, checkpoint;
  int shards = 0;
  uint64_t rows = 0, rows_unchanged = 0, files = 0, bytes = 0;
};

// A run directory's model: RUN_DIR/model.json (written by `metaps run`), or rebuilt from the
// job's data (`cfg`, its job.toml) for runs from before model.json.
Result<worker::JobModel> RunDirModel(const std::string& run_dir, const Config& cfg);

// A run's checkpoint and its round (-1: the final checkpoint, or a directory given by hand):
// `given` when not empty, else RUN_DIR/checkpoint (written when the job finished), else the
// newest complete RUN_DIR/checkpoints/round-*.
Result<std::pair<std::string, int64_t>> FindRunCheckpoint(const std::string& run_dir,
                                                          const std::string& given);

// Writes the snapshot (into a temporary directory beside `out`, renamed to `out` when complete,
// so a snapshot directory either is whole or does not exist).
Result<ExportSummary> ExportSnapshot(const ExportOptions& options);

// A snapshot directory read and checked: its manifest, model and dense tensors (checksums
// verified). Rows stay on disk (ps::SnapshotRows).
struct LoadedSnapshot {
  std::string dir, id, kind, base_id, job_id;
  nlohmann::json manifest;
  worker::JobModel job;
  worker::DenseParams params;  // empty after LoadSnapshotManifest alone
  std::vector<ps::SnapshotTable> tables;
  std::vector<ps::ShardBase> shards;  // per shard: pushes applied up to, and the lineage (ps/lineage.h)
};
Result<LoadedSnapshot> LoadSnapshot(const std::string& dir);
// Its manifest only, checked: everything but `params` (no dense file is read).
Result<LoadedSnapshot> LoadSnapshotManifest(const std::string& dir);
// Reads the dense tensors the manifest lists into `s->params`, checking each file's checksum.
Status LoadSnapshotDense(LoadedSnapshot* s);

// Checks that `chain` is a full snapshot followed by deltas, each on top of the one before it
// and, shard by shard, of a state that descends from it (ps::CheckDescends).
Status CheckSnapshotChain(const std::vector<LoadedSnapshot>& chain);

}  // namespace metaps::launch
