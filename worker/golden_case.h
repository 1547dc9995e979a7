// Golden meta-gradient cases (../shared/golden/*.json, format in ../shared/README.md): parsing one
// into engine inputs, running it through a MetaLearner, and comparing answers.
//
// A case is one task with every input explicit (model shape, MLP weights, embedding rows by id,
// support and query bags, algorithm and inner loop) and the outputs PyTorch autograd computed in
// float64 under `expect`. RunGoldenCase answers with a JSON object holding the same keys as `expect`
// (or, when a case has none, every output its algorithm defines), shaped the same way: tensors as a
// list of flat lists in W0, b0, W1, b1 order, grad_emb as id -> vector for every id of `emb`.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "worker/kernels.h"
#include "worker/meta_learner.h"
#include "worker/model.h"
#include "worker/task_batch.h"

namespace metaps::worker {

struct GoldenCase {
  std::string name;
  ModelSpec model;
  MetaOptions options;
  std::vector<float> weights;
  std::vector<float> alpha;  // Meta-SGD only
  Task task;
  // The case's embedding rows, in the order of `emb`, with the id spelled as in the file.
  std::vector<std::string> emb_ids;
  std::vector<Key> emb_keys;
  std::vector<std::vector<float>> emb_values;
  nlohmann::ordered_json expect;  // null when absent
};

// `fields`, `dim` and `pooling` may each be one value for every field or a list with one per field.
Result<GoldenCase> ParseGoldenCase(const nlohmann::ordered_json& j);
Result<GoldenCase> LoadGoldenCase(const std::string& path);

// Computes the case on `kernels` in float32.
Result<nlohmann::ordered_json> RunGoldenCase(const GoldenCase& c, Kernels* kernels);

// Relative error of each tensor of `actual` against `expected` (|a - e| / |e|, Euclidean norms;
// the absolute difference when |e| is 0), keyed "grad_weights[2]", "query_loss", "grad_emb", and,
// for each embedding row, "grad_emb/<id>". InvalidArgument when a key or shape is missing or differs.
Result<std::map<std::string, double>> CompareToExpected(const nlohmann::ordered_json& actual, const nlohmann::ordered_json& expected);

}  // namespace metaps::worker
