// Each optimizer against three steps worked out by hand (the arithmetic is in the comments; the
// expected numbers are not produced by the code under test).
#include "ps/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace metaps::ps {
namespace {

struct OptRun {
  std::unique_ptr<Optimizer> opt;
  std::vector<float> w, state;
};

OptRun Make(const OptimizerSpec& spec, std::vector<float> w0) {
  auto opt = Optimizer::Create(spec);
  EXPECT_TRUE(opt.ok()) << opt.status();
  OptRun r{std::move(opt).value(), std::move(w0), {}};
  r.state.resize(r.opt->StateFloats(static_cast<uint32_t>(r.w.size())));
  r.opt->InitState(r.state.data(), static_cast<uint32_t>(r.w.size()));
  return r;
}

void Step(OptRun& r, std::vector<float> g, uint64_t t) {
  r.opt->Apply(r.w.data(), r.state.data(), g.data(), static_cast<uint32_t>(r.w.size()), t);
}

constexpr float kTol = 1e-6f;

TEST(OptimizerTest, SgdThreeStepsByHand) {
  OptimizerSpec s = DefaultOptimizerSpec(OptimizerKind::kSgd);
  s.lr = 0.5f;
  OptRun r = Make(s, {1.0f, -2.0f});
  EXPECT_EQ(r.state.size(), 0u);
  // w -= 0.5 * g
  Step(r, {0.5f, 1.0f}, 1);  // [1 - 0.25, -2 - 0.5] = [0.75, -2.5]
  EXPECT_NEAR(r.w[0], 0.75f, kTol);
  EXPECT_NEAR(r.w[1], -2.5f, kTol);
  Step(r, {-1.0f, 0.25f}, 2);  // [0.75 + 0.5, -2.5 - 0.125] = [1.25, -2.625]
  EXPECT_NEAR(r.w[0], 1.25f, kTol);
  EXPECT_NEAR(r.w[1], -2.625f, kTol);
  Step(r, {2.0f, -4.0f}, 3);  // [1.25 - 1, -2.625 + 2] = [0.25, -0.625]
  EXPECT_NEAR(r.w[0], 0.25f, kTol);
  EXPECT_NEAR(r.w[1], -0.625f, kTol);
}

TEST(OptimizerTest, AdagradThreeStepsByHand) {
  OptimizerSpec s = DefaultOptimizerSpec(OptimizerKind::kAdagrad);
  s.lr = 0.5f;
  s.initial_accumulator = 9.0f;
  s.eps = 0.0f;
  OptRun r = Make(s, {1.0f, 2.0f});
  ASSERT_EQ(r.state.size(), 2u);
  EXPECT_EQ(r.state[0], 9.0f);
  // n += g^2; w -= 0.5 * g / sqrt(n)
  // step 1: g = [4, 0]: n = [25, 9]; w0 = 1 - 0.5*4/5 = 0.6; w1 = 2 - 0 = 2
  Step(r, {4.0f, 0.0f}, 1);
  EXPECT_NEAR(r.w[0], 0.6f, kTol);
  EXPECT_NEAR(r.w[1], 2.0f, kTol);
  // step 2: g = [12, -4]: n = [169, 25]; w0 = 0.6 - 0.5*12/13 = 1.8/13 = 0.138461538;
  //         w1 = 2 - 0.5*(-4)/5 = 2.4
  Step(r, {12.0f, -4.0f}, 2);
  EXPECT_NEAR(r.w[0], 0.138461538f, kTol);
  EXPECT_NEAR(r.w[1], 2.4f, kTol);
  // step 3: g = [-84, 0]: n = [169 + 7056 = 7225, 25]; w0 = 1.8/13 + 0.5*84/85 = 0.138461538 +
  //         0.494117647 = 0.632579186; w1 = 2.4
  Step(r, {-84.0f, 0.0f}, 3);
  EXPECT_NEAR(r.w[0], 0.632579186f, kTol);
  EXPECT_NEAR(r.w[1], 2.4f, kTol);
  EXPECT_NEAR(r.state[0], 7225.0f, 1e-3f);
  EXPECT_NEAR(r.state[1], 25.0f, kTol);
}

TEST(OptimizerTest, AdamThreeStepsWithBiasCorrectionByHand) {
  OptimizerSpec s = DefaultOptimizerSpec(OptimizerKind::kAdam);
  s.lr = 0.1f;
  s.beta1 = 0.5f;
  s.beta2 = 0.75f;
  s.eps = 1e-8f;  // negligible next to sqrt(vhat) >= 1 below
  OptRun r = Make(s, {1.0f, 0.0f});
  ASSERT_EQ(r.state.size(), 4u);
  // m = 0.5 m + 0.5 g; v = 0.75 v + 0.25 g^2; w -= 0.1 * (m / (1 - 0.5^t)) / sqrt(v / (1 - 0.75^t))
  // coordinate 1 has a constant gradient 1: mhat = vhat = 1 at every t, so it moves by -lr each step.
  // t=1, g0 = 2: m = 1, v = 1; mhat = 1/0.5 = 2; vhat = 1/0.25 = 4; w0 = 1 - 0.1*2/2 = 0.9
  Step(r, {2.0f, 1.0f}, 1);
  EXPECT_NEAR(r.w[0], 0.9f, kTol);
  EXPECT_NEAR(r.w[1], -0.1f, kTol);
  // t=2, g0 = -2: m = 0.5 - 1 = -0.5; v = 0.75 + 1 = 1.75; mhat = -0.5/0.75 = -2/3;
  //      vhat = 1.75/0.4375 = 4; w0 = 0.9 + 0.1*(2/3)/2 = 0.933333333
  Step(r, {-2.0f, 1.0f}, 2);
  EXPECT_NEAR(r.w[0], 0.933333333f, kTol);
  EXPECT_NEAR(r.w[1], -0.2f, kTol);
  // t=3, g0 = 4: m = -0.25 + 2 = 1.75; v = 1.3125 + 4 = 5.3125 = 85/16; mhat = 1.75/0.875 = 2;
  //      vhat = (85/16)/(37/64) = 340/37 = 9.189189; sqrt = 3.0313675;
  //      w0 = 0.933333333 - 0.1*2/3.0313675 = 0.933333333 - 0.065976823 = 0.867356510
  Step(r, {4.0f, 1.0f}, 3);
  EXPECT_NEAR(r.w[0], 0.867356510f, kTol);
  EXPECT_NEAR(r.w[1], -0.3f, kTol);
  EXPECT_NEAR(r.state[0], 1.75f, kTol);    // m0
  EXPECT_NEAR(r.state[2], 5.3125f, kTol);  // v0
}

TEST(OptimizerTest, AdamBiasCorrectionUsesTheGivenCount) {
  // A row whose first update is applied with t = 1 moves by lr regardless of history elsewhere.
  OptimizerSpec s = DefaultOptimizerSpec(OptimizerKind::kAdam);
  s.lr = 0.1f;
  OptRun r = Make(s, {0.0f});
  Step(r, {5.0f}, 1);  // mhat = g, vhat = g^2: w = -0.1 * 5/5 = -0.1
  EXPECT_NEAR(r.w[0], -0.1f, 1e-6f);
}

// Adam tabulates its bias corrections by update count; a row's step must not depend on whether its
// count is in the table, past the point where the corrections are exactly 1, or beyond the table
// (betas close to 1): each is checked against the rule evaluated here, one rounded operation at a
// time (volatile: no contraction, no extra precision).
TEST(OptimizerTest, AdamStepMatchesTheRuleAtAnyUpdateCount) {
  for (float beta2 : {0.999f, 0.99999f}) {
    OptimizerSpec s = DefaultOptimizerSpec(OptimizerKind::kAdam);
    s.beta2 = beta2;
    for (uint64_t t : {uint64_t{1}, uint64_t{2}, uint64_t{4095}, uint64_t{4096}, uint64_t{10000}, uint64_t{16000},
                       uint64_t{17000}, uint64_t{100000}, uint64_t{262143}, uint64_t{262144}, uint64_t{300000},
                       uint64_t{3000000}, uint64_t{1} << 40}) {
      const float g = 0.75f, w0 = 0.25f;
      OptRun r = Make(s, {w0});
      Step(r, {g}, t);
      const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(double{s.beta1}, static_cast<double>(t))));
      const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(double{s.beta2}, static_cast<double>(t))));
      volatile float m = (1.0f - s.beta1) * g;
      volatile float bg = (1.0f - s.beta2) * g;
      volatile float v = bg * g;
      volatile float mc = m * c1;
      volatile float num = s.lr * mc;
      volatile float vc = v * c2;
      volatile float den = std::sqrt(static_cast<float>(vc)) + s.eps;
      volatile float step = num / den;
      const float want = w0 - step;
      EXPECT_EQ(r.w[0], want) << "beta2 " << beta2 << " t " << t;
      EXPECT_EQ(r.state[0], static_cast<float>(m)) << "t " << t;
      EXPECT_EQ(r.state[1], static_cast<float>(v)) << "t " << t;
    }
  }
}

