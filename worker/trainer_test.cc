// Trainer rounds against the in-memory LocalParams: what a round pulls and pushes is the engine's
// meta-gradient of the sampler's meta-batch, per table, whatever the prefetch setting; a server
// reply of the wrong size is an error naming the table; dense tensors are the initial values plus
// the servers' offsets.
#include "worker/trainer.h"

#include <gtest/gtest.h>

#include "worker/reference_kernels.h"

namespace metaps::worker {
namespace {

// Two fields of different widths, so a batch's rows go to two tables ("emb4" and "emb2").
JobModel TwoTableJob() {
  JobModel j;
  j.model.fields = {FieldSpec{.name = "item", .dim = 4},
                    FieldSpec{.name = "tags", .dim = 2, .pooling = Pooling::kMean}};
  j.model.layers = {5, 1};
  j.meta.algo = Algo::kMaml;
  j.meta.inner_steps = 2;
  j.meta.inner_lr = 0.1f;
  j.sparse_tables = {{"emb2", 2}, {"emb4", 4}};
  j.dense_tensors = {{"mlp", static_cast<size_t>(j.model.num_params())}};
  return j;
}

// 6 users x 5 events; item keys shared across users, 1-2 tag keys per event.
std::vector<Event> Events() {
  std::vector<Event> ev;
  for (uint64_t u = 0; u < 6; ++u) {
    for (int i = 0; i < 5; ++i) {
      const Key item = 100 + (u * 3 + i) % 7;
      std::vector<Key> tags = {200 + Key(i % 3)};
      if ((u + i) % 2) tags.push_back(210 + Key(u % 2));
      ev.push_back({.user = u, .timestamp = i, .label = float((u + i) % 5), .fields = {{item}, tags}});
    }
  }
  return ev;
}

SamplerOptions Options() {
  return {.support_size = 3, .query_size = 2, .min_support = 2, .min_query = 1, .meta_batch = 3, .seed = 5};
}

TaskSampler Sampler() {
  auto s = TaskSampler::Create(Options(), 2, Events());
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(*s);
}

const std::vector<Key> kItems = {100, 101, 102, 103, 104, 105, 106}, kTags = {200, 201, 202, 210, 211};

// LocalParams starts every row and the MLP offset at zero, where most gradients vanish (zero
// embeddings feed zeros through the ReLUs). So the parameters start from a pseudo-random state:
// one SGD step (lr 0.5) of fixed values in [-1, 1) from zero.
void Seed(LocalParams& p, size_t mlp_size) {
  uint64_t x = 12345;
  auto next = [&x] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(static_cast<int64_t>(x >> 40) % 1000) / 500.f;
  };
  std::vector<float> g4(kItems.size() * 4), g2(kTags.size() * 2), gm(mlp_size);
  for (float& v : g4) v = next();
  for (float& v : g2) v = next();
  for (float& v : gm) v = 0.2f * next();
  ASSERT_TRUE(p.Push("emb4", kItems, g4, 0).get().ok());
  ASSERT_TRUE(p.Push("emb2", kTags, g2, 0).get().ok());
  ASSERT_TRUE(p.PushDense("mlp", gm, 0).get().ok());
}

LocalParams Params(const JobModel& j) { return LocalParams(j.sparse_tables, j.dense_tensors, /*lr=*/0.5f); }

// Every row any event touches, per table, and the MLP offset: the whole state of `p`.
std::vector<std::vector<float>> State(LocalParams& p) {
  return {*p.Pull("emb4", kItems).get(), *p.Pull("emb2", kTags).get(), *p.PullDense("mlp").get()};
}

TEST(TrainerTest, ARoundPushesTheEnginesMetaGradientToEachTable) {
  const JobModel job = TwoTableJob();
  ReferenceKernels kernels;
  LocalParams params = Params(job);
  Seed(params, job.dense_tensors.at("mlp"));

  // The first meta-batch and the engine's meta-gradient at the parameters before the round,
  // worked out here from a sampler of the same seed.
  TaskSampler sampler = Sampler();
  std::vector<const Task*> tasks = sampler.NextMetaBatch();
  TaskBatchBuilder builder;
  TaskBatch batch;
  ASSERT_TRUE(builder.Build(job.model, tasks, &batch).ok());
  std::vector<float> rows(batch.num_values());
  ASSERT_TRUE(PullRows(params, batch.keys, batch.row_offsets, &rows).ok());
  auto dense = PullDense(params, job);
  ASSERT_TRUE(dense.ok());
  const std::vector<float> mlp_before = *params.PullDense("mlp").get();
  MetaLearner learner(job.model, job.meta, &kernels);
  MetaGradient grad;
  ASSERT_TRUE(learner.Compute(batch, dense->weights, {}, rows, false, &grad).ok());

  Trainer trainer(job, Sampler(), &kernels, &params, /*prefetch=*/false);
  auto stats = trainer.RunRound(1);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->tasks, 3);
  EXPECT_EQ(stats->rows_pulled, batch.keys.size());
  EXPECT_EQ(stats->rows_pushed, batch.keys.size());
  double loss = 0;
  for (float l : grad.query_loss) loss += l;
  EXPECT_DOUBLE_EQ(stats->loss, loss / 3);

