// The job's model and parameter tables derived from its config and dataset (worker/job.h).
#include "worker/job.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace metaps::worker {
namespace {

data::Dataset TwoFieldDataset(bool binary) {
  using Spec = data::FieldSpec;
  const Spec genres{.name = "genres", .kind = Spec::Kind::kBag, .pooling = Spec::Pooling::kMean, .dim = 4};
  data::Dataset d({Spec{.name = "user", .dim = 8}, genres});
  d.set_binary_labels(binary);
  return d;
}

Config Parse(const std::string& text) {
  auto c = Config::ParseString(text);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? *c : Config();
}

TEST(JobModelTest, TheModelFollowsTheFieldsAndTheHiddenWidths) {
  const data::Dataset d = TwoFieldDataset(/*binary=*/true);
  auto j = BuildJobModel(Parse("[model]\nhidden = [16, 8]\n[meta]\nalgo = \"metasgd\"\n"), d);
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  ASSERT_EQ(j->model.fields.size(), 2u);
  EXPECT_EQ(j->model.fields[0].dim, 8);
  EXPECT_EQ(j->model.fields[1].dim, 4);
  EXPECT_EQ(j->model.fields[1].pooling, Pooling::kMean);
  EXPECT_EQ(j->model.layers, (std::vector<int>{12, 16, 8, 1}));
  EXPECT_EQ(j->model.loss, Loss::kBce);  // binary labels: bce unless [model].loss says otherwise
  EXPECT_EQ(j->sparse_tables, (std::map<std::string, uint32_t>{{"emb4", 4}, {"emb8", 8}}));
  // Meta-SGD keeps its per-parameter rates in a dense tensor beside the MLP.
  EXPECT_EQ(j->dense_tensors.at("mlp"), static_cast<size_t>(j->model.num_params()));
  EXPECT_EQ(j->dense_tensors.at("alpha"), static_cast<size_t>(j->model.num_params()));

  auto mse = BuildJobModel(Parse("[model]\nloss = \"mse\"\n[meta]\n"), d);
  ASSERT_TRUE(mse.ok());
  EXPECT_EQ(mse->model.loss, Loss::kMse);
  EXPECT_EQ(mse->dense_tensors.count("alpha"), 0u);
}

TEST(JobModelTest, BadModelConfigNamesTheKey) {
  const data::Dataset d = TwoFieldDataset(false);
  auto bad_width = BuildJobModel(Parse("[model]\nhidden = [16, 0]\n[meta]\n"), d);
  ASSERT_FALSE(bad_width.ok());
  EXPECT_NE(bad_width.status().message().find("model.hidden[1]"), std::string::npos)
      << bad_width.status().ToString();
  auto bad_loss = BuildJobModel(Parse("[model]\nloss = \"hinge\"\n[meta]\n"), d);
  ASSERT_FALSE(bad_loss.ok());
  EXPECT_NE(bad_loss.status().message().find("model.loss"), std::string::npos)
      << bad_loss.status().ToString();
  auto unknown = BuildJobModel(Parse("[model]\nhiden = [4]\n[meta]\n"), d);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("hiden"), std::string::npos) << unknown.status().ToString();
}