TEST(OptimizerTest, FtrlProximalThreeStepsByHand) {
  OptimizerSpec s = DefaultOptimizerSpec(OptimizerKind::kFtrl);
  s.lr = 1.0f;  // alpha
  s.beta = 1.0f;
  s.l1 = 0.5f;
  s.l2 = 0.25f;  // denominator gets 2*l2 = 0.5
  s.initial_accumulator = 0.0f;
  OptRun r = Make(s, {0.0f, 1.0f});
  ASSERT_EQ(r.state.size(), 4u);  // z[2], n[2]
  // n' = n + g^2; sigma = (sqrt(n') - sqrt(n)) / alpha; z += g - sigma*w; n = n';
  // w = |z| <= 0.5 ? 0 : -(z - sign(z)*0.5) / ((1 + sqrt(n)) / 1 + 0.5)
  // coordinate 0 (w0 = 0):
  //   t1 g=3:  n=9,   sigma=3, z = 3 - 0 = 3;            w = -(2.5)/(4 + 0.5) = -5/9 = -0.555555556
  //   t2 g=4:  n=25,  sigma=2, z = 3 + 4 + 2*5/9 = 73/9; w = -(73/9 - 1/2)/(6.5) = -137/117 = -1.170940171
  //   t3 g=12: n=169, sigma=8, z = 73/9 + 12 + 8*137/117 = 3449/117 = 29.478632479;
  //            w = -(3449/117 - 1/2)/14.5 = -6781/3393 = -1.998526378
  // coordinate 1 (w0 = 1, the initializer's value):
  //   t1 g=-1: n=1, sigma=1, z = -1 - 1*1 = -2;  w = -(-2 + 0.5)/(2 + 0.5) = 0.6
  //   t2 g=0:  n=1, sigma=0, z = -2;             w = 0.6
  //   t3 g=1:  n=2, sigma=sqrt2 - 1 = 0.414213562, z = -2 + 1 - 0.414213562*0.6 = -1.248528137;
  //            w = -(-1.248528137 + 0.5)/(1 + 1.414213562 + 0.5) = 0.748528137/2.914213562 = 0.256854249
  Step(r, {3.0f, -1.0f}, 1);
  EXPECT_NEAR(r.w[0], -0.555555556f, kTol);
  EXPECT_NEAR(r.w[1], 0.6f, kTol);
  Step(r, {4.0f, 0.0f}, 2);
  EXPECT_NEAR(r.w[0], -1.170940171f, kTol);
  EXPECT_NEAR(r.w[1], 0.6f, kTol);
  Step(r, {12.0f, 1.0f}, 3);
  EXPECT_NEAR(r.w[0], -1.998526378f, 2e-6f);
  EXPECT_NEAR(r.w[1], 0.256854249f, kTol);
  EXPECT_NEAR(r.state[0], 29.478632479f, 1e-4f);  // z0
  EXPECT_NEAR(r.state[2], 169.0f, 1e-4f);         // n0
}

