#include "worker/node.h"

#include <atomic>
#include <limits>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/files.h"
#include "worker/data/readers.h"
#include "worker/data/split.h"
#include "worker/evaluator.h"
#include "worker/job.h"
#include "worker/push_audit.h"
#include "worker/trainer.h"

namespace metaps::worker {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kCallTimeout = std::chrono::milliseconds(10000);

// Calls the scheduler until it answers: a restarted scheduler has lost deferred requests, and the
// requests used this way (register, membership, clock, progress, done) are idempotent. Each try
// waits `per_try`; typed errors other than transient ones end the attempts.
Result<nlohmann::json> CallUntilAnswered(ControlLink& link, const std::string& kind, const nlohmann::json& body,
                                         std::chrono::milliseconds per_try, const Logger& log) {
  for (int attempt = 0;; ++attempt) {
    auto r = link.Call(kind, body, per_try);
    if (r.ok() || !r.status().IsTransient()) return r;
    if (attempt > 0 && attempt % 10 == 0) log->warn("still waiting for the scheduler to answer '{}'", kind);
  }
}

nlohmann::json MetricsJson(const data::EvalMetrics& m, size_t k) {
  nlohmann::json j = {{"mae", m.mae}, {"rmse", m.rmse}, {"ndcg@" + std::to_string(k), m.ndcg}};
  if (m.binary) {
    j["auc"] = m.auc;
    j["logloss"] = m.logloss;
  }
  return j;
}

Result<RowMap> PullRowMap(ParamClient& params, const std::vector<Task>& tasks, const JobModel& job) {
  // Lay the keys out as a batch would: one row per key with its field's width.
  TaskBatchBuilder builder;
  TaskBatch batch;
  RowMap rows;
  for (size_t start = 0; start < tasks.size(); start += 256) {
    std::vector<const Task*> ptrs;
    for (size_t i = start; i < std::min(tasks.size(), start + 256); ++i) ptrs.push_back(&tasks[i]);
    METAPS_RETURN_IF_ERROR(builder.Build(job.model, ptrs, &batch));
    std::vector<float> values;
    METAPS_RETURN_IF_ERROR(PullRows(params, batch.keys, batch.row_offsets, &values).status());
    for (size_t k = 0; k < batch.keys.size(); ++k) {
      rows[batch.keys[k]].assign(values.begin() + batch.row_offsets[k], values.begin() + batch.row_offsets[k + 1]);
    }
  }
  return rows;
}

}  // namespace

WorkerNode::WorkerNode(WorkerNodeOptions options, Config config, WorkerEnv env)
    : options_(std::move(options)), config_(std::move(config)), env_(std::move(env)) {}

