// fuzz_score_request: untrusted bytes -> JSON -> ParseScoreRequest, the body of serving's
// POST /score (worker/score_request.h), for a model with a one-hot, a sum bag and a mean bag field.
// Bytes that are not JSON are the HTTP handler's 400 before this; everything that is JSON must give
// a well-formed Task or InvalidArgument naming a place, never a crash.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_util.h"
#include "worker/score_request.h"

using namespace metaps;  // NOLINT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const worker::ModelSpec model = [] {
    worker::ModelSpec m;
    m.fields = {worker::FieldSpec{.name = "user", .dim = 4},
                worker::FieldSpec{.name = "genres", .dim = 4, .pooling = worker::Pooling::kMean},
                worker::FieldSpec{.name = "tags", .dim = 2}};
    m.layers = {3, 1};
    return m;
  }();
  worker::ScoreRequestLimits limits;
  limits.max_support = 64;
  limits.max_candidates = 64;
  limits.max_values_per_field = 16;
  auto body = nlohmann::json::parse(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size,
                                    nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  auto task = worker::ParseScoreRequest(model, body, limits);
  if (!task.ok()) {
    FUZZ_CHECK(task.status().code() == StatusCode::kInvalidArgument, task.status().ToString());
    FUZZ_CHECK(!task.status().message().empty(), "an error without a message");
    return 0;
  }
  const worker::Task& t = *task;
  FUZZ_CHECK(t.fields == model.num_fields(), "field count");
  FUZZ_CHECK(t.num_query >= 1, "no candidates");
  FUZZ_CHECK(t.num_support >= 0 && static_cast<size_t>(t.num_support) <= limits.max_support, "support count");
  FUZZ_CHECK(static_cast<size_t>(t.num_query) <= limits.max_candidates, "candidate count");
  FUZZ_CHECK(t.labels.size() == static_cast<size_t>(t.rows()), "one label per row");
  FUZZ_CHECK(t.offsets.size() == static_cast<size_t>(t.rows()) * t.fields + 1, "offsets per row and field");
  FUZZ_CHECK(t.offsets.front() == 0 && static_cast<size_t>(t.offsets.back()) == t.keys.size(), "offsets cover keys");
  for (size_t i = 1; i < t.offsets.size(); ++i) {
    FUZZ_CHECK(t.offsets[i] >= t.offsets[i - 1], "offsets ascend");
    FUZZ_CHECK(t.offsets[i] - t.offsets[i - 1] <= static_cast<int32_t>(limits.max_values_per_field), "bag size");
  }
  for (int r = 0; r < t.rows(); ++r) {
    FUZZ_CHECK(std::isfinite(t.labels[r]), "a label that is not finite");
    if (r >= t.num_support) FUZZ_CHECK(t.labels[r] == 0.f, "a candidate with a label");
  }
  return 0;
}
