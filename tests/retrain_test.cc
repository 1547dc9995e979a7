// Continuous retraining end to end, with real processes, sockets and RocksDB: `metaps retrain`
// trains a cycle on each batch of new event files, warm-started from the cycle before, and
// publishes a delta; `metaps serve --follow` picks the new chain up while serving. Also the
// warm start's refusals of a job that would not continue the same model.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/http_server.h"
#include "common/sst_file.h"
#include "common/subprocess.h"
#include "tests/serve_util.h"
#include "tests/test_util.h"

namespace metaps {
namespace {

namespace fs = std::filesystem;
using metaps::testing::Example;
using metaps::testing::MetapsBin;
using metaps::testing::RunMetaps;
using metaps::testing::ScratchDir;
using metaps::testing::ServeProcess;
using metaps::testing::ServerProcess;

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in, nullptr, false);
}

// The rows of every shard's SST file of table emb8 in a snapshot: key -> weights.
std::map<uint64_t, std::vector<float>> SnapshotRows(const std::string& snap) {
  std::map<uint64_t, std::vector<float>> out;
  for (const auto& e : fs::directory_iterator(snap + "/rows/emb8")) {
    Status s = ScanSstFile(e.path().string(), [&](std::string_view k, std::string_view v) {
      uint64_t key = 0;
      for (char c : k) key = (key << 8) | static_cast<uint8_t>(c);
      std::vector<float> row(v.size() / 4);
      std::memcpy(row.data(), v.data(), row.size() * 4);
      out[key] = row;
      return true;
    });
    EXPECT_TRUE(s.ok()) << s;
  }
  return out;
}

// The synthetic example without its [datagen] table: retrain reads the files it is given.
std::string JobWithoutDatagen(const std::string& dir) {
  std::ifstream in(Example("synthetic.toml"));
  std::ostringstream job;
  bool skip = false;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '[') skip = line == "[datagen]";
    if (!skip) job << line << "\n";
  }
  const std::string path = dir + "/job.toml";
  std::ofstream(path) << job.str();
  return path;
}

// A generated set cut into three files by user: users of part-1 are absent from later files.
void WriteParts(const std::string& dir, int users) {
  ASSERT_EQ(RunMetaps({"datagen", "--out", dir + "/gen", "--users", std::to_string(users), "--items", "200"},
                      dir + "/datagen.out", std::chrono::minutes(2)),
            0);
  std::ifstream in(dir + "/gen/events.csv");
  std::string header;
  std::getline(in, header);
  ASSERT_EQ(header.rfind("user_id,", 0), 0u) << header;
  std::ofstream parts[3];
  for (int i = 0; i < 3; ++i) {
    parts[i].open(dir + "/part-" + std::to_string(i + 1) + ".csv");
    parts[i] << header << "\n";
  }
  for (std::string line; std::getline(in, line);) {
    const int user = std::stoi(line.substr(0, line.find(',')));
    parts[std::min(2, user * 3 / users)] << line << "\n";
  }
}

