#include "launch/warm_start.h"

#include <filesystem>
#include <fstream>
#include <vector>

#include "launch/job_config.h"
#include "launch/snapshot.h"
#include "ps/optimizer.h"
#include "ps/table_spec.h"

namespace metaps::launch {
namespace {

namespace fs = std::filesystem;

std::string Short(const nlohmann::json& j) {
  std::string s = j.dump();
  return s.size() > 160 ? s.substr(0, 157) + "..." : s;
}

// The run directory a checkpoint directory belongs to: RUN/checkpoint or RUN/checkpoints/round-N.
Result<std::string> RunOfCheckpoint(const fs::path& ckpt) {
  const fs::path dir = fs::absolute(ckpt).lexically_normal();
  const fs::path clean = dir.filename().empty() ? dir.parent_path() : dir;
  if (clean.filename() == "checkpoint") return clean.parent_path().string();
  if (clean.parent_path().filename() == "checkpoints") return clean.parent_path().parent_path().string();
  return InvalidArgument("--warm-start " + ckpt.string() +
                         ": a checkpoint directory is RUN/checkpoint or RUN/checkpoints/round-N");
}

}  // namespace

nlohmann::json WarmStart::ToJson() const {
  return {{"from_run", from_run}, {"checkpoint", checkpoint}, {"round", round}};
}

Result<WarmStart> PlanWarmStart(const std::string& from, const worker::JobModel& job, const Config& cfg) {
  WarmStart w;
  std::string given;
  if (fs::exists(fs::path(from) / "job.toml")) {
    w.from_run = fs::absolute(from).lexically_normal().string();
  } else if (fs::exists(fs::path(from) / "shard-0" / "manifest.json")) {
    METAPS_ASSIGN_OR_RETURN(w.from_run, RunOfCheckpoint(from));
    given = fs::absolute(from).lexically_normal().string();
  } else {
    return NotFound("--warm-start " + from +
                    ": neither a run directory (no job.toml) nor a checkpoint (no shard-0/manifest.json)");
  }
  const std::string prev_toml = w.from_run + "/job.toml";
  METAPS_ASSIGN_OR_RETURN(Config prev, LoadJobConfig(prev_toml, {}));
  METAPS_ASSIGN_OR_RETURN(auto found, FindRunCheckpoint(w.from_run, given));
  w.checkpoint = found.first;
  w.round = found.second;

  // The same shards: keys are placed by the number of shards.
  METAPS_ASSIGN_OR_RETURN(int64_t servers, cfg.GetInt("job.servers", 1));
  METAPS_ASSIGN_OR_RETURN(int64_t prev_servers, prev.GetInt("job.servers", 1));
  if (servers != prev_servers) {
    return FailedPrecondition("job.servers: " + std::to_string(servers) + " here, " +
                              std::to_string(prev_servers) + " in " + prev_toml +
                              ": a warm start keeps the shards (keys are placed by their number)");
  }
  for (int64_t s = 0; s < servers; ++s) {
    const fs::path m = fs::path(w.checkpoint) / ("shard-" + std::to_string(s)) / "manifest.json";
    if (!fs::exists(m)) return NotFound("--warm-start: " + w.checkpoint + " is incomplete: no " + m.string());
  }

  // The same model: what the stored parameters mean.
  METAPS_ASSIGN_OR_RETURN(worker::JobModel prev_job, RunDirModel(w.from_run, prev));
  const nlohmann::json a = worker::JobModelToJson(job), b = worker::JobModelToJson(prev_job);
  const std::pair<const char*, const char*> parts[] = {
      {"fields", "the fields ([data] columns, fields, dim and dims)"},
      {"layers", "model.hidden"},
      {"loss", "model.loss"},
      {"init_seed", "model.init_seed"}};
  for (const auto& [part, key] : parts) {
    if (a.at(part) != b.at(part)) {
      return FailedPrecondition(std::string(key) + ": " + Short(a.at(part)) + " here, " + Short(b.at(part)) +
                                " in " + w.from_run + "/model.json: a warm start continues the same model");
    }
  }

  // The same tables where both have them (a new one, e.g. Meta-SGD's alpha, starts fresh).
  METAPS_ASSIGN_OR_RETURN(std::vector<ps::TableSpec> mine, ps::ParseTableSpecs(cfg));
  METAPS_ASSIGN_OR_RETURN(std::vector<ps::TableSpec> theirs, ps::ParseTableSpecs(prev));
  for (const auto& t : mine) {
    for (const auto& p : theirs) {
      if (p.name != t.name) continue;
      if (p.optimizer.kind != t.optimizer.kind) {
        return FailedPrecondition(
            "optimizer.optimizer: " + std::string(ps::OptimizerKindName(t.optimizer.kind)) + " here, " +
            std::string(ps::OptimizerKindName(p.optimizer.kind)) + " in " + prev_toml + " (table " + t.name +
            "): its rows hold that optimizer's state; a warm start keeps the optimizer");
      }
      if (p.dim != t.dim || p.dense != t.dense) {
        return FailedPrecondition("table " + t.name + ": dim " + std::to_string(t.dim) + " here, " +
                                  std::to_string(p.dim) + " in " + prev_toml);
      }
    }
  }
  return w;
}

Result<WarmStart> ReadWarmStart(const std::string& run_dir) {
  const std::string path = run_dir + "/warm_start.json";
  std::ifstream in(path);
  if (!in) return NotFound(path + ": not a warm-started run");
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("checkpoint") || !j["checkpoint"].is_string()) {
    return DataLoss(path + ": expected {\"from_run\", \"checkpoint\", \"round\"}");
  }
  WarmStart w;
  w.from_run = j.value("from_run", "");
  w.checkpoint = j["checkpoint"].get<std::string>();
  w.round = j.value("round", int64_t{-1});
  return w;
}

}  // namespace metaps::launch
