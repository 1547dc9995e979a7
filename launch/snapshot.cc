#include "launch/snapshot.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/files.h"
#include "common/keys.h"
#include "common/npy.h"
#include "common/random_id.h"
#include "launch/job_config.h"
#include "ps/initializer.h"
#include "ps/table_spec.h"
#include "scheduler/scheduler.h"
#include "worker/data/readers.h"

namespace metaps::launch {

namespace {

namespace fs = std::filesystem;

constexpr char kFormat[] = "metaps-snapshot";
constexpr int kVersion = 1;

Result<nlohmann::json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read " + path);
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return DataLoss(path + ": not a JSON object");
  return j;
}

Status WriteDense(const std::string& dir, const std::string& name, const std::vector<float>& values,
                  nlohmann::json* dense) {
  const std::string rel = "dense/" + name + ".npy";
  METAPS_RETURN_IF_ERROR(WriteNpyF32(dir + "/" + rel, values, {static_cast<int64_t>(values.size())}));
  METAPS_ASSIGN_OR_RETURN(std::string sum, ps::FileXxh3(dir + "/" + rel));
  dense->push_back({{"name", name},
                    {"path", rel},
                    {"shape", {values.size()}},
                    {"bytes", fs::file_size(dir + "/" + rel)},
                    {"xxh3", sum}});
  return Status::Ok();
}

}  // namespace

Result<worker::JobModel> RunDirModel(const std::string& run_dir, const Config& cfg) {
  const fs::path run = run_dir;
  const fs::path model = run / "model.json";
  if (fs::exists(model)) {
    std::ifstream in(model);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded()) return DataLoss(model.string() + ": not valid JSON");
    auto job = worker::JobModelFromJson(j);
    if (!job.ok()) return job.status().WithContext(model.string());
    return job;
  }
  METAPS_ASSIGN_OR_RETURN(Config data, cfg.GetTable("data", true));
  METAPS_ASSIGN_OR_RETURN(data::Dataset dataset, data::LoadDataset(data));
  return worker::BuildJobModel(cfg, dataset);
}

Result<std::pair<std::string, int64_t>> FindRunCheckpoint(const std::string& run_dir,
                                                          const std::string& given) {
  const fs::path run = run_dir;
  if (!given.empty()) {
    const std::string name = fs::path(given).filename().string();
    int64_t round = -1;
    if (name.rfind("round-", 0) == 0) round = std::strtoll(name.c_str() + 6, nullptr, 10);
    return std::make_pair(given, round);
  }
  if (fs::exists(run / "checkpoint" / "shard-0" / "manifest.json")) {
    return std::make_pair((run / "checkpoint").string(), int64_t{-1});
  }
  auto latest = scheduler::LatestCheckpoint((run / "checkpoints").string());
  if (!latest.ok()) {
    return NotFound(run.string() + " has no checkpoint: no checkpoint/ (written when a job finishes) and " +
                    latest.status().message());
  }
  return std::make_pair(latest->second, static_cast<int64_t>(latest->first));
}