  // LocalParams applied one SGD step (lr 0.5) to each row the batch touched and to the MLP offset.
  int moved = 0;
  for (size_t k = 0; k < batch.keys.size(); ++k) {
    const int64_t b = batch.row_offsets[k], e = batch.row_offsets[k + 1];
    auto pulled =
        params.Pull(JobModel::TableFor(static_cast<uint32_t>(e - b)), std::vector<Key>{batch.keys[k]}).get();
    ASSERT_TRUE(pulled.ok());
    for (int64_t d = b; d < e; ++d) {
      EXPECT_EQ((*pulled)[d - b], rows[d] - 0.5f * grad.rows[d]) << "key " << batch.keys[k];
      moved += grad.rows[d] != 0.f;
    }
  }
  EXPECT_GT(moved, static_cast<int>(rows.size()) / 2);  // the case has gradients to tell rows apart
  auto mlp = params.PullDense("mlp").get();
  ASSERT_TRUE(mlp.ok());
  ASSERT_EQ(mlp->size(), grad.weights.size());
  for (size_t i = 0; i < mlp->size(); ++i) EXPECT_EQ((*mlp)[i], mlp_before[i] - 0.5f * grad.weights[i]) << i;
}

TEST(TrainerTest, PrefetchingTheNextBatchTrainsTheSameModel) {
  const JobModel job = TwoTableJob();
  ReferenceKernels kernels;
  LocalParams plain = Params(job), prefetched = Params(job);
  Seed(plain, job.dense_tensors.at("mlp"));
  Seed(prefetched, job.dense_tensors.at("mlp"));
  Trainer a(job, Sampler(), &kernels, &plain, /*prefetch=*/false);
  Trainer b(job, Sampler(), &kernels, &prefetched, /*prefetch=*/true);
  for (uint64_t step = 1; step <= 4; ++step) {
    auto sa = a.RunRound(step);
    auto sb = b.RunRound(step);
    ASSERT_TRUE(sa.ok() && sb.ok());
    EXPECT_EQ(sa->loss, sb->loss) << "round " << step;  // one worker: its own pushes land before its prefetch
  }
  LocalParams untrained = Params(job);
  Seed(untrained, job.dense_tensors.at("mlp"));
  const auto state = State(plain);
  EXPECT_EQ(state, State(prefetched));
  EXPECT_NE(state, State(untrained));  // it trained
}

