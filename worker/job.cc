#include "worker/job.h"

#include <charconv>
#include <cmath>
#include <random>
#include <set>
#include <sstream>

#include "worker/task_sampler.h"

namespace metaps::worker {

std::vector<float> JobModel::InitialWeights() const {
  std::vector<float> w(model.num_params(), 0.f);
  std::mt19937_64 rng(init_seed);
  auto layout = model.param_layout();
  // Slots alternate W, b per layer; weights get He-normal values, biases stay zero.
  for (size_t s = 0; s < layout.size(); s += 2) {
    const TensorSlot& slot = layout[s];
    std::normal_distribution<double> n(0.0, std::sqrt(2.0 / static_cast<double>(slot.rows)));
    for (int64_t i = 0; i < slot.size(); ++i) w[slot.offset + i] = static_cast<float>(n(rng));
  }
  return w;
}

Result<JobModel> BuildJobModel(const Config& root, const data::Dataset& dataset) {
  JobModel j;
  METAPS_ASSIGN_OR_RETURN(Config m, root.GetTable("model"));
  METAPS_RETURN_IF_ERROR(m.CheckKnownKeys({"hidden", "loss", "init_seed"}));
  std::vector<int64_t> hidden = {64, 32};
  if (m.Has("hidden")) {
    METAPS_ASSIGN_OR_RETURN(hidden, m.GetIntArray("hidden"));
  }
  for (size_t i = 0; i < hidden.size(); ++i) {
    if (hidden[i] < 1 || hidden[i] > 65536) {
      return InvalidArgument(m.Path("hidden") + "[" + std::to_string(i) + "]: width must be in [1, 65536]");
    }
  }
  METAPS_ASSIGN_OR_RETURN(std::string loss, m.GetString("loss", dataset.binary_labels() ? "bce" : "mse"));
  auto l = ParseLoss(loss);
  if (!l.ok()) return InvalidArgument(m.Path("loss") + ": " + l.status().message());
  j.model.loss = *l;
  METAPS_ASSIGN_OR_RETURN(int64_t seed, m.GetInt("init_seed", 7));
  j.init_seed = static_cast<uint64_t>(seed);
  int input = 0;
  for (const auto& f : dataset.schema()) {
    FieldSpec fs;
    fs.name = f.name;
    fs.dim = static_cast<int>(f.dim);
    fs.pooling = f.pooling == data::FieldSpec::Pooling::kMean ? Pooling::kMean : Pooling::kSum;
    j.model.fields.push_back(fs);
    input += fs.dim;
    j.sparse_tables[JobModel::TableFor(f.dim)] = f.dim;
  }
  j.model.layers.push_back(input);
  for (int64_t h : hidden) j.model.layers.push_back(static_cast<int>(h));
  j.model.layers.push_back(1);
  METAPS_RETURN_IF_ERROR(j.model.Validate().WithContext(m.Path("hidden")));
  METAPS_ASSIGN_OR_RETURN(Config meta, root.GetTable("meta"));
  METAPS_ASSIGN_OR_RETURN(j.meta, MetaOptions::FromConfig(meta));
  j.dense_tensors["mlp"] = static_cast<size_t>(j.model.num_params());
  if (j.meta.algo == Algo::kMetaSgd) j.dense_tensors["alpha"] = static_cast<size_t>(j.model.num_params());
  return j;
}

nlohmann::json JobModelToJson(const JobModel& job) {
  nlohmann::json fields = nlohmann::json::array();
  for (const auto& f : job.model.fields) {
    fields.push_back({{"name", f.name}, {"dim", f.dim}, {"pooling", std::string(PoolingName(f.pooling))}});
  }
  return {{"fields", fields},
          {"layers", job.model.layers},
          {"loss", std::string(LossName(job.model.loss))},
          {"init_seed", job.init_seed},
          {"meta",
           {{"algo", std::string(AlgoName(job.meta.algo))},
            {"inner_steps", job.meta.inner_steps},
            {"inner_lr", job.meta.inner_lr},
            {"adapt_last_layers", job.meta.adapt_last_layers},
            {"first_layer", std::string(FirstLayerName(job.meta.first_layer))}}}};
}

Result<JobModel> JobModelFromJson(const nlohmann::json& j) {
  JobModel job;
  std::string at = "model";
  try {
    at = "model.fields";
    for (const auto& f : j.at("fields")) {
      FieldSpec fs;
      fs.name = f.at("name").get<std::string>();
      fs.dim = f.at("dim").get<int>();
      auto pooling = ParsePooling(f.at("pooling").get<std::string>());
      if (!pooling.ok()) return pooling.status().WithContext(at);
      fs.pooling = *pooling;
      job.model.fields.push_back(fs);
      if (fs.dim > 0)
        job.sparse_tables[JobModel::TableFor(static_cast<uint32_t>(fs.dim))] = static_cast<uint32_t>(fs.dim);
    }
    at = "model.layers";
    job.model.layers = j.at("layers").get<std::vector<int>>();
    at = "model.loss";
    auto loss = ParseLoss(j.at("loss").get<std::string>());
    if (!loss.ok()) return loss.status().WithContext(at);
    job.model.loss = *loss;
    at = "model.init_seed";
    job.init_seed = j.at("init_seed").get<uint64_t>();
    const nlohmann::json& m = j.at("meta");
    at = "model.meta.algo";
    auto algo = ParseAlgo(m.at("algo").get<std::string>());
    if (!algo.ok()) return algo.status().WithContext(at);
    job.meta.algo = *algo;
    at = "model.meta.inner_steps";
    job.meta.inner_steps = m.at("inner_steps").get<int>();
    at = "model.meta.inner_lr";
    job.meta.inner_lr = m.at("inner_lr").get<float>();
    at = "model.meta.adapt_last_layers";
    job.meta.adapt_last_layers = m.at("adapt_last_layers").get<int>();
    at = "model.meta.first_layer";
    auto first = ParseFirstLayer(m.at("first_layer").get<std::string>());
    if (!first.ok()) return first.status().WithContext(at);
    job.meta.first_layer = *first;
  } catch (const std::exception& e) {
    return InvalidArgument(at + ": " + e.what());
  }
  if (job.meta.inner_steps < 0 || !(job.meta.inner_lr >= 0) || job.meta.adapt_last_layers < 0) {
    return InvalidArgument("model.meta: inner_steps, inner_lr and adapt_last_layers must be >= 0");
  }
  METAPS_RETURN_IF_ERROR(job.model.Validate().WithContext("model"));
  job.dense_tensors["mlp"] = static_cast<size_t>(job.model.num_params());
  if (job.meta.algo == Algo::kMetaSgd)
    job.dense_tensors["alpha"] = static_cast<size_t>(job.model.num_params());
  return job;
}

namespace {

// The shortest text that parses back to exactly `v` (a stream's default 6 digits would round the
// user's settings on their way to the servers). Integral values print without a point, which
// the servers read as numbers too; inf and nan print as TOML spells them.
std::string TomlNumber(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace

Result<std::string> TablesToml(const Config& root, const JobModel& job) {
  METAPS_ASSIGN_OR_RETURN(Config o, root.GetTable("optimizer"));
  METAPS_RETURN_IF_ERROR(o.CheckKnownKeys({"optimizer", "lr", "beta1", "beta2", "eps", "l1", "l2", "init_scale",
                                           "dense_lr"}));
  METAPS_ASSIGN_OR_RETURN(std::string name, o.GetString("optimizer", "adam"));
  METAPS_ASSIGN_OR_RETURN(double lr, o.GetDouble("lr", 0.001));
  METAPS_ASSIGN_OR_RETURN(double dense_lr, o.GetDouble("dense_lr", lr));
  METAPS_ASSIGN_OR_RETURN(double init_scale, o.GetDouble("init_scale", 0.01));
  std::ostringstream t;
  auto hyper = [&](std::ostream& os) -> Status {
    for (const char* k : {"beta1", "beta2", "eps", "l1", "l2"}) {
      if (o.Has(k)) {
        METAPS_ASSIGN_OR_RETURN(double v, o.GetDouble(k));
        os << k << " = " << TomlNumber(v) << "\n";
      }
    }
    return Status::Ok();
  };
  for (const auto& [table, dim] : job.sparse_tables) {
    t << "[[tables]]\nname = \"" << table << "\"\ndim = " << dim << "\noptimizer = \"" << name
      << "\"\nlr = " << TomlNumber(lr) << "\ninit = \"normal\"\ninit_scale = " << TomlNumber(init_scale)
      << "\n";
    METAPS_RETURN_IF_ERROR(hyper(t));
    t << "\n";
  }
  for (const auto& [tensor, size] : job.dense_tensors) {
    t << "[[tables]]\nname = \"" << tensor << "\"\ndim = " << size << "\ndense = true\noptimizer = \"" << name
      << "\"\nlr = " << TomlNumber(dense_lr) << "\ninit = \"zeros\"\n";
    METAPS_RETURN_IF_ERROR(hyper(t));
    t << "\n";
  }
  return t.str();
}

Task MakeTask(const data::Dataset& dataset, uint64_t user, std::span<const uint32_t> support,
              std::span<const uint32_t> query) {
  Task t;
  t.user = user;
  t.fields = static_cast<int>(dataset.num_fields());
  for (uint32_t e : support) t.AddRow(dataset.FieldBags(e), dataset.label(e));
  for (uint32_t e : query) t.AddRow(dataset.FieldBags(e), dataset.label(e));
  t.num_support = static_cast<int>(support.size());
  t.num_query = static_cast<int>(query.size());
  return t;
}

std::vector<size_t> PartitionEvents(const data::Split& split, int worker, int workers) {
  std::vector<size_t> out;
  for (size_t u = 0; u < split.train.size(); ++u) {
    if (static_cast<int>(u % workers) != worker) continue;
    out.insert(out.end(), split.train[u].events.begin(), split.train[u].events.end());
  }
  return out;
}

}  // namespace metaps::worker
