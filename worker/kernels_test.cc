// OneDnnKernels must agree with the plain-loop ReferenceKernels on random shapes and flags.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "worker/onednn_kernels.h"
#include "worker/reference_kernels.h"

namespace metaps::worker {
namespace {

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

class KernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto k = OneDnnKernels::Create();
    ASSERT_TRUE(k.ok()) << k.status();
    onednn_ = std::move(k).value();
  }
  std::unique_ptr<OneDnnKernels> onednn_;
  ReferenceKernels reference_;
  std::mt19937 rng_{7};
};

TEST_F(KernelsTest, BatchedMatmulMatchesReferenceOnRandomShapesAndFlags) {
  std::uniform_int_distribution<int> dim(1, 37), batch(1, 6), coin(0, 1);
  for (int trial = 0; trial < 80; ++trial) {
    MatmulSpec s;
    s.batch = batch(rng_);
    s.m = dim(rng_);
    s.k = dim(rng_);
    s.n = dim(rng_);
    s.trans_a = coin(rng_);
    s.trans_b = coin(rng_);
    s.broadcast_b = coin(rng_) && coin(rng_);
    s.accumulate = coin(rng_);
    s.bias = coin(rng_);
    s.relu = coin(rng_);
    s.alpha = coin(rng_) ? 1.0f : -0.37f;
    const int64_t bb = s.broadcast_b ? 1 : s.batch;
    auto a = Random(s.batch * s.m * s.k, rng_);
    auto b = Random(bb * s.k * s.n, rng_);
    auto bias = Random(bb * s.n, rng_);
    auto c0 = Random(s.batch * s.m * s.n, rng_);
    auto c_ref = c0, c_dnn = c0;
    ASSERT_TRUE(reference_.Matmul(s, a.data(), b.data(), s.bias ? bias.data() : nullptr, c_ref.data()).ok());
    Status st = onednn_->Matmul(s, a.data(), b.data(), s.bias ? bias.data() : nullptr, c_dnn.data());
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_LE(MaxAbsDiff(c_ref, c_dnn), 1e-4 * std::sqrt(double(s.k)) + 1e-5)
        << "trial " << trial << " b=" << s.batch << " m=" << s.m << " k=" << s.k << " n=" << s.n << " ta=" << s.trans_a
        << " tb=" << s.trans_b << " bcast=" << s.broadcast_b << " acc=" << s.accumulate << " bias=" << s.bias
        << " relu=" << s.relu << " alpha=" << s.alpha;
  }
}

TEST_F(KernelsTest, MatmulRejectsEmptyShapesWithAStatus) {
  MatmulSpec s{.batch = 1, .m = 0, .k = 3, .n = 3};
  float x = 0;
  EXPECT_EQ(onednn_->Matmul(s, &x, &x, nullptr, &x).code(), StatusCode::kInvalidArgument);
}

TEST_F(KernelsTest, ReluBackwardAndSumRowsMatchReference) {
  for (int64_t count : {1, 17, 1000}) {
    auto y = Random(count, rng_), dy = Random(count, rng_);
    for (float& v : y) v = std::max(v, 0.0f);
    std::vector<float> r(count), d(count);
    ASSERT_TRUE(reference_.ReluBackward(count, y.data(), dy.data(), r.data()).ok());
    ASSERT_TRUE(onednn_->ReluBackward(count, y.data(), dy.data(), d.data()).ok());
    EXPECT_EQ(r, d);
    // In place, as the meta-learner uses it.
    ASSERT_TRUE(onednn_->ReluBackward(count, y.data(), dy.data(), dy.data()).ok());
    EXPECT_EQ(r, dy);
  }
  for (bool accumulate : {false, true}) {
    const int64_t batch = 3, m = 11, n = 5;
    auto a = Random(batch * m * n, rng_);
    auto out0 = Random(batch * n, rng_);
    auto r = out0, d = out0;
    ASSERT_TRUE(reference_.SumRows(batch, m, n, a.data(), -0.5f, accumulate, r.data()).ok());
    ASSERT_TRUE(onednn_->SumRows(batch, m, n, a.data(), -0.5f, accumulate, d.data()).ok());
    EXPECT_LE(MaxAbsDiff(r, d), 1e-5);
  }
}

// Three fields of different dims and poolings; bags of 0..4 keys with repeats.
struct BagFixture {
  ModelSpec model;
  std::vector<int64_t> row_offsets{0};
  std::vector<int32_t> offsets{0}, ids;
  std::vector<float> values;
  int64_t rows = 9;

