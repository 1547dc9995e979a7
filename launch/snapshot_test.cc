// Export and serving against what the servers hold: a run directory whose checkpoint was written by
// a real ParamStore over RocksDB, exported by ExportSnapshot, loaded and scored by ServingModel.
// The expected values come from the store itself (its rows, its dense offsets plus the job's
// initial weights) and from a forward pass worked out here in double.
#include "launch/snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/files.h"
#include "common/internal/test_dirs.h"
#include "common/keys.h"
#include "common/npy.h"
#include "common/rocksdb_storage.h"
#include "launch/serving.h"
#include "ps/param_store.h"
#include "ps/table_spec.h"
#include "worker/reference_kernels.h"

namespace metaps::launch {
namespace {

namespace fs = std::filesystem;

KernelsFactory ReferenceKernelsFactory(std::atomic<int>* made = nullptr) {
  return [made]() -> Result<std::unique_ptr<worker::Kernels>> {
    if (made != nullptr) ++*made;
    return std::unique_ptr<worker::Kernels>(std::make_unique<worker::ReferenceKernels>());
  };
}

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("launch_snapshot_test") {}
};

// One field "f" (dim 4, sum pooling), MLP 4 -> 3 -> 1.
worker::JobModel Model(worker::Algo algo) {
  worker::JobModel job;
  job.model.fields = {worker::FieldSpec{.name = "f", .dim = 4}};
  job.model.layers = {3, 1};
  job.model.loss = worker::Loss::kMse;
  job.init_seed = 11;
  job.meta.algo = algo;
  job.meta.inner_steps = 2;
  job.meta.inner_lr = 0.05f;
  job.sparse_tables["emb4"] = 4;
  job.dense_tensors["mlp"] = static_cast<size_t>(job.model.num_params());
  if (algo == worker::Algo::kMetaSgd)
    job.dense_tensors["alpha"] = static_cast<size_t>(job.model.num_params());
  return job;
}

std::string TablesToml(const worker::JobModel& job) {
  std::string t =
      "[[tables]]\nname = \"emb4\"\ndim = 4\noptimizer = \"adam\"\nlr = 0.01\ninit = \"normal\"\n"
      "init_scale = 0.1\n";
  for (const auto& [name, size] : job.dense_tensors) {
    t += "[[tables]]\nname = \"" + name + "\"\ndim = " + std::to_string(size) +
         "\ndense = true\noptimizer = \"sgd\"\nlr = 0.1\ninit = \"zeros\"\n";
  }
  return t;
}

// A run directory: job.toml, model.json, and checkpoint/shard-0 from a store that was pushed to.
struct RunDir {
  TempDir dir;
  worker::JobModel job;
  std::unique_ptr<ps::ParamStore> store;
  std::vector<Key> trained;

