// Snapshots and serving end to end: a real job (`metaps run`, real processes and RocksDB) ends by
// exporting its snapshot; `metaps serve` loads it in its own process and answers HTTP requests on
// loopback; `metaps export --since` writes a delta that serves on top of it.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "common/http_server.h"
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

// The events of the run's generated data file as request events: every model field from the
// column of the same name (bags split on '|'), and the label.
std::vector<nlohmann::json> EventsOf(const std::string& csv, const nlohmann::json& model,
                                     const std::string& user, std::string* first_user) {
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) header.push_back(c);
  }
  std::vector<nlohmann::json> out;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) f.push_back(c);
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < header.size() && i < f.size(); ++i) row[header[i]] = f[i];
    if (first_user->empty()) *first_user = row["user_id"];
    if (row["user_id"] != (user.empty() ? *first_user : user)) continue;
    nlohmann::json fields = nlohmann::json::object();
    for (const auto& mf : model["fields"]) {
      const std::string name = mf["name"];
      // The user and item fields come from the id columns (data.columns role = "user"/"item").
      const std::string column = row.count(name) ? name : name + "_id";
      EXPECT_TRUE(row.count(column)) << "no column for model field " << name << " in " << csv;
      const std::string v = row[column];
      if (name == "genres") {
        nlohmann::json bag = nlohmann::json::array();
        std::stringstream gs(v);
        for (std::string g; std::getline(gs, g, '|');) bag.push_back(g);
        fields[name] = bag;
      } else {
        fields[name] = v;
      }
    }
    out.push_back({{"fields", fields}, {"label", std::stod(row["label"])}});
  }
  return out;
}

nlohmann::json Json(const HttpResponse& r) { return nlohmann::json::parse(r.body, nullptr, false); }

