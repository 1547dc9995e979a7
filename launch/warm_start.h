// Warm starts: a new job that begins where an earlier run's training ended, on new data (the
// next days of a click stream). Its servers are restored from the earlier run's checkpoint --
// embedding rows, the MLP, optimizer state and the lineage of every shard -- and training goes
// on from there, so the new run's snapshots can be deltas on top of the earlier run's.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/status.h"
#include "worker/job.h"

namespace metaps::launch {

struct WarmStart {
  std::string from_run;    // the earlier run directory
  std::string checkpoint;  // the checkpoint the servers are restored from (shard-<i>/ inside)
  int64_t round = -1;      // its round; -1: the final checkpoint
  nlohmann::json ToJson() const;
};

// `from`: a run directory (its final checkpoint, else its newest periodic one) or one of its
// checkpoint directories (RUN/checkpoint, RUN/checkpoints/round-N). Checks that the new job --
// `job`, its model, and `cfg`, its resolved config with the derived [[tables]] -- continues the
// same model: the same fields (names, widths, pooling, in order), hidden layers, loss and initial
// MLP (model.init_seed), on as many shards, with each table's optimizer and width unchanged.
// Inner-loop settings, rates and the data may differ. Errors name the key that differs.
Result<WarmStart> PlanWarmStart(const std::string& from, const worker::JobModel& job, const Config& cfg);

// RUN_DIR/warm_start.json, written by a warm-started `metaps run`; NotFound for other runs.
Result<WarmStart> ReadWarmStart(const std::string& run_dir);

}  // namespace metaps::launch
