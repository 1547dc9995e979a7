#include "worker/score_request.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/keys.h"

namespace metaps::worker {

namespace {

// The text a feature value stands for: strings as they are, integers in decimal.
Result<std::string> ValueText(const nlohmann::json& v, const std::string& at) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer())
    return v.is_number_unsigned() ? std::to_string(v.get<uint64_t>()) : std::to_string(v.get<int64_t>());
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15)
      return std::to_string(static_cast<int64_t>(d));
    return InvalidArgument(at + ": a feature value must be a string or an integer, got " + v.dump());
  }
  return InvalidArgument(at + ": a feature value must be a string or an integer, got " + v.dump());
}

}  // namespace

Result<Task> ParseScoreRequest(const ModelSpec& model, const nlohmann::json& body,
                               const ScoreRequestLimits& limits) {
  if (!body.is_object())
    return InvalidArgument("the request must be a JSON object with \"support\" and \"candidates\"");
  for (const auto& [k, v] : body.items()) {
    if (k != "support" && k != "candidates")
      return InvalidArgument("unknown key \"" + k + "\" (expected support, candidates)");
  }
  const int nf = model.num_fields();
  Task task;
  task.fields = nf;
  std::vector<std::vector<Key>> bags(nf);
  auto add_rows = [&](const char* name, bool labelled, size_t limit) -> Result<int> {
    if (!body.contains(name)) {
      if (labelled) return 0;
      return InvalidArgument(std::string(name) + ": missing");
    }
    const nlohmann::json& rows = body[name];
    if (!rows.is_array()) return InvalidArgument(std::string(name) + ": must be a list of events");
    if (rows.size() > limit) {
      return InvalidArgument(std::string(name) + ": " + std::to_string(rows.size()) + " events, at most " +
                             std::to_string(limit));
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string at = std::string(name) + "[" + std::to_string(i) + "]";
      const nlohmann::json& e = rows[i];
      if (!e.is_object()) return InvalidArgument(at + ": must be an object with \"fields\"");
      for (auto& b : bags) b.clear();
      float label = 0.f;
      for (const auto& [k, v] : e.items()) {
        if (k == "fields") continue;
        if (k == "label") {
          if (!labelled) return InvalidArgument(at + ".label: candidates have no label");
          // (Within float's range: a larger double does not convert.)
          if (!v.is_number() || !(std::fabs(v.get<double>()) <= std::numeric_limits<float>::max()))
            return InvalidArgument(at + ".label: must be a finite number");
          label = static_cast<float>(v.get<double>());
          continue;
        }
        return InvalidArgument(at + ": unknown key \"" + k + "\" (expected fields" +
                               (labelled ? ", label" : "") + ")");
      }
      if (labelled && !e.contains("label"))
        return InvalidArgument(at + ".label: missing (a support event needs its label)");
      if (!e.contains("fields") || !e["fields"].is_object())
        return InvalidArgument(at + ".fields: must be an object");
      for (const auto& [field, v] : e["fields"].items()) {
        int f = -1;
        for (int j = 0; j < nf; ++j) {
          if (model.fields[j].name == field) f = j;
        }
        const std::string fat = at + ".fields." + field;
        if (f < 0) {
          std::string names;
          for (const auto& mf : model.fields) names += (names.empty() ? "" : ", ") + mf.name;
          return InvalidArgument(fat + ": the model has no field \"" + field + "\" (its fields: " + names +
                                 ")");
        }
        if (v.is_null()) continue;
        if (v.is_array()) {
          if (v.size() > limits.max_values_per_field) {
            return InvalidArgument(fat + ": " + std::to_string(v.size()) + " values, at most " +
                                   std::to_string(limits.max_values_per_field));
          }
          for (size_t k = 0; k < v.size(); ++k) {
            METAPS_ASSIGN_OR_RETURN(std::string text, ValueText(v[k], fat + "[" + std::to_string(k) + "]"));
            bags[f].push_back(FeatureKey(field, text));
          }
        } else {
          METAPS_ASSIGN_OR_RETURN(std::string text, ValueText(v, fat));
          bags[f].push_back(FeatureKey(field, text));
        }
      }
      task.AddRow(bags, label);
    }
    return static_cast<int>(rows.size());
  };
  METAPS_ASSIGN_OR_RETURN(task.num_support, add_rows("support", true, limits.max_support));
  METAPS_ASSIGN_OR_RETURN(task.num_query, add_rows("candidates", false, limits.max_candidates));
  if (task.num_query == 0) return InvalidArgument("candidates: empty; nothing to score");

  return task;
}

}  // namespace metaps::worker
