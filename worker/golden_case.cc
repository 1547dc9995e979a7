#include "worker/golden_case.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

namespace metaps::worker {
namespace {

using json = nlohmann::ordered_json;

// Reads j[key] as T, or InvalidArgument naming the key.
template <typename T>
Result<T> Get(const json& j, const char* key) {
  if (!j.contains(key)) return InvalidArgument(std::string("golden case: missing \"") + key + "\"");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("golden case: \"") + key + "\": " + e.what());
  }
}

// A per-field property given once for all fields or as a list of one per field.
template <typename T>
Result<std::vector<T>> PerField(const json& j, const char* key, int fields, T fallback) {
  if (!j.contains(key)) return std::vector<T>(fields, fallback);
  const json& v = j.at(key);
  try {
    if (v.is_array()) {
      if (static_cast<int>(v.size()) != fields) {
        return InvalidArgument(std::string("golden case: \"") + key + "\" needs one entry per field");
      }
      return v.get<std::vector<T>>();
    }
    return std::vector<T>(fields, v.get<T>());
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("golden case: \"") + key + "\": " + e.what());
  }
}

Result<std::vector<float>> FlatTensors(const json& j, const char* key, const ModelSpec& model) {
  METAPS_ASSIGN_OR_RETURN(std::vector<std::vector<float>> tensors, Get<std::vector<std::vector<float>>>(j, key));
  const std::vector<TensorSlot> slots = model.param_layout();
  if (tensors.size() != slots.size()) {
    return InvalidArgument(std::string("golden case: \"") + key + "\" needs " + std::to_string(slots.size()) +
                           " tensors");
  }
  std::vector<float> flat;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (static_cast<int64_t>(tensors[i].size()) != slots[i].size()) {
      return InvalidArgument(std::string("golden case: \"") + key + "\"[" + std::to_string(i) + "] has " +
                             std::to_string(tensors[i].size()) + " values, the layers say " +
                             std::to_string(slots[i].size()));
    }
    flat.insert(flat.end(), tensors[i].begin(), tensors[i].end());
  }
  return flat;
}

json TensorsJson(const float* flat, const ModelSpec& model) {
  json out = json::array();
  for (const TensorSlot& s : model.param_layout()) {
    out.push_back(std::vector<double>(flat + s.offset, flat + s.offset + s.size()));
  }
  return out;
}

Result<Key> ParseId(const json& id) {
  if (id.is_number_unsigned()) return id.get<uint64_t>();
  if (id.is_number_integer()) return static_cast<Key>(id.get<int64_t>());
  if (id.is_string()) {
    // Keys are unsigned 64-bit: "18446744073709551615" is an id like "42" (a negative one wraps,
    // as a negative JSON number does).
    const std::string& s = id.get_ref<const std::string&>();
    const char* end = s.data() + s.size();
    uint64_t u = 0;
    int64_t v = 0;
    if (!s.empty() && s[0] != '-') {
      auto [p, ec] = std::from_chars(s.data(), end, u);
      if (ec == std::errc() && p == end) return Key{u};
    } else if (!s.empty()) {
      auto [p, ec] = std::from_chars(s.data(), end, v);
      if (ec == std::errc() && p == end) return static_cast<Key>(v);
    }
  }
  return InvalidArgument("golden case: id " + id.dump() + " is not an integer");
}