TEST(ServeTest, AFinishedJobIsExportedServedAdaptedToTheSupportAndBadRequestsAreRefused) {
  ScratchDir dir("serve");
  const std::string run = dir / "run";
  ASSERT_EQ(RunMetaps({"run", Example("synthetic.toml"), "--run-dir", run, "--quiet", "--set",
                       "datagen.users=300", "--set", "train.epochs=2", "--set", "checkpoint.every_rounds=4"},
                      dir / "run.out", std::chrono::minutes(5)),
            0)
      << ServerProcess::ReadFile(dir / "run.out");
  const std::string out = ServerProcess::ReadFile(dir / "run.out");
  ASSERT_NE(out.find("snapshot: "), std::string::npos) << out;
  std::string snap;
  for (const auto& e : fs::directory_iterator(run + "/snapshots")) snap = e.path().string();
  ASSERT_NE(snap.find("full-"), std::string::npos) << snap;
  for (const char* f : {"manifest.json", "dense/mlp.npy", "rows/emb8/shard-0.sst", "rows/emb8/shard-1.sst"}) {
    EXPECT_TRUE(fs::exists(snap + "/" + f)) << f;
  }

  ServeProcess serve = ServeProcess::Start(dir.path().string(), "serve",
                                           {snap, "--work-dir", dir / "serve-work", "--http-threads", "3"});
  ASSERT_GT(serve.port, 0);
  auto health = Json(serve.Call("GET", "/health"));
  ASSERT_FALSE(health.is_discarded());
  EXPECT_EQ(health["status"], "ok");
  EXPECT_GT(health["rows"].get<uint64_t>(), 100u);
  auto model = Json(serve.Call("GET", "/model"));
  ASSERT_TRUE(model.contains("fields")) << model.dump();

  std::string first_user;
  std::vector<nlohmann::json> events = EventsOf(run + "/data/events.csv", model, "", &first_user);
  ASSERT_GE(events.size(), 10u);
  nlohmann::json support = nlohmann::json::array(), candidates = nlohmann::json::array();
  for (int i = 0; i < 6; ++i) support.push_back(events[i]);
  for (int i = 6; i < 10; ++i) candidates.push_back({{"fields", events[i]["fields"]}});
  HttpResponse r = serve.Post({{"support", support}, {"candidates", candidates}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto scored = Json(r);
  ASSERT_EQ(scored["scores"].size(), 4u) << r.body;
  for (const auto& s : scored["scores"]) EXPECT_TRUE(std::isfinite(s.get<double>())) << r.body;
  EXPECT_TRUE(scored["adapted"].get<bool>());
  EXPECT_GT(scored["rows_stored"].get<uint64_t>(), 0u) << r.body;

  // The support steers the scores: one event of the candidate's own item labelled above its
  // unadapted score moves the score up, one labelled below moves it down. The labels bracket the
  // model's own prediction by a margin: the data's highest and lowest labels need not bracket it
  // in a job this short, and an inner step driven by a large error can cross a ReLU's kink and
  // turn the move around (CI saw that once).
  nlohmann::json one = {{"fields", events[6]["fields"]}};
  auto score_after = [&](double label) {
    nlohmann::json ev = {{"fields", events[6]["fields"]}, {"label", label}};
    HttpResponse a = serve.Post({{"support", {ev}}, {"candidates", {one}}});
    EXPECT_EQ(a.status, 200) << a.body;
    return Json(a)["scores"][0].get<double>();
  };
  HttpResponse cold = serve.Post({{"candidates", {one}}});
  ASSERT_EQ(cold.status, 200) << cold.body;
  EXPECT_FALSE(Json(cold)["adapted"].get<bool>());
  const double none = Json(cold)["scores"][0].get<double>();
  const double up = score_after(none + 0.5), down = score_after(none - 0.5);
  EXPECT_GT(up, none) << "down " << down;
  EXPECT_LT(down, none) << "up " << up;
  EXPECT_GT(up, down + 1e-3);
  EXPECT_DOUBLE_EQ(Json(serve.Post({{"candidates", {one}}}))["scores"][0].get<double>(), none);  // stateless

  // Bad requests: 400 naming the place, and the server keeps serving.
  struct Bad {
    std::string body, names;
  };
  const std::string field0 = model["fields"][0]["name"];
  std::vector<Bad> bad = {
      {"{not json", "JSON"},
      {R"({"candidates": []})", "candidates"},
      {R"({"candidates": [{"fields": {"no_such_field": "1"}}]})", "no_such_field"},
      {R"({"support": [{"fields": {}}], "candidates": [{"fields": {}}]})", "support[0].label"},
      {R"({"candidates": [{"fields": {")" + field0 + R"(": {"a": 1}}}]})", "candidates[0].fields." + field0},
      {R"({"candidates": [{"fields": {}, "label": 1}]})", "candidates[0].label"},
      {R"({"query": []})", "query"},
  };
  for (const auto& b : bad) {
    HttpResponse e = serve.Call("POST", "/score", b.body);
    EXPECT_EQ(e.status, 400) << b.body << " -> " << e.body;
    EXPECT_NE(e.body.find(b.names), std::string::npos) << b.body << " -> " << e.body;
    EXPECT_NE(e.body.find("INVALID_ARGUMENT"), std::string::npos) << e.body;
  }
  EXPECT_EQ(serve.Call("GET", "/score").status, 405);
  EXPECT_EQ(serve.Call("GET", "/nope").status, 404);
  health = Json(serve.Call("GET", "/health"));
  EXPECT_EQ(health["errors"].get<uint64_t>(), bad.size());
  EXPECT_NE(serve.Call("GET", "/metrics").body.find("metaps_serve_requests_total"), std::string::npos);
  const HttpResponse again = serve.Post({{"support", support}, {"candidates", candidates}});
  EXPECT_EQ(Json(again)["scores"], scored["scores"]);

  // Four clients at once, each on one kept connection, to a server of three request threads:
  // every answer is the one its request gets alone, and no client needed a second connection.
  std::vector<std::string> bodies;
  std::vector<nlohmann::json> alone;
  for (int s = 0; s <= 5; ++s) {
    nlohmann::json sup = nlohmann::json::array();
    for (int i = 0; i < s; ++i) sup.push_back(events[i]);
    bodies.push_back(nlohmann::json{{"support", sup}, {"candidates", candidates}}.dump());
    HttpResponse a = serve.Call("POST", "/score", bodies.back());
    ASSERT_EQ(a.status, 200) << a.body;
    alone.push_back(Json(a)["scores"]);
  }
  EXPECT_NE(alone[5], alone[0]);
  std::atomic<int> wrong{0};
  std::vector<int> connections(4, 0);
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      HttpClient client("127.0.0.1", serve.port, 30000);
      for (int k = 0; k < 15; ++k) {
        const size_t i = static_cast<size_t>(t + k) % bodies.size();
        auto a = client.Call("POST", "/score", bodies[i]);
        if (!a.ok() || a->status != 200 || Json(*a)["scores"] != alone[i]) ++wrong;
      }
      connections[static_cast<size_t>(t)] = client.connections();
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(connections, std::vector<int>(4, 1));
  health = Json(serve.Call("GET", "/health"));
  EXPECT_GE(health["scorers"].get<int>(), 1);
  EXPECT_LE(health["scorers"].get<int>(), 3);  // no more than requests were served at once
  EXPECT_NE(ServerProcess::ReadFile(serve.log).find("with 3 request threads"), std::string::npos);
  EXPECT_EQ(serve.Stop(), 0) << ServerProcess::ReadFile(serve.log);

  // An older snapshot (a periodic checkpoint's) plus a delta up to the final checkpoint serves
  // exactly what the final snapshot serves; the older one alone serves something else.
  std::string older_ckpt;
  for (const auto& e : fs::directory_iterator(run + "/checkpoints")) {
    if (older_ckpt.empty() || e.path().string() < older_ckpt) older_ckpt = e.path().string();
  }
  ASSERT_FALSE(older_ckpt.empty());
  const std::string older = dir / "older", delta = dir / "delta";
  ASSERT_EQ(RunMetaps({"export", run, "--checkpoint", older_ckpt, "--out", older}, dir / "older.out",
                      std::chrono::minutes(2)),
            0)
      << ServerProcess::ReadFile(dir / "older.out");
  ASSERT_EQ(RunMetaps({"export", run, "--since", older, "--out", delta}, dir / "export.out",
                      std::chrono::minutes(2)),
            0)
      << ServerProcess::ReadFile(dir / "export.out");
  std::ifstream min(delta + "/manifest.json");
  auto manifest = nlohmann::json::parse(min, nullptr, false);
  ASSERT_FALSE(manifest.is_discarded());
  EXPECT_EQ(manifest["kind"], "delta");
  std::ifstream bin(older + "/manifest.json");
  auto base = nlohmann::json::parse(bin, nullptr, false);
  EXPECT_EQ(manifest["base"]["id"], base["id"]);
  uint64_t delta_rows = 0;
  for (const auto& s : manifest["shards"]) delta_rows += s["rows"].get<uint64_t>();
  EXPECT_GT(delta_rows, 0u) << manifest.dump();
  const nlohmann::json request = {{"support", support}, {"candidates", candidates}};
  ServeProcess chained = ServeProcess::Start(dir.path().string(), "chained",
                                             {older, "--delta", delta, "--work-dir", dir / "chained-work"});
  ASSERT_GT(chained.port, 0);
  EXPECT_EQ(Json(chained.Post(request))["scores"], scored["scores"]);
  EXPECT_EQ(chained.Stop(), 0);
  ServeProcess old_only =
      ServeProcess::Start(dir.path().string(), "old-only", {older, "--work-dir", dir / "old-only-work"});
  ASSERT_GT(old_only.port, 0);
  EXPECT_NE(Json(old_only.Post(request))["scores"], scored["scores"]);
  EXPECT_EQ(old_only.Stop(), 0);

  // A delta alone is not a snapshot to serve; an existing --out is never overwritten.
  EXPECT_EQ(RunMetaps({"serve", delta, "--port", "0"}, dir / "bad-serve.out", std::chrono::minutes(1)), 2);
  EXPECT_NE(ServerProcess::ReadFile(dir / "bad-serve.out").find("is a delta"), std::string::npos)
      << ServerProcess::ReadFile(dir / "bad-serve.out");
  EXPECT_NE(RunMetaps({"export", run, "--out", delta}, dir / "again.out", std::chrono::minutes(1)), 0);
  EXPECT_NE(ServerProcess::ReadFile(dir / "again.out").find("never overwritten"), std::string::npos);
}

}  // namespace
}  // namespace metaps