  explicit BagFixture(std::mt19937& rng) {
    model.fields = {{"a", 3, Pooling::kSum}, {"b", 5, Pooling::kMean}, {"c", 2, Pooling::kMean}};
    model.layers = {1};
    // Rows 0..3 belong to field a, 4..7 to b, 8..10 to c.
    const int per_field[] = {4, 4, 3};
    std::vector<int> first(3);
    int next = 0;
    for (int f = 0; f < 3; ++f) {
      first[f] = next;
      for (int i = 0; i < per_field[f]; ++i, ++next) row_offsets.push_back(row_offsets.back() + model.fields[f].dim);
    }
    values = Random(row_offsets.back(), rng);
    std::uniform_int_distribution<int> bag(0, 4);
    for (int64_t r = 0; r < rows; ++r) {
      for (int f = 0; f < 3; ++f) {
        const int size = bag(rng);
        for (int j = 0; j < size; ++j) ids.push_back(first[f] + int(rng() % per_field[f]));
        offsets.push_back(static_cast<int32_t>(ids.size()));
      }
    }
  }
  BagsView bags() const { return {rows, 3, offsets.data(), ids.data()}; }
  RowTableView table() const { return {row_offsets.data(), static_cast<int64_t>(row_offsets.size() - 1)}; }
};

TEST_F(KernelsTest, GatherPoolAndScatterAddMatchReferenceAndAreAdjoint) {
  BagFixture fx(rng_);
  const int width = fx.model.input_width();
  std::vector<float> x_ref(fx.rows * width, -1.0f), x_dnn(fx.rows * width, -2.0f);
  ASSERT_TRUE(reference_.GatherPool(fx.model, fx.bags(), fx.table(), fx.values.data(), x_ref.data()).ok());
  ASSERT_TRUE(onednn_->GatherPool(fx.model, fx.bags(), fx.table(), fx.values.data(), x_dnn.data()).ok());
  EXPECT_LE(MaxAbsDiff(x_ref, x_dnn), 1e-5);

  auto dx = Random(fx.rows * width, rng_);
  std::vector<float> g_ref(fx.values.size(), 0.5f), g_dnn(fx.values.size(), 0.5f);
  ASSERT_TRUE(reference_.ScatterAdd(fx.model, fx.bags(), fx.table(), dx.data(), 0.25f, g_ref.data()).ok());
  ASSERT_TRUE(onednn_->ScatterAdd(fx.model, fx.bags(), fx.table(), dx.data(), 0.25f, g_dnn.data()).ok());
  EXPECT_LE(MaxAbsDiff(g_ref, g_dnn), 1e-5);

  // <gather(v), dx> == <v, scatter(dx)>: the scatter is exactly the gather's adjoint.
  std::vector<float> g(fx.values.size(), 0.0f);
  ASSERT_TRUE(onednn_->ScatterAdd(fx.model, fx.bags(), fx.table(), dx.data(), 1.0f, g.data()).ok());
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < dx.size(); ++i) lhs += double(x_dnn[i]) * dx[i];
  for (size_t i = 0; i < g.size(); ++i) rhs += double(fx.values[i]) * g[i];
  EXPECT_NEAR(lhs, rhs, 1e-4 * (std::fabs(lhs) + 1));
}

TEST_F(KernelsTest, ReferenceRejectsBagsThatDoNotFitTheModel) {
  ModelSpec model;
  model.fields = {{"a", 3, Pooling::kSum}, {"b", 5, Pooling::kSum}};
  model.layers = {1};
  const std::vector<int64_t> row_offsets{0, 3, 8};  // row 0 is field a's, row 1 field b's
  const std::vector<float> values(8, 1.0f);
  std::vector<int32_t> offsets{0, 1, 2};
  std::vector<int32_t> ids{0, 1};
  std::vector<float> x(model.input_width());
  const RowTableView table{row_offsets.data(), 2};
  EXPECT_TRUE(reference_.GatherPool(model, {1, 2, offsets.data(), ids.data()}, table, values.data(), x.data()).ok());
  ids = {1, 1};  // a dim-5 row in the dim-3 field
  EXPECT_EQ(reference_.GatherPool(model, {1, 2, offsets.data(), ids.data()}, table, values.data(), x.data()).code(),
            StatusCode::kInvalidArgument);
  ids = {0, 7};  // outside the table
  EXPECT_EQ(reference_.GatherPool(model, {1, 2, offsets.data(), ids.data()}, table, values.data(), x.data()).code(),
            StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace metaps::worker