Status AddRows(const json& side, const char* name, int fields, Task* task, int* count) {
  if (!side.contains("ids") || !side.contains("y")) {
    return InvalidArgument(std::string("golden case: \"") + name + "\" needs ids and y");
  }
  const json& ids = side.at("ids");
  const json& y = side.at("y");
  if (!ids.is_array() || !y.is_array() || ids.size() != y.size()) {
    return InvalidArgument(std::string("golden case: \"") + name + "\" ids and y differ in length");
  }
  std::vector<std::vector<Key>> bags(fields);
  for (size_t r = 0; r < ids.size(); ++r) {
    const json& row = ids[r];
    if (!row.is_array() || static_cast<int>(row.size()) != fields) {
      return InvalidArgument(std::string("golden case: ") + name + " row " + std::to_string(r) + " needs " +
                             std::to_string(fields) + " bags");
    }
    for (int f = 0; f < fields; ++f) {
      bags[f].clear();
      const json& bag = row[f];
      if (!bag.is_array()) {  // a bare id is a bag of one
        METAPS_ASSIGN_OR_RETURN(Key k, ParseId(bag));
        bags[f].push_back(k);
        continue;
      }
      for (const json& id : bag) {
        METAPS_ASSIGN_OR_RETURN(Key k, ParseId(id));
        bags[f].push_back(k);
      }
    }
    if (!y[r].is_number()) return InvalidArgument(std::string("golden case: ") + name + " label is not a number");
    task->AddRow(bags, y[r].get<float>());
  }
  task->fields = fields;
  *count = static_cast<int>(ids.size());
  return Status::Ok();
}

double Norm(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

double RelativeError(const std::vector<double>& a, const std::vector<double>& e) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - e[i];
  const double ne = Norm(e);
  return ne > 0 ? Norm(d) / ne : Norm(d);
}

Result<std::vector<double>> Numbers(const json& j, const std::string& what) {
  try {
    if (j.is_number()) return std::vector<double>{j.get<double>()};
    return j.get<std::vector<double>>();
  } catch (const json::exception& e) {
    return InvalidArgument(what + ": " + e.what());
  }
}

}  // namespace

Result<GoldenCase> ParseGoldenCase(const json& j) {
  if (!j.is_object()) return InvalidArgument("golden case: not a JSON object");
  GoldenCase c;
  c.name = j.value("name", "");
  // Model.
  METAPS_ASSIGN_OR_RETURN(std::vector<int> layers, Get<std::vector<int>>(j, "layers"));
  if (layers.size() < 2) return InvalidArgument("golden case: \"layers\" needs the input and at least one layer");
  int fields = 0;
  if (j.contains("fields") && j.at("fields").is_array()) {
    fields = static_cast<int>(j.at("fields").size());
  } else {
    METAPS_ASSIGN_OR_RETURN(fields, Get<int>(j, "fields"));
  }
  if (fields <= 0) return InvalidArgument("golden case: needs at least one field");
  METAPS_ASSIGN_OR_RETURN(std::vector<int> dims, PerField<int>(j, "dim", fields, 0));
  METAPS_ASSIGN_OR_RETURN(std::vector<std::string> poolings, PerField<std::string>(j, "pooling", fields, "sum"));
  for (int f = 0; f < fields; ++f) {
    METAPS_ASSIGN_OR_RETURN(Pooling p, ParsePooling(poolings[f]));
    // std::string("f").append(...), not "f" + std::to_string(f): GCC 12 warns a false -Wrestrict
    // on the const char* + string&& operator when it is inlined here.
    c.model.fields.push_back({std::string("f").append(std::to_string(f)), dims[f], p});
  }
  c.model.layers.assign(layers.begin() + 1, layers.end());
  METAPS_ASSIGN_OR_RETURN(std::string loss, Get<std::string>(j, "loss"));
  METAPS_ASSIGN_OR_RETURN(c.model.loss, ParseLoss(loss));
  METAPS_RETURN_IF_ERROR(c.model.Validate().WithContext("golden case"));
  if (c.model.input_width() != layers[0]) {
    return InvalidArgument("golden case: input width " + std::to_string(layers[0]) + " is not the sum of field dims " +
                           std::to_string(c.model.input_width()));
  }
  // Algorithm.
  METAPS_ASSIGN_OR_RETURN(std::string algo, Get<std::string>(j, "algo"));
  METAPS_ASSIGN_OR_RETURN(c.options.algo, ParseAlgo(algo));
  METAPS_ASSIGN_OR_RETURN(c.options.inner_steps, Get<int>(j, "inner_steps"));
  if (c.options.inner_steps < 0) return InvalidArgument("golden case: negative inner_steps");
  METAPS_ASSIGN_OR_RETURN(double lr, Get<double>(j, "inner_lr"));
  c.options.inner_lr = static_cast<float>(lr);
  // Tensors.
  METAPS_ASSIGN_OR_RETURN(c.weights, FlatTensors(j, "weights", c.model));
  if (c.options.algo == Algo::kMetaSgd) {
    if (j.contains("alpha")) {
      METAPS_ASSIGN_OR_RETURN(c.alpha, FlatTensors(j, "alpha", c.model));
    } else {
      c.alpha.assign(c.weights.size(), c.options.inner_lr);
    }
  }
  if (!j.contains("emb") || !j.at("emb").is_object()) return InvalidArgument("golden case: \"emb\" must be an object");
  for (const auto& [id, vec] : j.at("emb").items()) {
    METAPS_ASSIGN_OR_RETURN(Key k, ParseId(json(id)));
    c.emb_ids.push_back(id);
    c.emb_keys.push_back(k);
    METAPS_ASSIGN_OR_RETURN(std::vector<double> v, Numbers(vec, "golden case: emb " + id));
    c.emb_values.emplace_back(v.begin(), v.end());
  }
  // The task.
  if (!j.contains("support") || !j.contains("query")) return InvalidArgument("golden case: needs support and query");
  METAPS_RETURN_IF_ERROR(AddRows(j.at("support"), "support", fields, &c.task, &c.task.num_support));
  METAPS_RETURN_IF_ERROR(AddRows(j.at("query"), "query", fields, &c.task, &c.task.num_query));
  c.expect = j.contains("expect") ? j.at("expect") : json();
  return c;
}

