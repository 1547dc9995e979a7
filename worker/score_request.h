// A serving request (`POST /score`, docs/snapshot.md) as a Task: the user's support events with
// their labels, then the candidates, each event's field values turned into feature keys exactly as
// the data readers key them (FeatureKey(field, value)). Untrusted input: anything malformed is an
// InvalidArgument naming its place (`support[3].fields.genres[0]: ...`), never a crash
// (fuzz/fuzz_score_request.cc).
#pragma once

#include <cstddef>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "worker/model.h"
#include "worker/task_batch.h"

namespace metaps::worker {

struct ScoreRequestLimits {
  size_t max_support = 10000;
  size_t max_candidates = 100000;
  size_t max_values_per_field = 1000;
};

// {"support": [{"fields": {...}, "label": x}, ...] (optional), "candidates": [{"fields": {...}}, ...]}.
// A field's value: a string, an integer (its decimal text), a list of those (a bag), or null.
// The result has model.num_fields() fields, num_support support rows, num_query >= 1 candidates
// (labels 0).
Result<Task> ParseScoreRequest(const ModelSpec& model, const nlohmann::json& body,
                               const ScoreRequestLimits& limits = {});

}  // namespace metaps::worker
