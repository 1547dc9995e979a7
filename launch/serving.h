// Serving a snapshot: adapts the meta-learned model to one user's recent events at request time
// and scores candidate events (docs/snapshot.md, "Serving"). `metaps serve` puts this behind HTTP.
//
//   POST /score   {"support":    [{"fields": {"item": "50", "genres": ["Comedy"]}, "label": 4}, ...],
//                  "candidates": [{"fields": {"item": "1193", ...}}, ...]}
//              -> {"scores": [...], "adapted": true, ...}
//   GET  /health  the snapshot chain and counters;  GET /model  the model;  GET /metrics  Prometheus
//
// A field's value is the feature value as the job's data reader produces it (a string, or an
// integer written as its decimal text; a list for a bag field; absent or null for none); its key
// is FeatureKey(field, value), as in training. A malformed request gets 400 with
// {"error": ..., "code": "INVALID_ARGUMENT"} naming what is wrong, and changes nothing.
// Thread-safe: concurrent requests are scored at once, each with a scorer (and kernels) of its own
// from a pool that grows to the number of requests ever in flight together.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/http_server.h"
#include "common/status.h"
#include "launch/snapshot.h"
#include "ps/snapshot.h"
#include "worker/kernels.h"
#include "worker/score_request.h"
#include "worker/scorer.h"

namespace metaps::launch {

using ServingLimits = worker::ScoreRequestLimits;
// Makes the kernels of one scorer (a Kernels object serves one thread at a time).
using KernelsFactory = std::function<Result<std::unique_ptr<worker::Kernels>>()>;

class ServingModel {
 public:
  // `dirs`: a full snapshot, then its deltas in order. Rows are ingested under work_dir (must not
  // exist or be empty; the caller removes it).
  // `make_kernels` is called once here and again whenever more requests are in flight at once
  // than ever before. `base` (optional): a model, e.g. the one in service, whose chain may be the
  // start of `dirs` (the same directories holding the same snapshot ids); then its rows are
  // reused and only the newer snapshots' row files are read. Otherwise it is not used.
  static Result<std::unique_ptr<ServingModel>> Open(const std::vector<std::string>& dirs,
                                                    const std::string& work_dir, KernelsFactory make_kernels,
                                                    ServingLimits limits = {},
                                                    const ServingModel* base = nullptr);

  HttpResponse Handle(const HttpRequest& request);

  // The HTTP handler `metaps serve` runs: Handle, on whichever thread serves the request, with
  // that thread's kernel thread count set to `threads` (oneDNN's OpenMP count is per thread).
  RequestHandler HttpHandler(int threads);

  // The scores of `body` (a /score request), or InvalidArgument naming what is wrong.
  Result<nlohmann::json> Score(const nlohmann::json& body);

  const std::vector<LoadedSnapshot>& chain() const { return chain_; }
  uint64_t rows() const { return rows_->rows_ingested(); }
  uint64_t rows_reused() const { return rows_->rows_taken_from_base(); }  // from Open's base
  // Scorers made so far: the most requests that were scored at once.
  size_t scorers() const;

 private:
  // A scorer with the kernels it computes on.
  struct PooledScorer {
    std::unique_ptr<worker::Kernels> kernels;
    std::unique_ptr<worker::Scorer> scorer;
  };

  ServingModel() = default;
  nlohmann::json Health() const;
  // An idle scorer, or a new one when none is idle.
  Result<std::unique_ptr<PooledScorer>> Acquire();
  void Release(std::unique_ptr<PooledScorer> s);

  std::vector<LoadedSnapshot> chain_;
  std::unique_ptr<ps::SnapshotRows> rows_;
  std::vector<std::string> field_tables_;  // per model field: its sparse table
  ServingLimits limits_;
  KernelsFactory make_kernels_;
  mutable std::mutex pool_mu_;  // guards idle_ and made_
  std::vector<std::unique_ptr<PooledScorer>> idle_;
  size_t made_ = 0;
  std::atomic<uint64_t> requests_{0}, errors_{0}, candidates_{0}, adapted_{0}, score_ns_{0};
  std::atomic<uint64_t> rows_stored_{0}, rows_initial_{0};
};

// An HTTP handler that serves each request with whichever model `current` returns at that moment
// (`metaps serve --follow` swaps models while serving), on a thread whose kernel thread count is
// set to `threads`.
RequestHandler ServeCurrentModel(std::function<std::shared_ptr<ServingModel>()> current, int threads);

// The snapshot chain a retrain publishes: DIR/CHAIN names a full snapshot and then its deltas,
// one directory name (inside DIR) a line. Returns their paths.
Result<std::vector<std::string>> ReadPublishedChain(const std::string& dir);

}  // namespace metaps::launch
