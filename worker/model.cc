#include "worker/model.h"

#include <numeric>

namespace metaps::worker {

Result<Pooling> ParsePooling(std::string_view name) {
  if (name == "sum") return Pooling::kSum;
  if (name == "mean") return Pooling::kMean;
  return InvalidArgument("unknown pooling \"" + std::string(name) + "\" (expected sum or mean)");
}

Result<Loss> ParseLoss(std::string_view name) {
  if (name == "mse") return Loss::kMse;
  if (name == "bce") return Loss::kBce;
  return InvalidArgument("unknown loss \"" + std::string(name) + "\" (expected mse or bce)");
}

std::string_view PoolingName(Pooling p) { return p == Pooling::kSum ? "sum" : "mean"; }
std::string_view LossName(Loss l) { return l == Loss::kMse ? "mse" : "bce"; }

Result<ModelSpec> ModelSpec::FromConfig(const Config& model) {
  METAPS_RETURN_IF_ERROR(model.CheckKnownKeys({"layers", "loss", "fields"}));
  ModelSpec spec;
  METAPS_ASSIGN_OR_RETURN(std::vector<int64_t> layers, model.GetIntArray("layers"));
  for (int64_t w : layers) {
    if (w <= 0 || w > (1 << 20)) return InvalidArgument(model.Path("layers") + ": widths must be in [1, 2^20]");
    spec.layers.push_back(static_cast<int>(w));
  }
  METAPS_ASSIGN_OR_RETURN(std::string loss, model.GetString("loss", "mse"));
  auto parsed_loss = ParseLoss(loss);
  if (!parsed_loss.ok()) return parsed_loss.status().WithContext(model.Path("loss"));
  spec.loss = *parsed_loss;
  METAPS_ASSIGN_OR_RETURN(std::vector<Config> fields, model.GetTableArray("fields"));
  for (const Config& f : fields) {
    METAPS_RETURN_IF_ERROR(f.CheckKnownKeys({"name", "dim", "pooling"}));
    FieldSpec field;
    METAPS_ASSIGN_OR_RETURN(field.name, f.GetString("name"));
    METAPS_ASSIGN_OR_RETURN(int64_t dim, f.GetIntIn("dim", 0, 1, 1 << 16));
    field.dim = static_cast<int>(dim);
    METAPS_ASSIGN_OR_RETURN(std::string pooling, f.GetString("pooling", "sum"));
    auto parsed = ParsePooling(pooling);
    if (!parsed.ok()) return parsed.status().WithContext(f.Path("pooling"));
    field.pooling = *parsed;
    spec.fields.push_back(std::move(field));
  }
  METAPS_RETURN_IF_ERROR(spec.Validate().WithContext(model.path().empty() ? "model" : model.path()));
  return spec;
}

Status ModelSpec::Validate() const {
  if (fields.empty()) return InvalidArgument("the model has no fields");
  if (layers.empty()) return InvalidArgument("the model has no layers");
  for (const FieldSpec& f : fields) {
    if (f.dim <= 0) return InvalidArgument("field \"" + f.name + "\" has a non-positive dim");
  }
  for (int w : layers) {
    if (w <= 0) return InvalidArgument("layer widths must be positive");
  }
  if (layers.back() != 1) return InvalidArgument("the output layer must have width 1");
  return Status::Ok();
}

int ModelSpec::input_width() const {
  int w = 0;
  for (const FieldSpec& f : fields) w += f.dim;
  return w;
}

int ModelSpec::field_offset(int f) const {
  int w = 0;
  for (int i = 0; i < f; ++i) w += fields[i].dim;
  return w;
}

std::vector<int> ModelSpec::widths() const {
  std::vector<int> w{input_width()};
  w.insert(w.end(), layers.begin(), layers.end());
  return w;
}

std::vector<TensorSlot> ModelSpec::param_layout() const {
  std::vector<TensorSlot> slots;
  std::vector<int> w = widths();
  int64_t offset = 0;
  for (size_t l = 0; l + 1 < w.size(); ++l) {
    slots.push_back({offset, w[l], w[l + 1]});
    offset += slots.back().size();
    slots.push_back({offset, 1, w[l + 1]});
    offset += slots.back().size();
  }
  return slots;
}

int64_t ModelSpec::num_params() const {
  int64_t n = 0;
  for (const TensorSlot& s : param_layout()) n += s.size();
  return n;
}

}  // namespace metaps::worker
