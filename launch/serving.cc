#include "launch/serving.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "common/keys.h"
#include "worker/onednn_kernels.h"
#include "worker/score_request.h"

namespace metaps::launch {

namespace {

HttpResponse JsonReply(int status, const nlohmann::json& j) {
  HttpResponse r;
  r.status = status;
  r.body = j.dump() + "\n";
  return r;
}

HttpResponse ErrorReply(int status, const Status& s) {
  return JsonReply(status, {{"error", s.message()}, {"code", std::string(StatusCodeName(s.code()))}});
}

}  // namespace

Result<std::unique_ptr<ServingModel>> ServingModel::Open(const std::vector<std::string>& dirs,
                                                         const std::string& work_dir,
                                                         KernelsFactory make_kernels, ServingLimits limits,
                                                         const ServingModel* base) {
  std::unique_ptr<ServingModel> m(new ServingModel());
  m->limits_ = limits;
  m->make_kernels_ = std::move(make_kernels);
  std::vector<std::vector<ps::SnapshotTable>> tables;
  for (const auto& d : dirs) {
    METAPS_ASSIGN_OR_RETURN(LoadedSnapshot s, LoadSnapshotManifest(d));
    tables.push_back(s.tables);
    m->chain_.push_back(std::move(s));
  }
  METAPS_RETURN_IF_ERROR(CheckSnapshotChain(m->chain_));
  // Only the newest snapshot's dense tensors are served (each snapshot carries them whole).
  METAPS_RETURN_IF_ERROR(LoadSnapshotDense(&m->chain_.back()));
  // The base's rows serve as the start of this chain when its chain is exactly that start.
  size_t base_dirs = 0;
  if (base != nullptr && base->chain_.size() <= m->chain_.size()) {
    base_dirs = base->chain_.size();
    for (size_t i = 0; i < base->chain_.size(); ++i) {
      if (base->chain_[i].dir != m->chain_[i].dir || base->chain_[i].id != m->chain_[i].id) base_dirs = 0;
    }
  }
  METAPS_ASSIGN_OR_RETURN(
      m->rows_,
      ps::SnapshotRows::Open(dirs, tables, work_dir, base_dirs > 0 ? base->rows_.get() : nullptr, base_dirs));
  // The newest snapshot's model and dense tensors (each snapshot, delta or full, carries them whole).
  const LoadedSnapshot& top = m->chain_.back();
  for (const auto& f : top.job.model.fields) {
    m->field_tables_.push_back(worker::JobModel::TableFor(static_cast<uint32_t>(f.dim)));
  }
  // The first scorer now, so that kernels that cannot be made fail the open, not a request.
  METAPS_ASSIGN_OR_RETURN(auto first, m->Acquire());
  m->Release(std::move(first));
  return m;
}

Result<std::unique_ptr<ServingModel::PooledScorer>> ServingModel::Acquire() {
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (!idle_.empty()) {
      auto s = std::move(idle_.back());
      idle_.pop_back();
      return s;
    }
  }
  auto s = std::make_unique<PooledScorer>();
  METAPS_ASSIGN_OR_RETURN(s->kernels, make_kernels_());
  const LoadedSnapshot& top = chain_.back();
  s->scorer = std::make_unique<worker::Scorer>(top.job, top.params, s->kernels.get());
  std::lock_guard<std::mutex> lock(pool_mu_);
  ++made_;
  return s;
}

void ServingModel::Release(std::unique_ptr<PooledScorer> s) {
  std::lock_guard<std::mutex> lock(pool_mu_);
  idle_.push_back(std::move(s));
}

size_t ServingModel::scorers() const {
  std::lock_guard<std::mutex> lock(pool_mu_);
  return made_;
}

Result<nlohmann::json> ServingModel::Score(const nlohmann::json& body) {
  const auto t0 = std::chrono::steady_clock::now();
  const worker::ModelSpec& model = chain_.back().job.model;
  const int nf = model.num_fields();
  METAPS_ASSIGN_OR_RETURN(worker::Task task, worker::ParseScoreRequest(model, body, limits_));

  // The rows of every key, table by table (a key belongs to its field's table).
  worker::RowMap rows;
  uint64_t stored = 0, looked_up = 0;
  {
    std::map<std::string, std::vector<Key>> by_table;
    for (int r = 0; r < task.rows(); ++r) {
      for (int f = 0; f < nf; ++f) {
        for (int32_t i = task.offsets[r * nf + f]; i < task.offsets[r * nf + f + 1]; ++i) {
          by_table[field_tables_[f]].push_back(task.keys[i]);
        }
      }
    }
    for (auto& [table, keys] : by_table) {
      std::sort(keys.begin(), keys.end());
      keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
      const ps::SnapshotTable* t = rows_->FindTable(table);
      if (t == nullptr) return Internal("the snapshot has no table " + table);
      std::vector<float> values(keys.size() * t->dim);
      uint64_t n = 0;
      METAPS_RETURN_IF_ERROR(rows_->Lookup(table, keys, values.data(), &n));
      stored += n;
      looked_up += keys.size();
      for (size_t i = 0; i < keys.size(); ++i) {
        rows[keys[i]].assign(values.begin() + i * t->dim, values.begin() + (i + 1) * t->dim);
      }
    }
  }
  bool adapted = false;
  std::vector<float> scores;
  {
    METAPS_ASSIGN_OR_RETURN(auto s, Acquire());
    auto scored = s->scorer->Score(task, rows, &adapted);
    Release(std::move(s));
    METAPS_ASSIGN_OR_RETURN(scores, std::move(scored));
  }
  const uint64_t ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  candidates_ += scores.size();
  adapted_ += adapted;
  score_ns_ += ns;
  rows_stored_ += stored;
  rows_initial_ += looked_up - stored;
  return nlohmann::json{{"scores", scores},
                        {"adapted", adapted},
                        {"support", task.num_support},
                        {"rows_stored", stored},
                        {"rows_initial", looked_up - stored},
                        {"snapshot", chain_.back().id}};
}