Status WorkerNode::Run() {
  Logger log = env_.logger;
  const int w = options_.worker_id;

  // Data, split and this worker's partition.
  METAPS_ASSIGN_OR_RETURN(Config data_cfg, config_.GetTable("data", true));
  uint64_t bad_reported = 0;
  METAPS_ASSIGN_OR_RETURN(data::Dataset dataset, data::LoadDataset(data_cfg, [&](const std::string& line) {
                            if (++bad_reported <= 20) log->warn("bad input: {}", line);
                          }));
  if (dataset.bad.bad > 0) {
    log->warn("{} of {} data lines were malformed and skipped", dataset.bad.bad, dataset.bad.lines);
  }
  METAPS_ASSIGN_OR_RETURN(Config eval_cfg, config_.GetTable("eval"));
  METAPS_ASSIGN_OR_RETURN(data::SplitOptions split_options, data::SplitOptionsFromConfig(eval_cfg));
  METAPS_ASSIGN_OR_RETURN(data::Split split, data::SplitUsers(dataset, split_options));
  METAPS_ASSIGN_OR_RETURN(JobModel job, BuildJobModel(config_, dataset));
  METAPS_ASSIGN_OR_RETURN(Config tasks_cfg, config_.GetTable("tasks"));
  METAPS_ASSIGN_OR_RETURN(SamplerOptions sampler_options, SamplerOptions::FromConfig(tasks_cfg));
  sampler_options.seed += static_cast<uint64_t>(w) * 7919;  // each worker its own task order
  METAPS_ASSIGN_OR_RETURN(
      TaskSampler sampler,
      TaskSampler::Create(sampler_options, dataset, PartitionEvents(split, w, options_.num_workers)));
  log->info("worker {}: {} events, {} train users ({} tasks here), {} validation, {} test users", w, dataset.size(),
            split.train.size(), sampler.tasks().size(), split.validation.size(), split.test.size());
  METAPS_ASSIGN_OR_RETURN(Config train_cfg, config_.GetTable("train"));
  METAPS_ASSIGN_OR_RETURN(bool prefetch, train_cfg.GetBool("prefetch", true));
  METAPS_ASSIGN_OR_RETURN(int64_t validate_every, train_cfg.GetIntIn("validate_every", 10, 0, 1 << 30));

  // Membership.
  auto control = env_.control();
  METAPS_RETURN_IF_ERROR(control->Connect());
  METAPS_RETURN_IF_ERROR(CallUntilAnswered(*control, "register", {{"role", "worker"}, {"id", w}}, kCallTimeout, log)
                             .status()
                             .WithContext("register"));
  METAPS_ASSIGN_OR_RETURN(nlohmann::json membership,
                          CallUntilAnswered(*control, "membership", {}, std::chrono::seconds(5), log));
  auto servers = membership["servers"].get<std::vector<std::string>>();
  METAPS_ASSIGN_OR_RETURN(std::unique_ptr<ParamClient> params,
                          env_.params(servers, membership.value("epoch", uint64_t{0})));
  // Opt-in: record every acknowledged push (tests compare them with the rows' update counts).
  METAPS_ASSIGN_OR_RETURN(Config worker_cfg, config_.GetTable("worker"));
  METAPS_ASSIGN_OR_RETURN(bool audit_pushes, worker_cfg.GetBool("audit_pushes", false));
  std::unique_ptr<PushAuditLog> audit_log;
  std::unique_ptr<ParamClient> audited;
  if (audit_pushes) {
    if (options_.run_dir.empty()) return InvalidArgument("worker.audit_pushes: needs a run directory (--run-dir)");
    METAPS_ASSIGN_OR_RETURN(audit_log, PushAuditLog::Open(options_.run_dir + "/audit/worker-" + std::to_string(w) +
                                                          ".pushes"));
    audited = std::make_unique<AuditedParams>(params.get(), audit_log.get());
    log->info("worker {}: acknowledged pushes are recorded in {}", w, audit_log->path());
  }
  ParamClient* pc = audited ? audited.get() : params.get();

  std::atomic<bool> running{true};
  std::thread heartbeat([&] {
    auto link = env_.control();
    if (!link->Connect().ok()) return;
    while (running) {
      auto r = link->Call("heartbeat", {{"role", "worker"}, {"id", w}}, kCallTimeout);
      if (!r.ok() && r.status().code() == StatusCode::kFailedPrecondition) {
        // The scheduler restarted and forgot this worker: register again.
        r = link->Call("register", {{"role", "worker"}, {"id", w}}, kCallTimeout);
      }
      if (!r.ok()) log->warn("heartbeat: {}", r.status().ToString());
      for (uint32_t t = 0; running && t < options_.heartbeat_ms; t += 50) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  });
  struct JoinOnExit {
    std::atomic<bool>& running;
    std::thread& t;
    ~JoinOnExit() {
      running = false;
      if (t.joinable()) t.join();
    }
  } join_on_exit{running, heartbeat};

  // The sampler is deterministic: a worker's data position is the number of batches it drew.
  sampler.SkipMetaBatches(options_.start_round);
  if (options_.start_round > 0) log->info("worker {} resumes at round {}", w, options_.start_round);
  Trainer trainer(job, std::move(sampler), env_.kernels, pc, prefetch);
  Evaluator evaluator(job, env_.kernels, dataset, split_options.ndcg_k);
  std::vector<Task> validation = evaluator.Tasks(split.validation);
  uint64_t tasks_total = 0, pulled = 0, pushed = 0;
  for (uint64_t round = options_.start_round;; ++round) {
    // A barrier may hold the worker as long as the slowest worker takes; re-asking is harmless.
    METAPS_ASSIGN_OR_RETURN(nlohmann::json go, CallUntilAnswered(*control, "clock", {{"worker", w}, {"clock", round}},
                                                                 std::chrono::seconds(3), log));
    if (go.value("stop", false)) break;
    auto start = Clock::now();
    METAPS_ASSIGN_OR_RETURN(RoundStats st, trainer.RunRound(round));
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    tasks_total += st.tasks;
    pulled += st.rows_pulled;
    pushed += st.rows_pushed;
    nlohmann::json progress = {{"worker", w},          {"round", round + 1},      {"tasks", tasks_total},
                               {"loss", st.loss},      {"rows_pulled", pulled},   {"rows_pushed", pushed},
                               {"tasks_per_s", secs > 0 ? st.tasks / secs : 0.0}};
    if (w == 0 && validate_every > 0 && !validation.empty() && (round + 1) % validate_every == 0) {
      METAPS_ASSIGN_OR_RETURN(DenseParams dense, PullDense(*params, job));
      METAPS_ASSIGN_OR_RETURN(RowMap rows, PullRowMap(*params, validation, job));
      METAPS_ASSIGN_OR_RETURN(data::EvalMetrics vm, evaluator.Evaluate(validation, dense, rows, true, job.meta));
      progress["extra"] = {{"val_mae", vm.mae}, {"val_rmse", vm.rmse}, {"val_round", round + 1}};
      log->info("round {}: validation {}", round + 1, vm.ToString(split_options.ndcg_k));
    }
    METAPS_RETURN_IF_ERROR(CallUntilAnswered(*control, "progress", progress, kCallTimeout, log).status());
  }
  log->info("worker {} finished training: {} tasks", w, tasks_total);
  if (env_.server_stats) {
    // Every worker has finished training here: the counters cover the whole job's pushes.
    auto stats = env_.server_stats();
    if (!stats.ok()) log->warn("server stats: {}", stats.status().ToString());
    for (size_t s = 0; stats.ok() && s < stats->size(); ++s) log->info("server {} stats: {}", s, (*stats)[s]);
  }

  if (w == 0) {
    // Final evaluation of the test users, with the baselines on the same rows.
    std::vector<Task> test = evaluator.Tasks(split.test);
    nlohmann::json methods;
    METAPS_ASSIGN_OR_RETURN(DenseParams dense, PullDense(*params, job));
    METAPS_ASSIGN_OR_RETURN(RowMap rows, PullRowMap(*params, test, job));
    METAPS_ASSIGN_OR_RETURN(data::EvalMetrics meta, evaluator.Evaluate(test, dense, rows, true, job.meta));
    methods["meta"] = MetricsJson(meta, split_options.ndcg_k);
    METAPS_ASSIGN_OR_RETURN(Config baseline_cfg, config_.GetTable("baseline"));
    METAPS_ASSIGN_OR_RETURN(BaselineOptions bo, BaselineOptions::FromConfig(baseline_cfg));
    METAPS_ASSIGN_OR_RETURN(auto global, evaluator.TrainGlobal(split, bo));
    METAPS_ASSIGN_OR_RETURN(data::EvalMetrics g, evaluator.Evaluate(test, global.first, global.second, false, job.meta));
    methods["global"] = MetricsJson(g, split_options.ndcg_k);
    // Fine-tuning uses plain SGD on the support with the job's inner steps; its rate is chosen on
    // the validation users (never on the test users) from a small grid.
    MetaOptions finetune = job.meta;
    finetune.algo = Algo::kFomaml;
    double best_val = std::numeric_limits<double>::infinity();
    float best_lr = job.meta.inner_lr;
    std::vector<Task> val_tasks = validation.empty() ? test : validation;
    METAPS_ASSIGN_OR_RETURN(RowMap val_rows, Result<RowMap>(global.second));
    for (float lr : bo.finetune_lrs) {
      finetune.inner_lr = lr;
      METAPS_ASSIGN_OR_RETURN(data::EvalMetrics vm, evaluator.Evaluate(val_tasks, global.first, val_rows, true, finetune));
      if (vm.mae < best_val) best_val = vm.mae, best_lr = lr;
    }
    finetune.inner_lr = best_lr;
    log->info("global_finetune: inner rate {} chosen on {} validation users", best_lr, val_tasks.size());
    METAPS_ASSIGN_OR_RETURN(data::EvalMetrics gf, evaluator.Evaluate(test, global.first, global.second, true, finetune));
    methods["global_finetune"] = MetricsJson(gf, split_options.ndcg_k);
    methods["global_finetune"]["finetune_lr"] = best_lr;
    methods["item_mean"] = MetricsJson(evaluator.ItemMean(split, split.test), split_options.ndcg_k);
    methods["global_mean"] = MetricsJson(evaluator.GlobalMean(split, split.test), split_options.ndcg_k);
    nlohmann::json report = {{"methods", methods},
                             {"test_users", test.size()},
                             {"train_users", split.train.size()},
                             {"validation_users", split.validation.size()},
                             {"skipped_test_users", split.stats.test_skipped},
                             {"bad_lines", dataset.bad.bad},
                             {"algo", std::string(AlgoName(job.meta.algo))}};
    if (!options_.run_dir.empty()) {
      std::string path = options_.run_dir + "/report.json";
      METAPS_RETURN_IF_ERROR(WriteFileAtomically(path, report.dump(2) + "\n"));
      log->info("report written to {}", path);
      if (env_.checkpoint) {
        std::string dir = options_.run_dir + "/checkpoint";
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
        Status cs = env_.checkpoint(dir);
        if (!cs.ok()) return cs.WithContext("final checkpoint");
      }
    }
    log->info("test: meta {} | global {} | global_finetune {}", meta.ToString(split_options.ndcg_k),
              g.ToString(split_options.ndcg_k), gf.ToString(split_options.ndcg_k));
  }
  METAPS_RETURN_IF_ERROR(CallUntilAnswered(*control, "done", {{"worker", w}}, kCallTimeout, log).status());
  // The scheduler waits for this before it leaves, so the answer to "done" cannot be lost with its
  // connection; the reply to "leaving" itself is not needed.
  (void)control->Call("leaving", {{"role", "worker"}, {"id", w}}, std::chrono::milliseconds(1000));
  return Status::Ok();
}

}  // namespace metaps::worker
