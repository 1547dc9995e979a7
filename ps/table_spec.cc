#include "ps/table_spec.h"

#include <set>

namespace metaps::ps {

namespace {

// Which hyperparameter keys each optimizer reads.
bool UsesKey(OptimizerKind kind, std::string_view key) {
  if (key == "lr") return true;
  switch (kind) {
    case OptimizerKind::kSgd: return false;
    case OptimizerKind::kAdagrad: return key == "eps" || key == "initial_accumulator";
    case OptimizerKind::kAdam: return key == "beta1" || key == "beta2" || key == "eps";
    case OptimizerKind::kFtrl:
      return key == "l1" || key == "l2" || key == "beta" || key == "lr_power" || key == "initial_accumulator";
  }
  return false;
}

constexpr std::string_view kHyperKeys[] = {"lr", "beta1", "beta2", "eps", "initial_accumulator",
                                           "l1", "l2",    "beta",  "lr_power"};

}  // namespace

Result<TableSpec> ParseTableSpec(const Config& entry) {
  METAPS_RETURN_IF_ERROR(entry.CheckKnownKeys({"name", "dim", "dense", "optimizer", "lr", "beta1", "beta2", "eps",
                                               "initial_accumulator", "l1", "l2", "beta", "lr_power", "init",
                                               "init_scale", "seed"}));
  TableSpec t;
  METAPS_ASSIGN_OR_RETURN(t.name, entry.GetString("name"));
  if (t.name.empty()) return InvalidArgument(entry.Path("name") + ": must not be empty");
  METAPS_ASSIGN_OR_RETURN(int64_t dim, entry.GetInt("dim"));
  if (dim < 1 || dim > (int64_t{1} << 30)) {
    return InvalidArgument(entry.Path("dim") + ": must be in [1, 2^30], got " + std::to_string(dim));
  }
  t.dim = static_cast<uint32_t>(dim);
  METAPS_ASSIGN_OR_RETURN(t.dense, entry.GetBool("dense", false));

  METAPS_ASSIGN_OR_RETURN(std::string opt_name, entry.GetString("optimizer", "sgd"));
  auto kind = ParseOptimizerKind(opt_name);
  if (!kind.ok()) return kind.status().WithContext(entry.Path("optimizer"));
  t.optimizer = DefaultOptimizerSpec(*kind);
  for (std::string_view k : kHyperKeys) {
    if (entry.Has(k) && !UsesKey(*kind, k)) {
      return InvalidArgument(entry.Path(k) + ": not a hyperparameter of optimizer \"" + opt_name + "\"");
    }
  }
  auto read = [&](std::string_view key, float* field) -> Status {
    METAPS_ASSIGN_OR_RETURN(double v, entry.GetDouble(key, *field));
    *field = static_cast<float>(v);
    return Status::Ok();
  };
  OptimizerSpec& o = t.optimizer;
  METAPS_RETURN_IF_ERROR(read("lr", &o.lr));
  METAPS_RETURN_IF_ERROR(read("beta1", &o.beta1));
  METAPS_RETURN_IF_ERROR(read("beta2", &o.beta2));
  METAPS_RETURN_IF_ERROR(read("eps", &o.eps));
  METAPS_RETURN_IF_ERROR(read("initial_accumulator", &o.initial_accumulator));
  METAPS_RETURN_IF_ERROR(read("l1", &o.l1));
  METAPS_RETURN_IF_ERROR(read("l2", &o.l2));
  METAPS_RETURN_IF_ERROR(read("beta", &o.beta));
  METAPS_RETURN_IF_ERROR(read("lr_power", &o.lr_power));
  // Validation messages from the optimizer itself, attributed to the table.
  auto opt = Optimizer::Create(o);
  if (!opt.ok()) return opt.status().WithContext(entry.path());

  METAPS_ASSIGN_OR_RETURN(std::string init_name, entry.GetString("init", "normal"));
  auto ik = ParseInitKind(init_name);
  if (!ik.ok()) return ik.status().WithContext(entry.Path("init"));
  t.init.kind = *ik;
  METAPS_ASSIGN_OR_RETURN(double scale, entry.GetDouble("init_scale", 0.01));
  if (!(scale >= 0)) return InvalidArgument(entry.Path("init_scale") + ": must be >= 0");
  t.init.scale = static_cast<float>(scale);
  METAPS_ASSIGN_OR_RETURN(int64_t seed, entry.GetInt("seed", 0));
  t.init.seed = static_cast<uint64_t>(seed);
  return t;
}

Result<std::vector<TableSpec>> ParseTableSpecs(const Config& root) {
  METAPS_ASSIGN_OR_RETURN(std::vector<Config> entries, root.GetTableArray("tables"));
  std::vector<TableSpec> out;
  std::set<std::string> names;
  for (const Config& e : entries) {
    METAPS_ASSIGN_OR_RETURN(TableSpec t, ParseTableSpec(e));
    if (!names.insert(t.name).second) {
      return InvalidArgument(e.Path("name") + ": duplicate table name \"" + t.name + "\"");
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace metaps::ps
