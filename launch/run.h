// `metaps run` as a function, for the commands built on it (`metaps retrain` runs one job per
// cycle of new data).
#pragma once

#include <string>
#include <vector>

namespace metaps::launch {

struct Cluster;  // launch/cluster.h

struct RunFlags {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string run_dir;
  std::string resume;
  std::string warm_start;      // an earlier run (or one of its checkpoints) to start from (warm_start.h)
  std::string snapshot_since;  // write the final snapshot as a delta on top of this one
  int max_restarts = 3;
  bool quiet = false;
  bool check = false;  // validate config, data and model, print the plan, start nothing
  // Where the processes run (`metaps launch`); null: all on this machine, on loopback.
  const Cluster* cluster = nullptr;
};

// What a finished job left behind.
struct RunOutcome {
  std::string run_dir;
  std::string snapshot;       // the final snapshot's directory (empty when none was written)
  std::string snapshot_kind;  // "full" or "delta"
};

// Runs (or with flags.resume, resumes) a job as `metaps run` does and returns its exit code:
// 0 done, 1 a process failed, 2 a bad config or bad data (nothing started), 130 stopped by a
// signal. `outcome` (optional) is filled in as far as the job got.
int RunJobWithFlags(const RunFlags& flags, RunOutcome* outcome);

}  // namespace metaps::launch
