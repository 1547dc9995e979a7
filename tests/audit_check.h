// Acknowledged pushes vs stored update counts, for whole-job tests run with
// `worker.audit_pushes = true`.
//
// The workers' audit logs (run/audit/worker-<id>.pushes, worker/push_audit.h) say how many
// acknowledged pushes touched each row and dense tensor; the job's final checkpoint
// (run/checkpoint/shard-<i>, written after training by worker 0) holds each row's update_count.
// A checkpoint is restored into a scratch directory and opened read-write there, so the run
// directory is never changed. Nothing acknowledged may be lost: stored >= acked for every row.
#pragma once

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <unordered_map>

#include "common/config.h"
#include "common/rocksdb_storage.h"
#include "ps/param_store.h"
#include "ps/table_spec.h"
#include "worker/push_audit.h"

namespace metaps::testing {

// Acknowledged pushes per (table, key); a dense tensor counts under key 0.
using AckCounts = std::map<std::string, std::unordered_map<Key, uint64_t>>;

struct AuditComparison {
  uint64_t records = 0;          // acknowledged pushes read
  uint64_t rows = 0;             // distinct audited rows and dense tensors
  uint64_t acked = 0;            // sum over them of acknowledged pushes
  uint64_t stored = 0;           // sum over them of stored update counts
  uint64_t lost_rows = 0;        // rows with stored < acked
  uint64_t excess = 0;           // sum of stored - acked where stored > acked
  uint64_t rows_with_excess = 0;
  std::string first_loss;        // "table key: stored X < acked Y"

  std::string ToString() const {
    std::ostringstream s;
    s << records << " acknowledged pushes over " << rows << " rows/tensors: acked updates " << acked
      << ", stored " << stored << ", excess " << excess << " on " << rows_with_excess << " rows, lost on "
      << lost_rows << " rows" << (first_loss.empty() ? "" : " (first: " + first_loss + ")");
    return s.str();
  }
};

// Adds the records of every *.pushes file in `audit_dir` for which `keep` holds (all when empty).
// Duplicate keys within one push count once (the server sums them into one update).
inline Result<uint64_t> CountAcknowledgedPushes(const std::string& audit_dir, AckCounts* counts,
                                               const std::function<bool(const worker::PushAuditRecord&)>& keep = {}) {
  uint64_t records = 0;
  std::error_code ec;
  if (!std::filesystem::is_directory(audit_dir, ec)) return NotFound("no audit directory " + audit_dir);
  for (const auto& e : std::filesystem::directory_iterator(audit_dir)) {
    if (e.path().extension() != ".pushes") continue;
    METAPS_ASSIGN_OR_RETURN(auto recs, worker::ReadPushAudit(e.path().string()));
    for (auto& r : recs) {
      if (keep && !keep(r)) continue;
      ++records;
      auto& table = (*counts)[r.table];
      if (r.dense) {
        ++table[0];
        continue;
      }
      std::sort(r.keys.begin(), r.keys.end());
      r.keys.erase(std::unique(r.keys.begin(), r.keys.end()), r.keys.end());
      for (Key k : r.keys) ++table[k];
    }
  }
  return records;
}

// Compares `counts` with the update counts stored in the final checkpoint of `run_dir`, restoring
// each shard's checkpoint under `scratch`.
inline Result<AuditComparison> CompareWithFinalCheckpoint(const std::string& run_dir, const AckCounts& counts,
                                                          const std::string& scratch) {
  METAPS_ASSIGN_OR_RETURN(Config root, Config::ParseFile(run_dir + "/job.toml"));
  METAPS_ASSIGN_OR_RETURN(auto tables, ps::ParseTableSpecs(root));
  std::vector<std::unique_ptr<ps::ParamStore>> shards;
  for (int s = 0;; ++s) {
    std::string ckpt = run_dir + "/checkpoint/shard-" + std::to_string(s);
    if (!std::filesystem::exists(ckpt + "/manifest.json")) break;
    ps::StoreOptions o;
    o.data_dir = scratch + "/shard-" + std::to_string(s);
    o.restore_from = ckpt;
    o.final_flush_on_close = false;
    METAPS_RETURN_IF_ERROR(ps::ParamStore::PrepareDataDir(o));
    METAPS_ASSIGN_OR_RETURN(auto storage, RocksDbStorage::Open(o.data_dir, RocksDbOptions{}));
    METAPS_ASSIGN_OR_RETURN(auto store, ps::ParamStore::Open(o, tables, std::move(storage)));
    shards.push_back(std::move(store));
  }
  if (shards.empty()) return NotFound("no final checkpoint in " + run_dir + "/checkpoint");
  AuditComparison c;
  for (const auto& [table, rows] : counts) {
    for (const auto& [key, acked] : rows) {
      uint64_t stored = 0;  // only the owning shard has updates; the others read 0
      for (auto& shard : shards) {
        METAPS_ASSIGN_OR_RETURN(ps::RowInfo info, shard->GetRow(table, key));
        stored += info.update_count;
      }
      ++c.rows;
      c.acked += acked;
      c.stored += stored;
      if (stored < acked) {
        if (c.lost_rows++ == 0) {
          c.first_loss = table + " " + std::to_string(key) + ": stored " + std::to_string(stored) + " < acked " +
                         std::to_string(acked);
        }
      } else if (stored > acked) {
        c.excess += stored - acked;
        ++c.rows_with_excess;
      }
    }
  }
  return c;
}

}  // namespace metaps::testing