nlohmann::json ServingModel::Health() const {
  nlohmann::json chain = nlohmann::json::array();
  for (const auto& s : chain_) chain.push_back({{"dir", s.dir}, {"id", s.id}, {"kind", s.kind}});
  return {{"status", "ok"},
          {"job_id", chain_.back().job_id},
          {"snapshots", chain},
          {"rows", rows_->rows_ingested()},
          {"requests", requests_.load()},
          {"errors", errors_.load()},
          {"scorers", scorers()}};
}

namespace {

// oneDNN's OpenMP thread count is per thread: set it once on each thread that serves.
void UseKernelThreads(int threads) {
  thread_local int set = 0;
  if (set != threads) worker::SetKernelThreads(threads);
  set = threads;
}

}  // namespace

RequestHandler ServingModel::HttpHandler(int threads) {
  return [this, threads](const HttpRequest& r) {
    UseKernelThreads(threads);
    return Handle(r);
  };
}

RequestHandler ServeCurrentModel(std::function<std::shared_ptr<ServingModel>()> current, int threads) {
  return [current = std::move(current), threads](const HttpRequest& r) {
    UseKernelThreads(threads);
    std::shared_ptr<ServingModel> m = current();  // kept alive until this request is answered
    return m->Handle(r);
  };
}

Result<std::vector<std::string>> ReadPublishedChain(const std::string& dir) {
  const std::string path = dir + "/CHAIN";
  std::ifstream in(path);
  if (!in) return NotFound(path + ": no chain published yet");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) continue;
    if (line.find('/') != std::string::npos || line == "." || line == "..") {
      return InvalidArgument(path + ": '" + line + "' is not a directory name inside " + dir);
    }
    out.push_back(dir + "/" + line);
  }
  if (out.empty()) return InvalidArgument(path + ": empty");
  return out;
}

HttpResponse ServingModel::Handle(const HttpRequest& request) {
  std::string path = request.target.substr(0, request.target.find('?'));
  if (path == "/score") {
    if (request.method != "POST") return ErrorReply(405, InvalidArgument("POST a JSON request to /score"));
    ++requests_;
    auto body = nlohmann::json::parse(request.body, nullptr, false);
    if (body.is_discarded()) {
      ++errors_;
      return ErrorReply(400, InvalidArgument("the body is not valid JSON"));
    }
    auto r = Score(body);
    if (!r.ok()) {
      ++errors_;
      return ErrorReply(r.status().code() == StatusCode::kInvalidArgument ? 400 : 500, r.status());
    }
    return JsonReply(200, *r);
  }
  if (request.method != "GET") return ErrorReply(405, InvalidArgument(path + " takes GET"));
  if (path == "/health") return JsonReply(200, Health());
  if (path == "/model") return JsonReply(200, chain_.back().manifest["model"]);
  if (path == "/metrics") {
    std::ostringstream m;
    m << "# TYPE metaps_serve_requests_total counter\nmetaps_serve_requests_total " << requests_.load()
      << "\n"
      << "# TYPE metaps_serve_errors_total counter\nmetaps_serve_errors_total " << errors_.load() << "\n"
      << "# TYPE metaps_serve_candidates_total counter\nmetaps_serve_candidates_total " << candidates_.load()
      << "\n"
      << "# TYPE metaps_serve_adapted_total counter\nmetaps_serve_adapted_total " << adapted_.load() << "\n"
      << "# TYPE metaps_serve_score_seconds_total counter\nmetaps_serve_score_seconds_total "
      << static_cast<double>(score_ns_.load()) / 1e9 << "\n"
      << "# TYPE metaps_serve_rows_stored_total counter\nmetaps_serve_rows_stored_total "
      << rows_stored_.load() << "\n"
      << "# TYPE metaps_serve_rows_initial_total counter\nmetaps_serve_rows_initial_total "
      << rows_initial_.load() << "\n"
      << "# TYPE metaps_serve_snapshot_rows gauge\nmetaps_serve_snapshot_rows " << rows_->rows_ingested()
      << "\n"
      << "# TYPE metaps_serve_scorers gauge\nmetaps_serve_scorers " << scorers() << "\n";
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4";
    r.body = m.str();
    return r;
  }
  return ErrorReply(404, NotFound("no such path " + path + " (POST /score; GET /health, /model, /metrics)"));
}

}  // namespace metaps::launch
