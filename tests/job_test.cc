// Whole jobs through `metaps run`: scheduler, servers and workers as real processes on loopback,
// RocksDB on disk, evaluation against the baselines.
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace metaps {
namespace {

using metaps::testing::Example;
using metaps::testing::MetapsBin;
using metaps::testing::ScratchDir;
using metaps::testing::ServerProcess;

struct RunResult {
  int exit_code = -1;
  std::string output;
};

RunResult RunJob(const std::string& run_dir, std::vector<std::string> extra) {
  std::vector<std::string> argv = {MetapsBin(), "run", Example("synthetic.toml"), "--run-dir", run_dir, "--quiet"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::string out = run_dir + ".out";
  auto p = Subprocess::Spawn(argv, out);
  EXPECT_TRUE(p.ok()) << p.status();
  auto code = p->Wait(std::chrono::minutes(5));
  EXPECT_TRUE(code.ok()) << code.status();
  RunResult r{code.value_or(-1), ServerProcess::ReadFile(out)};
  // A role that did not leave by itself after the workers finished (the supervisor stopped it):
  // not a failure of the job, but keep the evidence in the test output for diagnosis.
  if (r.output.find("still running after the workers finished") != std::string::npos) {
    std::cerr << "job " << run_dir << " left a role behind:\n" << r.output << "\n";
    for (const char* role : {"scheduler", "server-0", "server-1", "worker-0", "worker-1"}) {
      std::string log = ServerProcess::ReadFile(run_dir + "/logs/" + role + ".log");
      std::cerr << "---- " << role << ".log (last 3000 bytes)\n"
                << log.substr(log.size() > 3000 ? log.size() - 3000 : 0) << "\n";
    }
  }
  return r;
}

nlohmann::json Report(const std::string& run_dir) {
  std::ifstream in(run_dir + "/report.json");
  return nlohmann::json::parse(in, nullptr, false);
}

// A smaller set than the demo keeps the test quick; the seeds change the users, the split and
// the task order.
const std::vector<std::string> kSmall = {"--set", "datagen.users=700", "--set", "train.epochs=8"};

TEST(JobTest, MetaLearningBeatsTheNoMetaBaselineAcrossSeeds) {
  ScratchDir dir("job-seeds");
  for (int seed : {1, 2, 3}) {
    std::string run = dir / ("run-" + std::to_string(seed));
    std::vector<std::string> args = kSmall;
    for (std::string k : {"datagen.seed", "eval.seed", "tasks.seed", "model.init_seed"}) {
      args.insert(args.end(), {"--set", k + "=" + std::to_string(seed)});
    }
    RunResult r = RunJob(run, args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto report = Report(run);
    ASSERT_FALSE(report.is_discarded());
    double meta = report["methods"]["meta"]["mae"], global = report["methods"]["global"]["mae"];
    double global_mean = report["methods"]["global_mean"]["mae"];
    // The margin the issue asks for: meta-learning's test-user MAE at least 5% below the same
    // network trained without meta-learning, for every seed.
    EXPECT_LT(meta, 0.95 * global) << "seed " << seed << ": " << report.dump();
    EXPECT_LT(meta, global_mean) << "seed " << seed;
  }
}

TEST(JobTest, ARunDirectoryHoldsLogsMetricsPlotReportAndCheckpoint) {
  ScratchDir dir("job-dir");
  std::string run = dir / "run";
  RunResult r = RunJob(run, {"--set", "datagen.users=300", "--set", "train.epochs=2", "--set", "meta.algo=fomaml",
                             "--set", "train.consistency=ssp", "--set", "train.staleness=2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"job.toml", "token", "logs/scheduler.log", "logs/server-0.log", "logs/server-1.log",
                        "logs/worker-0.log", "logs/worker-1.log", "metrics.csv", "curves.svg", "report.json",
                        "checkpoint/shard-0/manifest.json", "checkpoint/shard-1/manifest.json"}) {
    EXPECT_TRUE(std::filesystem::exists(run + "/" + f)) << f;
  }
  auto report = Report(run);
  for (const char* m : {"meta", "global", "global_finetune", "item_mean", "global_mean"}) {
    ASSERT_TRUE(report["methods"].contains(m)) << m;
    for (const char* k : {"mae", "rmse", "ndcg@3"}) EXPECT_TRUE(report["methods"][m][k].is_number()) << m << " " << k;
  }
  EXPECT_NE(ServerProcess::ReadFile(run + "/metrics.csv").find("elapsed_s,round"), std::string::npos);
  // Every role shut down cleanly.
  EXPECT_NE(ServerProcess::ReadFile(run + "/logs/server-0.log").find("stopped"), std::string::npos);
}

// security.curve = true: every link encrypted, every process with its own key pair, each
// authenticated by the binding side's ZAP handler against authorized_keys. A job completes, and
// no handshake of its own processes was refused.
TEST(JobTest, AnEncryptedJobWithPerProcessKeysCompletes) {
  ScratchDir dir("job-curve");
  std::string run = dir / "run";
  RunResult r = RunJob(run, {"--set", "datagen.users=300", "--set", "train.epochs=1", "--set", "security.curve=true"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Report(run)["methods"]["meta"]["mae"].is_number());
  std::string authorized = ServerProcess::ReadFile(run + "/keys/authorized_keys");
  for (const char* name : {"scheduler", "server-0", "server-1", "worker-0", "worker-1"}) {
    EXPECT_TRUE(std::filesystem::exists(run + "/keys/" + name + ".key")) << name;
    EXPECT_NE(authorized.find(name), std::string::npos) << name << " is not in authorized_keys:\n" << authorized;
  }
  for (const char* role : {"scheduler", "server-0", "server-1"}) {
    std::string log = ServerProcess::ReadFile(run + "/logs/" + role + ".log");
    EXPECT_EQ(log.find("rejected CURVE handshake"), std::string::npos) << role << ":\n" << log;
  }
}

// `metaps run --set KEY=VALUE` with a bad setting exits 2 naming KEY, and `never_log` (the log of
// a role it would have started) does not exist.
void ExpectRefusedBeforeStart(const std::string& scratch, const std::string& key, const std::string& value,
                              const std::string& never_log) {
  ScratchDir dir(scratch);
  RunResult r = RunJob(dir / "run", {"--set", key + "=" + value});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(key), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / ("run/logs/" + never_log)));
}

TEST(JobTest, ABadConfigKeyIsNamedAndNothingStarts) {
  ExpectRefusedBeforeStart("job-badkey", "meta.inner_stpes", "3", "scheduler.log");
}

// `metaps run --check` validates everything a launch would (config, data, split, model, tables)
// and prints the plan, but starts no process and leaves no run directory behind.
TEST(JobTest, CheckPrintsThePlanAndStartsNothing) {
  ScratchDir dir("job-check");
  RunResult ok = RunJob(dir / "run", {"--check", "--set", "datagen.users=300"});
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("train /"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("model: 7 fields, MLP 56-"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("nothing was started"), std::string::npos) << ok.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "run")) << "a check wrote a run directory";
  RunResult bad = RunJob(dir / "run", {"--check", "--set", "meta.inner_stpes=3"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("meta.inner_stpes"), std::string::npos) << bad.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "run"));
  // A --run-dir that exists is neither written to nor removed.
  const std::filesystem::path existing = dir / "existing";
  std::filesystem::create_directories(existing);
  std::ofstream(existing / "mine.txt") << "keep me\n";
  RunResult again = RunJob(existing.string(), {"--check", "--set", "datagen.users=300"});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(ServerProcess::ReadFile((existing / "mine.txt").string()), "keep me\n");
  EXPECT_FALSE(std::filesystem::exists(existing / "logs"));
}

TEST(JobTest, ABadServerSettingIsNamedAndNothingStarts) {
  ExpectRefusedBeforeStart("job-badserver", "server.writeback_nice", "40", "server-0.log");
  // true, false or "auto" only.
  ExpectRefusedBeforeStart("job-badlogio", "server.log_direct_io", "sometimes", "server-0.log");
  ExpectRefusedBeforeStart("job-badingest", "server.writeback_ingest_bytes", "-1", "server-0.log");
}

TEST(JobTest, MalformedDataLinesAreReportedWithFileAndLineAndCounted) {
  ScratchDir dir("job-badline");
  std::string run = dir / "run";
  // First generate the data, then break two lines and run on it.
  RunResult first = RunJob(run, {"--set", "datagen.users=300", "--set", "train.epochs=1"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  std::string csv = run + "/data/events.csv";
  std::string text = ServerProcess::ReadFile(csv);
  std::ofstream(csv, std::ios::app) << "1,a2,r1,not-enough-columns\n" << "2,a1,r0,5,c1,g1,p0,notanumber,1\n";
  RunResult second = RunJob(run, {"--set", "datagen.users=300", "--set", "train.epochs=1"});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("events.csv:"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("2 malformed lines skipped"), std::string::npos) << second.output;
  EXPECT_EQ(Report(run)["bad_lines"], 2);
  // Past the configured ratio the job stops with a clear error naming the key.
  RunResult strict = RunJob(run, {"--set", "datagen.users=300", "--set", "data.max_bad_ratio=0.0"});
  EXPECT_EQ(strict.exit_code, 2);
  EXPECT_NE(strict.output.find("max_bad_ratio"), std::string::npos) << strict.output;
}

}  // namespace
}  // namespace metaps