Result<ExportSummary> ExportSnapshot(const ExportOptions& o) {
  const fs::path run = o.run_dir;
  if (!fs::is_directory(run)) return NotFound(o.run_dir + " is not a run directory");
  METAPS_ASSIGN_OR_RETURN(Config cfg, LoadJobConfig((run / "job.toml").string(), {}));
  METAPS_ASSIGN_OR_RETURN(SchedulerSettings sched, SchedulerSettingsFromConfig(cfg));
  METAPS_ASSIGN_OR_RETURN(std::vector<ps::TableSpec> specs, ps::ParseTableSpecs(cfg));
  METAPS_ASSIGN_OR_RETURN(worker::JobModel job, RunDirModel(o.run_dir, cfg));
  METAPS_ASSIGN_OR_RETURN(auto found, FindRunCheckpoint(o.run_dir, o.checkpoint));
  const std::string ckpt = found.first;
  const int shards = sched.scheduler.num_servers;
  for (int s = 0; s < shards; ++s) {
    if (!fs::exists(fs::path(ckpt) / ("shard-" + std::to_string(s)) / "manifest.json")) {
      return NotFound(ckpt + " is not a complete checkpoint of the job's " + std::to_string(shards) +
                      " shards: no shard-" + std::to_string(s) + "/manifest.json");
    }
  }

  ExportSummary sum;
  sum.kind = o.since.empty() ? "full" : "delta";
  sum.checkpoint = ckpt;
  sum.shards = shards;
  sum.id = RandomHexId();
  // A delta: every shard's checkpoint must descend from the base's state of that shard (the
  // lineage check, which also refuses a base of another job or a rolled-back history).
  std::vector<ps::ShardBase> since;
  std::string base_id;
  if (!o.since.empty()) {
    METAPS_ASSIGN_OR_RETURN(LoadedSnapshot base, LoadSnapshotManifest(o.since));
    if (static_cast<int>(base.shards.size()) != shards) {
      return FailedPrecondition("--since " + o.since + " has " + std::to_string(base.shards.size()) +
                                " shards, the job has " + std::to_string(shards) +
                                ": export a full snapshot");
    }
    since = std::move(base.shards);
    base_id = base.id;
  }
  sum.out = o.out.empty() ? (run / "snapshots" / (sum.kind + "-" + LocalTimestamp())).string() : o.out;
  if (fs::exists(sum.out))
    return Status(StatusCode::kAlreadyExists, sum.out + " exists; a snapshot is never overwritten");
  const std::string tmp = sum.out + ".tmp-" + std::to_string(getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(fs::path(tmp) / "dense", ec);
  if (ec) return Internal("cannot create " + tmp + ": " + ec.message());
  RemoveAllOnExit guard(tmp);  // on every early return; kept once renamed to `out`

  std::map<std::string, std::vector<ps::SnapshotFile>> files;
  std::map<std::string, std::vector<float>> dense;
  nlohmann::json shard_json = nlohmann::json::array();
  for (int s = 0; s < shards; ++s) {
    const std::string dir = ckpt + "/shard-" + std::to_string(s);
    auto exported = ps::ExportCheckpointShard(dir, s, since.empty() ? nullptr : &since[s], tmp);
    if (!exported.ok() && !o.since.empty()) return exported.status().WithContext("--since " + o.since);
    METAPS_ASSIGN_OR_RETURN(ps::ShardExport e, std::move(exported));
    for (auto& [table, f] : e.files) {
      sum.files++;
      sum.bytes += f.bytes;
      files[table].push_back(f);
    }
    for (auto& [name, values] : e.dense) {
      if (dense.count(name)) return DataLoss("dense tensor " + name + " is stored on more than one shard");
      dense[name] = std::move(values);
    }
    sum.rows += e.rows_exported;
    sum.rows_unchanged += e.rows_unchanged;
    shard_json.push_back({{"shard", s},
                          {"applied_seq", e.applied_seq},
                          {"lineage", ps::LineageToJson(e.lineage)},
                          {"rows", e.rows_exported},
                          {"rows_unchanged", e.rows_unchanged}});
  }
  // Dense tensors the servers never stored still have their initial value.
  auto values_of = [&](const std::string& name, size_t size) -> Result<std::vector<float>> {
    auto it = dense.find(name);
    if (it != dense.end()) return it->second;
    for (const auto& spec : specs) {
      if (spec.name == name && spec.dense) {
        std::vector<float> v(size);
        ps::InitializeRow(spec.init, Hash64(spec.name), 0, v.data(), static_cast<uint32_t>(size));
        return v;
      }
    }
    return NotFound("the job has no dense tensor " + name);
  };
  METAPS_ASSIGN_OR_RETURN(std::vector<float> mlp, values_of("mlp", job.dense_tensors.at("mlp")));
  std::vector<float> alpha;
  if (job.dense_tensors.count("alpha")) {
    METAPS_ASSIGN_OR_RETURN(alpha, values_of("alpha", job.dense_tensors.at("alpha")));
  }
  METAPS_ASSIGN_OR_RETURN(worker::DenseParams params,
                          worker::DenseFromServerValues(job, std::move(mlp), std::move(alpha)));
  nlohmann::json dense_json = nlohmann::json::array();
  METAPS_RETURN_IF_ERROR(WriteDense(tmp, "mlp", params.weights, &dense_json));
  if (!params.alpha.empty()) METAPS_RETURN_IF_ERROR(WriteDense(tmp, "alpha", params.alpha, &dense_json));
  nlohmann::json layout = nlohmann::json::array();
  {
    const auto slots = job.model.param_layout();
    for (size_t i = 0; i < slots.size(); ++i) {
      layout.push_back({{"name", (i % 2 == 0 ? "W" : "b") + std::to_string(i / 2)},
                        {"offset", slots[i].offset},
                        {"shape", i % 2 == 0 ? nlohmann::json{slots[i].rows, slots[i].cols}
                                             : nlohmann::json{slots[i].cols}}});
    }
  }

  std::vector<ps::SnapshotTable> tables;
  for (const auto& [name, dim] : job.sparse_tables) {
    const ps::TableSpec* spec = nullptr;
    for (const auto& s : specs) {
      if (s.name == name) spec = &s;
    }
    if (spec == nullptr || spec->dense || spec->dim != dim) {
      return FailedPrecondition("job.toml has no sparse table " + name + " of dim " + std::to_string(dim));
    }
    ps::SnapshotTable t;
    t.name = name;
    t.dim = dim;
    t.init = spec->init;
    t.files = files[name];
    tables.push_back(std::move(t));
  }
  nlohmann::json m = {{"format", kFormat},
                      {"version", kVersion},
                      {"id", sum.id},
                      {"kind", sum.kind},
                      {"job_id", sched.scheduler.job_id},
                      {"created_unix_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::system_clock::now().time_since_epoch())
                                              .count()},
                      {"source", {{"checkpoint", fs::absolute(ckpt).string()}}},
                      {"shards", shard_json},
                      {"model", worker::JobModelToJson(job)},
                      {"mlp_layout", layout},
                      {"dense", dense_json},
                      {"tables", ps::SnapshotTablesToJson(tables)}};
  if (found.second >= 0) m["source"]["round"] = found.second;
  if (!base_id.empty()) m["base"] = {{"id", base_id}, {"path", fs::absolute(o.since).string()}};
  METAPS_RETURN_IF_ERROR(WriteFileAtomically(tmp + "/manifest.json", m.dump(2) + "\n"));
  fs::create_directories(fs::path(sum.out).parent_path(), ec);
  fs::rename(tmp, sum.out, ec);
  if (ec) return Internal("cannot rename " + tmp + " to " + sum.out + ": " + ec.message());
  guard.Keep();
  return sum;
}

Result<LoadedSnapshot> LoadSnapshot(const std::string& dir) {
  METAPS_ASSIGN_OR_RETURN(LoadedSnapshot s, LoadSnapshotManifest(dir));
  METAPS_RETURN_IF_ERROR(LoadSnapshotDense(&s));
  return s;
}

Result<LoadedSnapshot> LoadSnapshotManifest(const std::string& dir) {
  LoadedSnapshot s;
  s.dir = dir;
  const std::string path = dir + "/manifest.json";
  METAPS_ASSIGN_OR_RETURN(s.manifest, ReadJson(path));
  const nlohmann::json& m = s.manifest;
  if (m.value("format", "") != kFormat) return InvalidArgument(path + ": format is not \"" + kFormat + "\"");
  if (m.value("version", 0) != kVersion) {
    return InvalidArgument(path + ": version " + std::to_string(m.value("version", 0)) +
                           ", this build reads " + std::to_string(kVersion));
  }
  s.id = m.value("id", "");
  s.kind = m.value("kind", "");
  s.job_id = m.value("job_id", "");
  if (s.id.empty()) return InvalidArgument(path + ": id: missing");
  if (s.kind != "full" && s.kind != "delta") return InvalidArgument(path + ": kind: expected full or delta");
  if (s.kind == "delta") {
    if (!m.contains("base") || !m["base"].is_object() || m["base"].value("id", "").empty()) {
      return InvalidArgument(path + ": base.id: a delta needs its base");
    }
    s.base_id = m["base"].value("id", "");
  }
  if (!m.contains("shards") || !m["shards"].is_array()) return InvalidArgument(path + ": shards: missing");
  for (size_t i = 0; i < m["shards"].size(); ++i) {
    const nlohmann::json& sh = m["shards"][i];
    const std::string at = path + ": shards[" + std::to_string(i) + "]";
    if (!sh.is_object() || !sh.contains("applied_seq") || !sh["applied_seq"].is_number_unsigned()) {
      return InvalidArgument(at + ".applied_seq: missing");
    }
    ps::ShardBase b;
    b.applied_seq = sh["applied_seq"].get<uint64_t>();
    if (sh.contains("lineage")) {  // absent in snapshots written before lineages were kept
      METAPS_ASSIGN_OR_RETURN(b.lineage, ps::LineageFromJson(sh["lineage"], at + ".lineage"));
    }
    s.shards.push_back(std::move(b));
  }
  if (!m.contains("model")) return InvalidArgument(path + ": model: missing");
  auto job = worker::JobModelFromJson(m["model"]);
  if (!job.ok()) return job.status().WithContext(path);
  s.job = std::move(job).value();
  if (!m.contains("tables")) return InvalidArgument(path + ": tables: missing");
  auto tables = ps::SnapshotTablesFromJson(m["tables"]);
  if (!tables.ok()) return tables.status().WithContext(path);
  s.tables = std::move(tables).value();
  for (const auto& [name, dim] : s.job.sparse_tables) {
    bool ok = false;
    for (const auto& t : s.tables) ok = ok || (t.name == name && t.dim == dim);
    if (!ok)
      return InvalidArgument(path + ": tables: the model needs " + name + " of dim " + std::to_string(dim));
  }
  if (!m.contains("dense") || !m["dense"].is_array()) return InvalidArgument(path + ": dense: missing");
  return s;
}

Status LoadSnapshotDense(LoadedSnapshot* loaded) {
  LoadedSnapshot& s = *loaded;
  const std::string& dir = s.dir;
  const std::string path = dir + "/manifest.json";
  for (const auto& d : s.manifest["dense"]) {
    const std::string name = d.value("name", ""), rel = d.value("path", "");
    if (rel.empty() || rel.front() == '/' || rel.find("..") != std::string::npos) {
      return InvalidArgument(path + ": dense " + name + ": path must be relative, inside the snapshot");
    }
    const std::string file = dir + "/" + rel;
    METAPS_ASSIGN_OR_RETURN(std::string sum, ps::FileXxh3(file));
    if (sum != d.value("xxh3", ""))
      return DataLoss(file + ": checksum " + sum + ", the manifest says " + d.value("xxh3", ""));
    METAPS_ASSIGN_OR_RETURN(NpyArray a, ReadNpyF32(file));
    if (name == "mlp") {
      s.params.weights = std::move(a.data);
    } else if (name == "alpha") {
      s.params.alpha = std::move(a.data);
    }
  }
  const size_t p = static_cast<size_t>(s.job.model.num_params());
  if (s.params.weights.size() != p) {
    return DataLoss(path + ": dense mlp has " + std::to_string(s.params.weights.size()) +
                    " values, the model " + std::to_string(p));
  }
  if (s.job.dense_tensors.count("alpha") && s.params.alpha.size() != p) {
    return DataLoss(path + ": Meta-SGD needs dense alpha of " + std::to_string(p) + " values");
  }
  return Status::Ok();
}

Status CheckSnapshotChain(const std::vector<LoadedSnapshot>& chain) {
  if (chain.empty()) return InvalidArgument("no snapshot");
  if (chain[0].kind != "full") {
    return InvalidArgument(chain[0].dir +
                           " is a delta; give the full snapshot first, then its deltas in order");
  }
  for (size_t i = 1; i < chain.size(); ++i) {
    if (chain[i].kind != "delta") return InvalidArgument(chain[i].dir + " is a full snapshot, not a delta");
    if (chain[i].base_id != chain[i - 1].id) {
      return InvalidArgument(chain[i].dir + " is a delta on top of snapshot " + chain[i].base_id +
                             ", not of " + chain[i - 1].dir + " (" + chain[i - 1].id + ")");
    }
    if (chain[i].shards.size() != chain[i - 1].shards.size()) {
      return InvalidArgument(chain[i].dir + " has " + std::to_string(chain[i].shards.size()) + " shards, " +
                             chain[i - 1].dir + " has " + std::to_string(chain[i - 1].shards.size()));
    }
    for (size_t s = 0; s < chain[i].shards.size(); ++s) {
      const ps::ShardBase &base = chain[i - 1].shards[s], &later = chain[i].shards[s];
      Status d = ps::CheckDescends(base.lineage, base.applied_seq, later.lineage, later.applied_seq);
      if (!d.ok()) {
        return InvalidArgument(chain[i].dir + ", shard " + std::to_string(s) + ": not on top of " +
                               chain[i - 1].dir + ": " + d.message());
      }
    }
  }
  return Status::Ok();
}

}  // namespace metaps::launch