Result<GoldenCase> LoadGoldenCase(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot open golden case " + path);
  json j;
  try {
    in >> j;
  } catch (const json::exception& e) {
    return InvalidArgument(path + ": " + e.what());
  }
  auto c = ParseGoldenCase(j);
  if (!c.ok()) return c.status().WithContext(path);
  return c;
}

Result<json> RunGoldenCase(const GoldenCase& c, Kernels* kernels) {
  TaskBatchBuilder builder;
  TaskBatch batch;
  const Task* tasks[] = {&c.task};
  METAPS_RETURN_IF_ERROR(builder.Build(c.model, tasks, &batch));

  // The rows the batch touches, in its local order.
  std::map<Key, size_t> by_key;
  for (size_t i = 0; i < c.emb_keys.size(); ++i) by_key[c.emb_keys[i]] = i;
  std::vector<float> rows(batch.num_values());
  for (size_t i = 0; i < batch.keys.size(); ++i) {
    auto it = by_key.find(batch.keys[i]);
    if (it == by_key.end()) return NotFound("golden case: id " + std::to_string(batch.keys[i]) + " is not in emb");
    const std::vector<float>& v = c.emb_values[it->second];
    if (static_cast<int64_t>(v.size()) != batch.row_offsets[i + 1] - batch.row_offsets[i]) {
      return InvalidArgument("golden case: emb " + std::to_string(batch.keys[i]) + " is not as wide as its field");
    }
    std::copy(v.begin(), v.end(), rows.begin() + batch.row_offsets[i]);
  }

  MetaLearner learner(c.model, c.options, kernels);
  MetaGradient g;
  METAPS_RETURN_IF_ERROR(learner.Compute(batch, c.weights, c.alpha, rows, /*want_adapted=*/true, &g));

  const bool reptile = c.options.algo == Algo::kReptile;
  const bool metasgd = c.options.algo == Algo::kMetaSgd;
  std::vector<std::string> keys;
  if (c.expect.is_object()) {
    for (const auto& [k, v] : c.expect.items()) keys.push_back(k);
  } else {
    keys = {"adapted_weights", "query_loss", reptile ? "update" : "grad_weights", "grad_emb"};
    if (metasgd) keys.push_back("grad_alpha");
  }
  json out = json::object();
  for (const std::string& k : keys) {
    if (k == "adapted_weights") {
      out[k] = TensorsJson(g.adapted.data(), c.model);
    } else if (k == "query_loss") {
      out[k] = static_cast<double>(g.query_loss[0]);
    } else if ((k == "grad_weights" && !reptile) || (k == "update" && reptile)) {
      out[k] = TensorsJson(g.weights.data(), c.model);
    } else if (k == "grad_alpha" && metasgd) {
      out[k] = TensorsJson(g.alpha.data(), c.model);
    } else if (k == "grad_emb") {
      std::map<Key, size_t> local;
      for (size_t i = 0; i < batch.keys.size(); ++i) local[batch.keys[i]] = i;
      json emb = json::object();
      for (size_t i = 0; i < c.emb_ids.size(); ++i) {
        auto it = local.find(c.emb_keys[i]);
        if (it == local.end()) {
          emb[c.emb_ids[i]] = std::vector<double>(c.emb_values[i].size(), 0.0);
        } else {
          const float* v = g.rows.data() + batch.row_offsets[it->second];
          emb[c.emb_ids[i]] = std::vector<double>(v, v + (batch.row_offsets[it->second + 1] - batch.row_offsets[it->second]));
        }
      }
      out[k] = std::move(emb);
    } else {
      return Unimplemented("golden case: cannot compute \"" + k + "\" for algo " + std::string(AlgoName(c.options.algo)));
    }
  }
  return out;
}