TEST(OptimizerTest, FtrlL1KeepsSmallWeightsAtZero) {
  OptimizerSpec s = DefaultOptimizerSpec(OptimizerKind::kFtrl);
  s.lr = 1.0f;
  s.l1 = 0.5f;
  OptRun r = Make(s, {0.0f});
  // g=0.3: n=0.09, sigma=0.3, z=0.3 (|z| <= l1) -> 0; g=-0.4: n=0.25, z=-0.1 -> 0.
  Step(r, {0.3f}, 1);
  EXPECT_EQ(r.w[0], 0.0f);
  Step(r, {-0.4f}, 2);
  EXPECT_EQ(r.w[0], 0.0f);
}

// The batch entry point (vectorised per CPU) must give bitwise the rows that Apply gives one at a
// time: crash recovery compares replayed rows with live ones. Dim 37 exercises the vector loops'
// remainders; counts past Adam's precomputed table its fallback.
TEST(OptimizerTest, ApplyBatchMatchesApplyBitwise) {
  constexpr uint32_t kDim = 37;
  constexpr size_t kRows = 300;
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad, OptimizerKind::kAdam, OptimizerKind::kFtrl}) {
    auto opt = Optimizer::Create(DefaultOptimizerSpec(kind));
    ASSERT_TRUE(opt.ok());
    const Optimizer& o = **opt;
    const uint32_t sf = o.StateFloats(kDim);
    std::vector<float> w1(kRows * kDim), st1(kRows * sf), g(kRows * kDim);
    uint32_t x = 12345;
    auto next = [&] {
      x = x * 1664525u + 1013904223u;
      return static_cast<float>(static_cast<int32_t>(x >> 8) - (1 << 23)) / (1 << 23);
    };
    for (auto& v : w1) v = next();
    for (size_t r = 0; r < kRows; ++r) o.InitState(st1.data() + r * sf, kDim);
    std::vector<float> w2 = w1, st2 = st1;
    for (int round = 0; round < 3; ++round) {
      for (auto& v : g) v = next();
      std::vector<RowUpdate> batch;
      for (size_t r = 0; r < kRows; ++r) {
        const uint64_t t = 1 + r * 17 + round + (r % 5 == 0 ? 5000 : 0);
        o.Apply(w1.data() + r * kDim, st1.data() + r * sf, g.data() + r * kDim, kDim, t);
        batch.push_back({w2.data() + r * kDim, st2.data() + r * sf, g.data() + r * kDim, t});
      }
      o.ApplyBatch(batch.data(), batch.size(), kDim);
    }
    EXPECT_EQ(0, std::memcmp(w1.data(), w2.data(), w1.size() * 4)) << OptimizerKindName(kind);
    EXPECT_EQ(0, std::memcmp(st1.data(), st2.data(), st1.size() * 4)) << OptimizerKindName(kind);
  }
}