// A ParamClient whose table "emb2" answers with one value too few: a server that disagrees with
// the job about a table's dim.
class ShortReplies final : public ParamClient {
 public:
  explicit ShortReplies(ParamClient* inner) : inner_(inner) {}
  std::future<Result<std::vector<float>>> Pull(const std::string& table, std::span<const Key> keys) override {
    auto r = inner_->Pull(table, keys).get();
    if (r.ok() && table == "emb2") r->pop_back();
    std::promise<Result<std::vector<float>>> p;
    p.set_value(std::move(r));
    return p.get_future();
  }
  std::future<Status> Push(const std::string& table, std::span<const Key> keys, std::span<const float> grads,
                           uint64_t step) override {
    return inner_->Push(table, keys, grads, step);
  }
  std::future<Result<std::vector<float>>> PullDense(const std::string& tensor) override {
    return inner_->PullDense(tensor);
  }
  std::future<Status> PushDense(const std::string& tensor, std::span<const float> grads,
                                uint64_t step) override {
    return inner_->PushDense(tensor, grads, step);
  }

 private:
  ParamClient* inner_;
};

TEST(TrainerTest, AReplyOfTheWrongSizeIsAnErrorNamingTheTable) {
  const JobModel job = TwoTableJob();
  ReferenceKernels kernels;
  LocalParams params = Params(job);
  Seed(params, job.dense_tensors.at("mlp"));
  ShortReplies shorted(&params);
  Trainer trainer(job, Sampler(), &kernels, &shorted, /*prefetch=*/true);
  auto round = trainer.RunRound(1);
  ASSERT_FALSE(round.ok());
  EXPECT_NE(round.status().message().find("table 'emb2'"), std::string::npos) << round.status().ToString();
  LocalParams untouched = Params(job);
  Seed(untouched, job.dense_tensors.at("mlp"));
  EXPECT_EQ(State(params), State(untouched));  // nothing was pushed

  std::vector<Key> keys = {200, 100, 201};
  std::vector<int64_t> offsets = {0, 2, 6, 8};
  std::vector<float> values;
  auto pulled = PullRows(shorted, keys, offsets, &values);
  ASSERT_FALSE(pulled.ok());
  EXPECT_NE(pulled.status().message().find("table 'emb2'"), std::string::npos) << pulled.status().ToString();
  auto fine = PullRows(params, keys, offsets, &values);
  ASSERT_TRUE(fine.ok()) << fine.status().ToString();
  EXPECT_EQ(*fine, 3u);
}

TEST(TrainerTest, DenseTensorsAreTheInitialValuesPlusTheServersOffsetsOfTheRightSize) {
  const JobModel job = TwoTableJob();
  JobModel other = job;
  other.model.layers = {6, 1};  // the servers hold another shape of MLP
  LocalParams params(job.sparse_tables, {{"mlp", static_cast<size_t>(other.model.num_params())}}, 0.5f);
  auto dense = PullDense(params, job);
  ASSERT_FALSE(dense.ok());
  EXPECT_NE(dense.status().message().find("'mlp'"), std::string::npos) << dense.status().ToString();
  LocalParams right = Params(job);
  auto ok = PullDense(right, job);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->weights, job.InitialWeights());  // offset zero: the initial values
  EXPECT_TRUE(ok->alpha.empty());

  // Meta-SGD's rates are inner_lr plus the server's offset, and must match the MLP in size.
  JobModel sgd = job;
  sgd.meta.algo = Algo::kMetaSgd;
  const size_t n = static_cast<size_t>(job.model.num_params());
  LocalParams with_alpha(job.sparse_tables, {{"mlp", n}, {"alpha", n}}, 0.5f);
  ASSERT_TRUE(with_alpha.PushDense("alpha", std::vector<float>(n, -0.02f), 0).get().ok());  // offset +0.01
  sgd.dense_tensors["alpha"] = n;
  auto rates = PullDense(with_alpha, sgd);
  ASSERT_TRUE(rates.ok()) << rates.status().ToString();
  ASSERT_EQ(rates->alpha.size(), n);
  for (float a : rates->alpha) EXPECT_EQ(a, 0.01f + sgd.meta.inner_lr);
  LocalParams short_alpha(job.sparse_tables, {{"mlp", n}, {"alpha", n - 1}}, 0.5f);
  auto refused = PullDense(short_alpha, sgd);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("'alpha'"), std::string::npos) << refused.status().ToString();
}

}  // namespace
}  // namespace metaps::worker