TEST(RetrainTest, CyclesWarmStartPublishDeltasAndAFollowingServerSwitchesToThem) {
  ScratchDir dir("retrain");
  const std::string job = JobWithoutDatagen(dir.path().string());
  WriteParts(dir.path().string(), 300);
  const std::string in = dir / "incoming", out = dir / "out";
  fs::create_directories(in);
  fs::copy_file(dir / "part-1.csv", in + "/part-1.csv");
  fs::copy_file(dir / "part-2.csv", in + "/part-2.csv");
  std::ofstream(in + "/part-3.csv.part") << "not complete yet\n";  // ignored until renamed
  const std::vector<std::string> retrain = {"retrain", job,       "--incoming", in,
                                            "--out",   out,       "--once",     "--window",
                                            "2",       "--quiet", "--set",      "train.epochs=2"};
  ASSERT_EQ(RunMetaps(retrain, dir / "cycle1.out", std::chrono::minutes(5)), 0)
      << ServerProcess::ReadFile(dir / "cycle1.out");
  auto state = ReadJson(out + "/retrain.json");
  ASSERT_EQ(state["cycles"].size(), 1u) << state.dump();
  EXPECT_EQ(state["cycles"][0]["kind"], "full");
  EXPECT_EQ(state["cycles"][0]["files"], nlohmann::json({"part-1.csv", "part-2.csv"}));
  EXPECT_EQ(ServerProcess::ReadFile(out + "/published/CHAIN"), "0001-full\n");

  // A server follows the published chain.
  ServeProcess follow =
      ServeProcess::Start(dir.path().string(), "follow", {"--follow", out + "/published", "--poll-s", "0.2"});
  ASSERT_GT(follow.port, 0);
  const std::string full1 = ReadJson(out + "/published/0001-full/manifest.json")["id"];
  EXPECT_EQ(follow.GetJson("/health")["snapshots"].back()["id"], full1);

  // New data: cycle 2 trains on the newest two files (part-2, part-3), warm-started from cycle 1,
  // and publishes a delta on cycle 1's snapshot.
  fs::rename(in + "/part-3.csv.part", dir / "junk");
  fs::copy_file(dir / "part-3.csv", in + "/part-3.csv.part");
  fs::rename(in + "/part-3.csv.part", in + "/part-3.csv");
  ASSERT_EQ(RunMetaps(retrain, dir / "cycle2.out", std::chrono::minutes(5)), 0)
      << ServerProcess::ReadFile(dir / "cycle2.out");
  state = ReadJson(out + "/retrain.json");
  ASSERT_EQ(state["cycles"].size(), 2u) << state.dump();
  EXPECT_EQ(state["cycles"][1]["kind"], "delta");
  EXPECT_EQ(state["cycles"][1]["files"], nlohmann::json({"part-2.csv", "part-3.csv"}));
  EXPECT_EQ(state["consumed"].size(), 3u);
  EXPECT_EQ(ServerProcess::ReadFile(out + "/published/CHAIN"), "0001-full\n0002-delta\n");
  const std::string run2 = state["cycles"][1]["run"];
  auto warm = ReadJson(run2 + "/warm_start.json");
  EXPECT_EQ(warm["from_run"], state["cycles"][0]["run"]) << warm.dump();
  auto delta = ReadJson(out + "/published/0002-delta/manifest.json");
  EXPECT_EQ(delta["base"]["id"], full1);
  uint64_t unchanged = 0;
  for (const auto& s : delta["shards"]) unchanged += s["rows_unchanged"].get<uint64_t>();
  EXPECT_GT(unchanged, 0u) << delta.dump();  // part-1's users were not in cycle 2's data

  // Nothing new: no cycle.
  ASSERT_EQ(RunMetaps(retrain, dir / "cycle3.out", std::chrono::minutes(1)), 0);
  EXPECT_NE(ServerProcess::ReadFile(dir / "cycle3.out").find("nothing new"), std::string::npos);
  EXPECT_EQ(ReadJson(out + "/retrain.json")["cycles"].size(), 2u);

  // The warm start carried cycle 1's rows: a full export of cycle 2 holds every row of cycle 1's
  // snapshot that cycle 2 did not change, with cycle 1's values.
  const std::string full2 = dir / "full2";
  ASSERT_EQ(RunMetaps({"export", run2, "--out", full2}, dir / "export.out", std::chrono::minutes(2)), 0)
      << ServerProcess::ReadFile(dir / "export.out");
  auto rows1 = SnapshotRows(out + "/published/0001-full"),
       rows_delta = SnapshotRows(out + "/published/0002-delta"), rows2 = SnapshotRows(full2);
  size_t carried = 0;
  for (const auto& [key, value] : rows1) {
    if (rows_delta.count(key)) continue;
    ASSERT_TRUE(rows2.count(key)) << "row " << key << " of cycle 1 is missing from cycle 2";
    EXPECT_EQ(rows2.at(key), value) << key;
    ++carried;
  }
  EXPECT_EQ(carried, unchanged);
  for (const auto& [key, value] : rows_delta) EXPECT_EQ(rows2.at(key), value) << key;

  // The follower switched to the new chain, and serves what the full export of cycle 2 serves.
  const std::string id2 = delta["id"];
  for (int i = 0; i < 300 && follow.GetJson("/health")["snapshots"].back()["id"] != id2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(follow.GetJson("/health")["snapshots"].back()["id"], id2) << ServerProcess::ReadFile(follow.log);
  ServeProcess whole = ServeProcess::Start(dir.path().string(), "whole", {full2});
  ASSERT_GT(whole.port, 0);
  const nlohmann::json model = follow.GetJson("/model");
  nlohmann::json fields = nlohmann::json::object();
  for (const auto& f : model["fields"]) fields[f["name"].get<std::string>()] = "1";
  const nlohmann::json request = {{"support", {{{"fields", fields}, {"label", 5}}}},
                                  {"candidates", {{{"fields", fields}}}}};
  const HttpResponse ra = follow.Post(request), rb = whole.Post(request);
  ASSERT_EQ(ra.status, 200) << ra.body;
  ASSERT_EQ(rb.status, 200) << rb.body;
  const auto a = nlohmann::json::parse(ra.body), b = nlohmann::json::parse(rb.body);
  EXPECT_EQ(a["scores"], b["scores"]) << a.dump() << " vs " << b.dump();
  EXPECT_EQ(a["snapshot"], id2);
  EXPECT_EQ(whole.Stop(), 0);
  EXPECT_EQ(follow.Stop(), 0) << ServerProcess::ReadFile(follow.log);
  // The grown chain reused the rows the follower had loaded for cycle 1 and read only the delta's.
  EXPECT_NE(ServerProcess::ReadFile(follow.log).find(", " + std::to_string(rows1.size()) + " of them reused"),
            std::string::npos)
      << ServerProcess::ReadFile(follow.log);
}

// A warm start continues the same model on the same shards: anything else is refused before a
// process starts, naming the key (`--check` runs every check a launch does).
TEST(RetrainTest, AWarmStartThatWouldNotContinueTheSameModelIsRefusedNamingTheKey) {
  ScratchDir dir("warmstart");
  const std::string run = dir / "run";
  ASSERT_EQ(RunMetaps({"run", Example("synthetic.toml"), "--run-dir", run, "--quiet", "--set",
                       "datagen.users=150", "--set", "train.epochs=1"},
                      dir / "run.out", std::chrono::minutes(5)),
            0)
      << ServerProcess::ReadFile(dir / "run.out");
  auto check = [&](std::vector<std::string> sets, const std::string& name) {
    std::vector<std::string> args = {"run",   Example("synthetic.toml"), "--check", "--warm-start", run,
                                     "--set", "datagen.users=150"};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    const int code = RunMetaps(args, dir / (name + ".out"), std::chrono::minutes(2));
    return std::make_pair(code, ServerProcess::ReadFile(dir / (name + ".out")));
  };
  auto ok = check({"datagen.seed=9", "meta.inner_lr=0.05"}, "ok");
  EXPECT_EQ(ok.first, 0) << ok.second;
  EXPECT_NE(ok.second.find("warm start: from " + run + "/checkpoint"), std::string::npos) << ok.second;
  const std::pair<std::string, std::string> refused[] = {
      {"model.hidden=[8]", "model.hidden"}, {"model.init_seed=99", "model.init_seed"},
      {"job.servers=1", "job.servers"},     {"optimizer.optimizer=\"sgd\"", "optimizer.optimizer"},
      {"data.dim=4", "the fields"},
  };
  int i = 0;
  for (const auto& [set, key] : refused) {
    auto r = check({set}, "refused-" + std::to_string(i++));
    EXPECT_EQ(r.first, 2) << set << ": " << r.second;
    EXPECT_NE(r.second.find("--warm-start: " + key), std::string::npos) << set << ": " << r.second;
  }
  EXPECT_EQ(RunMetaps({"run", Example("synthetic.toml"), "--check", "--warm-start", dir / "nowhere"},
                      dir / "nowhere.out", std::chrono::minutes(1)),
            2);
  EXPECT_NE(ServerProcess::ReadFile(dir / "nowhere.out").find("neither a run directory"), std::string::npos);
}

}  // namespace
}  // namespace metaps