Result<std::map<std::string, double>> CompareToExpected(const json& actual, const json& expected) {
  if (!expected.is_object() || !actual.is_object()) return InvalidArgument("compare: both sides must be objects");
  std::map<std::string, double> errors;
  for (const auto& [key, e] : expected.items()) {
    if (!actual.contains(key)) return InvalidArgument("compare: the answer lacks \"" + key + "\"");
    const json& a = actual.at(key);
    if (e.is_number()) {
      METAPS_ASSIGN_OR_RETURN(std::vector<double> av, Numbers(a, key));
      if (av.size() != 1) return InvalidArgument("compare: \"" + key + "\" is not a number");
      errors[key] = RelativeError(av, {e.get<double>()});
    } else if (e.is_array()) {
      if (!a.is_array() || a.size() != e.size()) return InvalidArgument("compare: \"" + key + "\" differs in length");
      for (size_t i = 0; i < e.size(); ++i) {
        const std::string name = key + "[" + std::to_string(i) + "]";
        METAPS_ASSIGN_OR_RETURN(std::vector<double> ev, Numbers(e[i], name));
        METAPS_ASSIGN_OR_RETURN(std::vector<double> av, Numbers(a[i], name));
        if (av.size() != ev.size()) return InvalidArgument("compare: \"" + name + "\" differs in size");
        errors[name] = RelativeError(av, ev);
      }
    } else if (e.is_object()) {
      // An id -> vector map: one tensor over all rows, and each row on its own.
      std::vector<double> all_a, all_e;
      for (const auto& [id, ev_json] : e.items()) {
        const std::string name = key + "/" + id;
        if (!a.is_object() || !a.contains(id)) return InvalidArgument("compare: the answer lacks \"" + name + "\"");
        METAPS_ASSIGN_OR_RETURN(std::vector<double> ev, Numbers(ev_json, name));
        METAPS_ASSIGN_OR_RETURN(std::vector<double> av, Numbers(a.at(id), name));
        if (av.size() != ev.size()) return InvalidArgument("compare: \"" + name + "\" differs in size");
        errors[name] = RelativeError(av, ev);
        all_a.insert(all_a.end(), av.begin(), av.end());
        all_e.insert(all_e.end(), ev.begin(), ev.end());
      }
      errors[key] = RelativeError(all_a, all_e);
    } else {
      return InvalidArgument("compare: \"" + key + "\" has an unexpected type");
    }
  }
  return errors;
}

}  // namespace metaps::worker