// FTRL with lr_power -0.5 runs in a vector kernel. It must give bitwise what the rule gives
// evaluated one rounded float operation at a time, as written out below, for weights that the l1
// test zeroes and weights it keeps (replay and every CPU's kernel clone must agree).
TEST(OptimizerTest, FtrlBatchMatchesTheRuleBitwise) {
  constexpr uint32_t kDim = 37;
  constexpr size_t kRows = 200;
  struct Case { float alpha, beta, l1, l2, n0; };
  for (const Case c : {Case{0.05f, 1.0f, 0.0f, 0.0f, 0.0f}, Case{0.1f, 0.5f, 0.05f, 0.1f, 0.1f},
                       Case{1.0f, 1.0f, 0.3f, 0.0f, 0.0f}}) {
    OptimizerSpec spec = DefaultOptimizerSpec(OptimizerKind::kFtrl);
    spec.lr = c.alpha;
    spec.beta = c.beta;
    spec.l1 = c.l1;
    spec.l2 = c.l2;
    spec.initial_accumulator = c.n0;
    auto opt = Optimizer::Create(spec);
    ASSERT_TRUE(opt.ok()) << opt.status();
    const Optimizer& o = **opt;
    std::vector<float> w(kRows * kDim), st(kRows * 2 * kDim), g(kRows * kDim);
    uint32_t x = 777;
    auto next = [&] {
      x = x * 1664525u + 1013904223u;
      return static_cast<float>(static_cast<int32_t>(x >> 8) - (1 << 23)) / (1 << 23);
    };
    for (auto& v : w) v = next();
    for (size_t r = 0; r < kRows; ++r) o.InitState(st.data() + r * 2 * kDim, kDim);
    std::vector<float> ref_w = w, ref_st = st;
    size_t zeroed = 0, kept = 0;
    for (int round = 0; round < 3; ++round) {
      for (auto& v : g) v = next();
      std::vector<RowUpdate> batch;
      for (size_t r = 0; r < kRows; ++r) {
        batch.push_back({w.data() + r * kDim, st.data() + r * 2 * kDim, g.data() + r * kDim, uint64_t(round + 1)});
        for (uint32_t i = 0; i < kDim; ++i) {
          float& wi = ref_w[r * kDim + i];
          float& z = ref_st[r * 2 * kDim + i];
          float& n = ref_st[r * 2 * kDim + kDim + i];
          const float gi = g[r * kDim + i];
          const float gg = gi * gi;
          const float n_new = n + gg;
          const float p_new = std::sqrt(n_new);
          const float p_old = std::sqrt(n);
          const float sigma = (p_new - p_old) / c.alpha;
          const float sw = sigma * wi;
          z = z + (gi - sw);
          n = n_new;
          if (std::fabs(z) <= c.l1) {
            wi = 0.0f;
            ++zeroed;
          } else {
            const float sign = z < 0.0f ? -1.0f : 1.0f;
            const float num = z - sign * c.l1;
            const float den = (c.beta + p_new) / c.alpha + 2.0f * c.l2;
            wi = -num / den;
            ++kept;
          }
        }
      }
      o.ApplyBatch(batch.data(), batch.size(), kDim);
    }
    EXPECT_EQ(0, std::memcmp(w.data(), ref_w.data(), w.size() * 4)) << "l1 " << c.l1;
    EXPECT_EQ(0, std::memcmp(st.data(), ref_st.data(), st.size() * 4)) << "l1 " << c.l1;
    EXPECT_GT(kept, 0u);
    if (c.l1 > 0.0f) {
      EXPECT_GT(zeroed, 0u) << "the l1 branch must be exercised";
    }
  }
}

TEST(OptimizerTest, RejectsBadHyperparameters) {
  OptimizerSpec s = DefaultOptimizerSpec(OptimizerKind::kAdam);
  s.beta1 = 1.0f;
  EXPECT_EQ(Optimizer::Create(s).status().code(), StatusCode::kInvalidArgument);
  s = DefaultOptimizerSpec(OptimizerKind::kSgd);
  s.lr = 0.0f;
  EXPECT_EQ(Optimizer::Create(s).status().code(), StatusCode::kInvalidArgument);
  s = DefaultOptimizerSpec(OptimizerKind::kFtrl);
  s.l1 = -1.0f;
  EXPECT_EQ(Optimizer::Create(s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseOptimizerKind("adamw").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace metaps::ps