// The servers get the job's optimizer settings through TablesToml: every value must arrive as the
// user wrote it, not rounded to a few digits.
TEST(JobModelTest, TablesTomlCarriesEveryOptimizerSettingExactly) {
  const data::Dataset d = TwoFieldDataset(false);
  auto j = BuildJobModel(Parse("[model]\nhidden = [4]\n[meta]\n"), d);
  ASSERT_TRUE(j.ok());
  const double lr = 0.0012345678901234, dense_lr = 3.3333333333333e-5, beta1 = 0.87654321,
               beta2 = 0.99987654321, eps = 1e-8, l2 = 1.0, init_scale = 0.0123456789012;
  auto toml = TablesToml(Parse("[optimizer]\noptimizer = \"adam\"\nlr = 0.0012345678901234\n"
                               "dense_lr = 3.3333333333333e-5\nbeta1 = 0.87654321\nbeta2 = 0.99987654321\n"
                               "eps = 1e-8\nl2 = 1\ninit_scale = 0.0123456789012\n"),
                         *j);
  ASSERT_TRUE(toml.ok()) << toml.status().ToString();
  Config parsed = Parse(*toml);
  auto tables = parsed.GetTableArray("tables");
  ASSERT_TRUE(tables.ok()) << *toml;
  std::set<std::string> names;
  for (const Config& t : *tables) {
    auto name = t.GetString("name");
    ASSERT_TRUE(name.ok());
    names.insert(*name);
    const bool dense = t.GetBool("dense", false).value_or(false);
    EXPECT_EQ(t.GetDouble("lr").value_or(-1), dense ? dense_lr : lr) << *name << "\n" << *toml;
    EXPECT_EQ(t.GetDouble("beta1").value_or(-1), beta1) << *name;
    EXPECT_EQ(t.GetDouble("beta2").value_or(-1), beta2) << *name;
    EXPECT_EQ(t.GetDouble("eps").value_or(-1), eps) << *name;
    EXPECT_EQ(t.GetDouble("l2").value_or(-1), l2) << *name;
    if (!dense) {
      EXPECT_EQ(t.GetDouble("init_scale").value_or(-1), init_scale) << *name;
    }
  }
  EXPECT_EQ(names, (std::set<std::string>{"emb4", "emb8", "mlp"}));
}

TEST(JobModelTest, PartitionEventsDealsTrainUsersRoundRobin) {
  data::Dataset d = TwoFieldDataset(false);
  data::Split split;
  uint32_t e = 0;
  for (uint64_t user : {5, 7, 9}) {
    data::UserEvents u{.user = user};
    for (int i = 0; i < 2; ++i) {
      d.BeginEvent(user, 100 + i, static_cast<float>(user), /*timestamp=*/e);
      d.AddKey(static_cast<Key>(user));
      d.EndField();
      d.AddKey(static_cast<Key>(1000 + e));
      d.AddKey(static_cast<Key>(2000 + e));
      d.EndField();
      u.events.push_back(e++);
    }
    split.train.push_back(u);
  }
  // Users 5 and 9 (positions 0 and 2) go to worker 0, user 7 to worker 1, each with all its events
  // in order.
  EXPECT_EQ(PartitionEvents(split, 0, 2), (std::vector<size_t>{0, 1, 4, 5}));
  EXPECT_EQ(PartitionEvents(split, 1, 2), (std::vector<size_t>{2, 3}));
  EXPECT_TRUE(PartitionEvents(split, 3, 4).empty());
  // An empty partition is no events, not the whole dataset.
  EXPECT_EQ(TaskSampler::Create(SamplerOptions{}, d, PartitionEvents(split, 3, 4)).status().code(),
            StatusCode::kFailedPrecondition);

  // The sampler reads a partition from the dataset in place: worker 0's tasks are users 5 and 9,
  // their rows the events' own keys and labels.
  SamplerOptions options;
  options.support_size = 1;
  options.query_size = 1;
  options.window = TaskWindow::kFirst;
  const std::vector<size_t> mine = PartitionEvents(split, 0, 2);
  auto sampler = TaskSampler::Create(options, d, mine);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  ASSERT_EQ(sampler->tasks().size(), 2u);
  for (const Task& t : sampler->tasks()) {
    EXPECT_TRUE(t.user == 5 || t.user == 9) << t.user;
    ASSERT_EQ(t.rows(), 2);
    EXPECT_EQ(t.labels, (std::vector<float>{static_cast<float>(t.user), static_cast<float>(t.user)}));
    EXPECT_EQ(t.keys[0], static_cast<Key>(t.user));  // row 0, field 0: the user's own key
  }
}

}  // namespace
}  // namespace metaps::worker