  explicit RunDir(worker::Algo algo) : job(Model(algo)) {
    const std::string toml = "[job]\nid = \"snap\"\nservers = 1\nworkers = 1\n\n" + TablesToml(job);
    fs::create_directories(dir.path("run"));
    EXPECT_TRUE(WriteFileAtomically(dir.path("run/job.toml"), toml).ok());
    EXPECT_TRUE(WriteFileAtomically(dir.path("run/model.json"), worker::JobModelToJson(job).dump()).ok());
    auto cfg = Config::ParseString(toml);
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    auto specs = ps::ParseTableSpecs(*cfg);
    EXPECT_TRUE(specs.ok()) << specs.status();
    ps::StoreOptions o;
    o.data_dir = dir.path("live");
    auto storage = RocksDbStorage::Open(o.data_dir, RocksDbOptions{});
    EXPECT_TRUE(storage.ok());
    auto s = ps::ParamStore::Open(o, *specs, std::move(storage).value());
    EXPECT_TRUE(s.ok()) << s.status();
    store = std::move(s).value();
    for (const char* v : {"a", "b", "c"}) trained.push_back(FeatureKey("f", v));
    std::vector<float> g(trained.size() * 4);
    for (size_t i = 0; i < g.size(); ++i) g[i] = 0.1f * static_cast<float>(i) - 0.4f;
    EXPECT_TRUE(store->Push("emb4", trained, g, 1).ok());
    for (const auto& [name, size] : job.dense_tensors) {
      std::vector<float> dg(size);
      for (size_t i = 0; i < size; ++i) dg[i] = std::sin(static_cast<float>(i));
      EXPECT_TRUE(store->PushDense(name, dg, 1).ok());
    }
    EXPECT_TRUE(store->Checkpoint(dir.path("run/checkpoint/shard-0")).ok());
  }
  std::vector<float> Dense(const std::string& name) {
    std::vector<float> v(job.dense_tensors.at(name));
    EXPECT_TRUE(store->PullDense(name, v.data()).ok());
    return v;
  }
};

TEST(ExportTest, TheSnapshotHoldsTheWeightsTheWorkersUseAndTheStoredRows) {
  for (worker::Algo algo : {worker::Algo::kMaml, worker::Algo::kMetaSgd}) {
    SCOPED_TRACE(std::string(worker::AlgoName(algo)));
    RunDir run(algo);
    ExportOptions o;
    o.run_dir = run.dir.path("run");
    o.out = run.dir.path("snap");
    auto sum = ExportSnapshot(o);
    ASSERT_TRUE(sum.ok()) << sum.status();
    EXPECT_EQ(sum->rows, 3u);
    EXPECT_EQ(sum->kind, "full");
    EXPECT_FALSE(fs::exists(run.dir.path("snap") + ".tmp-" + std::to_string(getpid())));
    auto loaded = LoadSnapshot(run.dir.path("snap"));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    // Weights = the job's initial weights + the servers' offsets; Meta-SGD's rates = inner_lr + offsets.
    const std::vector<float> init = run.job.InitialWeights(), mlp = run.Dense("mlp");
    ASSERT_EQ(loaded->params.weights.size(), init.size());
    for (size_t i = 0; i < init.size(); ++i)
      EXPECT_FLOAT_EQ(loaded->params.weights[i], init[i] + mlp[i]) << i;
    auto npy = ReadNpyF32(run.dir.path("snap/dense/mlp.npy"));
    ASSERT_TRUE(npy.ok());
    EXPECT_EQ(npy->data, loaded->params.weights);
    if (algo == worker::Algo::kMetaSgd) {
      const std::vector<float> alpha = run.Dense("alpha");
      ASSERT_EQ(loaded->params.alpha.size(), alpha.size());
      for (size_t i = 0; i < alpha.size(); ++i) EXPECT_FLOAT_EQ(loaded->params.alpha[i], 0.05f + alpha[i]);
    } else {
      EXPECT_TRUE(loaded->params.alpha.empty());
    }
    EXPECT_EQ(loaded->job.meta.algo, algo);
    ASSERT_EQ(loaded->tables.size(), 1u);
    EXPECT_EQ(loaded->tables[0].files.size(), 1u);
    EXPECT_EQ(loaded->tables[0].init.kind, ps::InitKind::kNormal);
    // A second export to the same place is refused and leaves the first alone.
    auto again = ExportSnapshot(o);
    EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
    EXPECT_TRUE(LoadSnapshot(run.dir.path("snap")).ok());
  }
}

// Exports the run's final checkpoint to the snapshot directory "snap" of its scratch directory.
Status ExportToSnap(const RunDir& run) {
  ExportOptions o;
  o.run_dir = run.dir.path("run");
  o.out = run.dir.path("snap");
  return ExportSnapshot(o).status();
}

TEST(ServingModelTest, ScoresWithTheStoredRowsAndAdaptsAndRefusesBadRequests) {
  RunDir run(worker::Algo::kFomaml);
  ASSERT_TRUE(ExportToSnap(run).ok());
  auto m = ServingModel::Open({run.dir.path("snap")}, run.dir.path("work"), ReferenceKernelsFactory());
  ASSERT_TRUE(m.ok()) << m.status();
  ServingModel& serving = **m;
  // Unadapted (no support): the MLP at the exported weights over the store's rows. "a" and "b"
  // were trained, "zz" never was (its initial value, as a pull returns it).
  nlohmann::json req = {{"candidates", {{{"fields", {{"f", {"a", "b"}}}}}, {{"fields", {{"f", "zz"}}}}}}};
  auto r = serving.Score(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE((*r)["adapted"].get<bool>());
  EXPECT_EQ((*r)["rows_stored"], 2);
  EXPECT_EQ((*r)["rows_initial"], 1);
  std::vector<float> w = run.job.InitialWeights();
  const std::vector<float> off = run.Dense("mlp");
  for (size_t i = 0; i < w.size(); ++i) w[i] += off[i];
  auto row = [&](const char* v) {
    std::vector<float> out(4);
    const Key k = FeatureKey("f", v);
    EXPECT_TRUE(run.store->Pull("emb4", std::span<const Key>(&k, 1), out.data()).ok());
    return out;
  };
  std::vector<double> x0(4), x1(4);
  for (int i = 0; i < 4; ++i) {
    x0[i] = double(row("a")[i]) + row("b")[i];
    x1[i] = row("zz")[i];
  }
  ASSERT_EQ((*r)["scores"].size(), 2u);
  // Layout: W0 (4 x 3) at 0, b0 at 12, W1 (3 x 1) at 15, b1 at 18.
  auto forward = [&](const std::vector<double>& x) {
    double y = w[18];
    for (int j = 0; j < 3; ++j) {
      double h = w[12 + j];
      for (int i = 0; i < 4; ++i) h += x[i] * w[i * 3 + j];
      y += std::max(h, 0.0) * w[15 + j];
    }
    return y;
  };
  EXPECT_NEAR((*r)["scores"][0].get<double>(), forward(x0), 1e-5);
  EXPECT_NEAR((*r)["scores"][1].get<double>(), forward(x1), 1e-5);

  // With support the inner loop runs and moves the score toward the label.
  nlohmann::json up = {{"support", {{{"fields", {{"f", "a"}}}, {"label", 10.0}}}},
                       {"candidates", {{{"fields", {{"f", "a"}}}}}}};
  nlohmann::json down = up;
  down["support"][0]["label"] = -10.0;
  auto su = serving.Score(up), sd = serving.Score(down);
  ASSERT_TRUE(su.ok() && sd.ok());
  EXPECT_TRUE((*su)["adapted"].get<bool>());
  EXPECT_GT((*su)["scores"][0].get<double>(), (*sd)["scores"][0].get<double>() + 1e-3);

  for (const char* bad :
       {R"({"candidates": [{"fields": {"g": "a"}}]})", R"({"candidates": [{"fields": {"f": 1.5}}]})",
        R"({"support": [{"fields": {"f": "a"}}], "candidates": [{"fields": {}}]})", R"({"candidates": {}})",
        R"([1, 2])"}) {
    auto e = serving.Score(nlohmann::json::parse(bad));
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  HttpRequest h{"POST", "/score", "application/json", "{oops"};
  EXPECT_EQ(serving.Handle(h).status, 400);
  h.body = req.dump();
  HttpResponse ok = serving.Handle(h);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(nlohmann::json::parse(ok.body)["scores"], (*r)["scores"]);
}

// Requests scored at once from several threads each get the answer they get alone: every request
// in flight has a scorer of its own, and the pool holds no more scorers than requests were ever in
// flight together.
TEST(ServingModelTest, ConcurrentRequestsGetTheScoresTheyGetAlone) {
  RunDir run(worker::Algo::kFomaml);
  ASSERT_TRUE(ExportToSnap(run).ok());
  std::atomic<int> made{0};
  auto m = ServingModel::Open({run.dir.path("snap")}, run.dir.path("work"), ReferenceKernelsFactory(&made));
  ASSERT_TRUE(m.ok()) << m.status();
  ServingModel& serving = **m;
  EXPECT_EQ(made.load(), 1);  // the first at open
  // Requests that adapt differently (labels from -10 to 10) and one that does not adapt.
  std::vector<nlohmann::json> requests;
  for (int i = 0; i < 5; ++i) {
    requests.push_back({{"support", {{{"fields", {{"f", {"a", "b"}}}}, {"label", -10.0 + 5 * i}}}},
                        {"candidates", {{{"fields", {{"f", "a"}}}}, {{"fields", {{"f", "zz"}}}}}}});
  }
  requests.push_back({{"candidates", {{{"fields", {{"f", "b"}}}}}}});
  std::vector<nlohmann::json> alone;
  for (const auto& r : requests) {
    auto s = serving.Score(r);
    ASSERT_TRUE(s.ok()) << s.status();
    alone.push_back((*s)["scores"]);
  }
  for (size_t i = 1; i < 5; ++i) EXPECT_NE(alone[i], alone[0]);  // the requests differ
  constexpr int kThreads = 4, kRounds = 60;
  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kRounds; ++k) {
        const size_t i = static_cast<size_t>(t + k) % requests.size();
        auto s = serving.Score(requests[i]);
        if (!s.ok()) {
          ++failures;
        } else if ((*s)["scores"] != alone[i]) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(static_cast<size_t>(made.load()), serving.scorers());
  EXPECT_GE(serving.scorers(), 1u);
  EXPECT_LE(serving.scorers(), static_cast<size_t>(kThreads));
  EXPECT_EQ(nlohmann::json::parse(serving.Handle({"GET", "/health", "", ""}).body)["scorers"],
            serving.scorers());
}

TEST(ServingModelTest, ABrokenSnapshotIsRefusedNamingTheFile) {
  RunDir run(worker::Algo::kFomaml);
  ExportOptions o;
  o.run_dir = run.dir.path("run");
  o.out = run.dir.path("snap");
  ASSERT_TRUE(ExportSnapshot(o).ok());
  {
    std::ofstream f(run.dir.path("snap/dense/mlp.npy"), std::ios::app | std::ios::binary);
    f << "x";
  }
  auto m = ServingModel::Open({run.dir.path("snap")}, run.dir.path("work"), ReferenceKernelsFactory());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("mlp.npy"), std::string::npos) << m.status();
  // A run with no checkpoint has nothing to export.
  fs::remove_all(run.dir.path("run/checkpoint"));
  o.out = run.dir.path("snap2");
  auto none = ExportSnapshot(o);
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound) << none.status();
  EXPECT_FALSE(fs::exists(run.dir.path("snap2")));
}

}  // namespace
}  // namespace metaps::launch
