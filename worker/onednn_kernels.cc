#include "worker/onednn_kernels.h"

#include <cstring>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include "worker/internal/vectorize.h"

namespace metaps::worker {
namespace {

using dnnl::memory;
using Dims = memory::dims;

Status FromDnnl(const dnnl::error& e, const char* what) {
  const std::string message = std::string(what) + ": oneDNN: " + e.what();
  if (e.status == dnnl_invalid_arguments || e.status == dnnl_unimplemented) return InvalidArgument(message);
  if (e.status == dnnl_out_of_memory) return ResourceExhausted(message);
  return Internal(message);
}

struct SpecHash {
  size_t operator()(const MatmulSpec& s) const {
    size_t h = std::hash<int64_t>()(s.batch);
    auto mix = [&h](uint64_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
    mix(s.m);
    mix(s.k);
    mix(s.n);
    mix((s.trans_a ? 1 : 0) | (s.trans_b ? 2 : 0) | (s.broadcast_b ? 4 : 0) | (s.accumulate ? 8 : 0) |
        (s.bias ? 16 : 0) | (s.relu ? 32 : 0));
    uint32_t bits;
    std::memcpy(&bits, &s.alpha, sizeof bits);
    mix(bits);
    return h;
  }
};

// A ready-to-run product: the primitive plus memory objects whose data handles are swapped per call,
// so executing allocates nothing.
struct MatmulEntry {
  dnnl::matmul primitive;
  memory a, b, c, bias;
  std::unordered_map<int, memory> args;
  std::string impl;
};

struct ReluBwdEntry {
  dnnl::eltwise_backward primitive;
  memory y, dy, dx;
  std::unordered_map<int, memory> args;
};

METAPS_VECTORIZE void SumRowsLoop(int64_t batch, int64_t m, int64_t n, const float* __restrict a, float alpha,
                                  bool accumulate, float* __restrict out) {
  for (int64_t bt = 0; bt < batch; ++bt) {
    float* o = out + bt * n;
    if (!accumulate) std::fill(o, o + n, 0.0f);
    const float* ab = a + bt * m * n;
    for (int64_t i = 0; i < m; ++i) {
      const float* row = ab + i * n;
      for (int64_t j = 0; j < n; ++j) o[j] += alpha * row[j];
    }
  }
}

// dst[0, dim) = sum (or mean) of the bag's rows.
METAPS_VECTORIZE void PoolBag(const float* __restrict values, const int64_t* row_offsets, const int32_t* ids,
                              int32_t count, int dim, bool mean, float* __restrict dst) {
  if (count == 0) {
    std::fill(dst, dst + dim, 0.0f);
    return;
  }
  const float* first = values + row_offsets[ids[0]];
  for (int d = 0; d < dim; ++d) dst[d] = first[d];
  for (int32_t j = 1; j < count; ++j) {
    const float* src = values + row_offsets[ids[j]];
    for (int d = 0; d < dim; ++d) dst[d] += src[d];
  }
  if (mean && count > 1) {
    const float inv = 1.0f / static_cast<float>(count);
    for (int d = 0; d < dim; ++d) dst[d] *= inv;
  }
}

// grad[row] += s * src for every row of the bag.
METAPS_VECTORIZE void ScatterBag(const float* __restrict src, const int64_t* row_offsets, const int32_t* ids,
                                 int32_t count, int dim, float s, float* __restrict grad) {
  for (int32_t j = 0; j < count; ++j) {
    float* g = grad + row_offsets[ids[j]];
    for (int d = 0; d < dim; ++d) g[d] += s * src[d];
  }
}

}  // namespace

struct OneDnnKernels::State {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::unordered_map<MatmulSpec, MatmulEntry, SpecHash> matmuls;
  std::unordered_map<int64_t, ReluBwdEntry> relu_bwd;

  MatmulEntry& GetMatmul(const MatmulSpec& s) {
    auto it = matmuls.find(s);
    if (it != matmuls.end()) return it->second;
    const int64_t bb = s.broadcast_b ? 1 : s.batch;
    // Transposed operands are the same bytes read with swapped strides.
    const memory::desc a_md(Dims{s.batch, s.m, s.k}, memory::data_type::f32,
                            s.trans_a ? Dims{s.m * s.k, 1, s.m} : Dims{s.m * s.k, s.k, 1});
    const memory::desc b_md(Dims{bb, s.k, s.n}, memory::data_type::f32,
                            s.trans_b ? Dims{s.k * s.n, 1, s.k} : Dims{s.k * s.n, s.n, 1});
    const memory::desc c_md(Dims{s.batch, s.m, s.n}, memory::data_type::f32, memory::format_tag::abc);
    const memory::desc bias_md(Dims{bb, 1, s.n}, memory::data_type::f32, memory::format_tag::abc);
    dnnl::primitive_attr attr;
    if (s.alpha != 1.0f) attr.set_output_scales(0, {s.alpha});
    dnnl::post_ops ops;
    if (s.accumulate) ops.append_sum(1.0f);
    // A per-batch bias (B x 1 x n) is not accepted by the optimized matmul as a bias argument, but
    // is as a broadcast binary post-op.
    if (s.bias) ops.append_binary(dnnl::algorithm::binary_add, bias_md);
    if (s.relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, engine);
    MatmulEntry e;
    e.primitive = dnnl::matmul(pd);
    e.impl = pd.impl_info_str();
    e.a = memory(a_md, engine, DNNL_MEMORY_NONE);
    e.b = memory(b_md, engine, DNNL_MEMORY_NONE);
    e.c = memory(c_md, engine, DNNL_MEMORY_NONE);
    e.args = {{DNNL_ARG_SRC, e.a}, {DNNL_ARG_WEIGHTS, e.b}, {DNNL_ARG_DST, e.c}};
    if (s.bias) {
      e.bias = memory(bias_md, engine, DNNL_MEMORY_NONE);
      e.args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(s.accumulate ? 1 : 0) | DNNL_ARG_SRC_1, e.bias);
    }
    return matmuls.emplace(s, std::move(e)).first->second;
  }

  ReluBwdEntry& GetReluBwd(int64_t count) {
    auto it = relu_bwd.find(count);
    if (it != relu_bwd.end()) return it->second;
    const memory::desc md(Dims{count}, memory::data_type::f32, memory::format_tag::a);
    dnnl::eltwise_forward::primitive_desc hint(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training,
                                    dnnl::algorithm::eltwise_relu_use_dst_for_bwd, md, 0.0f, 0.0f),
        engine);
    dnnl::eltwise_backward::primitive_desc pd(
        dnnl::eltwise_backward::desc(dnnl::algorithm::eltwise_relu_use_dst_for_bwd, md, md, 0.0f, 0.0f), engine,
        hint);
    ReluBwdEntry e;
    e.primitive = dnnl::eltwise_backward(pd);
    e.y = memory(md, engine, DNNL_MEMORY_NONE);
    e.dy = memory(md, engine, DNNL_MEMORY_NONE);
    e.dx = memory(md, engine, DNNL_MEMORY_NONE);
    e.args = {{DNNL_ARG_DST, e.y}, {DNNL_ARG_DIFF_DST, e.dy}, {DNNL_ARG_DIFF_SRC, e.dx}};
    return relu_bwd.emplace(count, std::move(e)).first->second;
  }
};

void SetKernelThreads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }

Result<std::unique_ptr<OneDnnKernels>> OneDnnKernels::Create() {
  try {
    return std::unique_ptr<OneDnnKernels>(new OneDnnKernels(std::make_unique<State>()));
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "creating the oneDNN CPU engine");
  }
}

OneDnnKernels::OneDnnKernels(std::unique_ptr<State> state) : state_(std::move(state)) {}
OneDnnKernels::~OneDnnKernels() = default;

Status OneDnnKernels::Matmul(const MatmulSpec& s, const float* a, const float* b, const float* bias, float* c) {
  if (s.batch <= 0 || s.m <= 0 || s.k <= 0 || s.n <= 0) return InvalidArgument("matmul with an empty dimension");
  if (s.bias && bias == nullptr) return InvalidArgument("matmul: bias requested but not given");
  try {
    MatmulEntry& e = state_->GetMatmul(s);
    e.a.set_data_handle(const_cast<float*>(a));
    e.b.set_data_handle(const_cast<float*>(b));
    e.c.set_data_handle(c);
    if (s.bias) e.bias.set_data_handle(const_cast<float*>(bias));
    e.primitive.execute(state_->stream, e.args);
    state_->stream.wait();
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "matmul");
  }
  return Status::Ok();
}

Result<std::string> OneDnnKernels::MatmulImplName(const MatmulSpec& spec) {
  try {
    return state_->GetMatmul(spec).impl;
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "matmul");
  }
}

Status OneDnnKernels::ReluBackward(int64_t count, const float* y, const float* dy, float* dx) {
  if (count <= 0) return Status::Ok();
  try {
    ReluBwdEntry& e = state_->GetReluBwd(count);
    e.y.set_data_handle(const_cast<float*>(y));
    e.dy.set_data_handle(const_cast<float*>(dy));
    e.dx.set_data_handle(dx);
    e.primitive.execute(state_->stream, e.args);
    state_->stream.wait();
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "relu backward");
  }
  return Status::Ok();
}

Status OneDnnKernels::SumRows(int64_t batch, int64_t m, int64_t n, const float* a, float alpha, bool accumulate,
                              float* out) {
  SumRowsLoop(batch, m, n, a, alpha, accumulate, out);
  return Status::Ok();
}

// REQUIRES (as promised by TaskBatch): ids index the table and each row is as wide as its field.
Status OneDnnKernels::GatherPool(const ModelSpec& model, const BagsView& bags, const RowTableView& table,
                                 const float* values, float* x) {
  if (bags.fields != model.num_fields()) return InvalidArgument("gather: bags and model disagree on fields");
  const int width = model.input_width();
  const int nf = bags.fields;
  std::vector<int> offset(nf);
  for (int f = 0; f < nf; ++f) offset[f] = model.field_offset(f);
#pragma omp parallel for schedule(static) if (bags.rows * width > (1 << 16))
  for (int64_t r = 0; r < bags.rows; ++r) {
    for (int f = 0; f < nf; ++f) {
      const int64_t cell = r * nf + f;
      const FieldSpec& field = model.fields[f];
      PoolBag(values, table.row_offsets, bags.ids + bags.offsets[cell], bags.offsets[cell + 1] - bags.offsets[cell],
              field.dim, field.pooling == Pooling::kMean, x + r * width + offset[f]);
    }
  }
  return Status::Ok();
}

Status OneDnnKernels::ScatterAdd(const ModelSpec& model, const BagsView& bags, const RowTableView& table,
                                 const float* dx, float scale, float* grad) {
  if (bags.fields != model.num_fields()) return InvalidArgument("scatter: bags and model disagree on fields");
  const int width = model.input_width();
  const int nf = bags.fields;
  // Sequential: rows shared between tasks would race.
  for (int64_t r = 0; r < bags.rows; ++r) {
    int field_offset = 0;
    for (int f = 0; f < nf; ++f) {
      const FieldSpec& field = model.fields[f];
      const int64_t cell = r * nf + f;
      const int32_t count = bags.offsets[cell + 1] - bags.offsets[cell];
      if (count > 0) {
        const float s = field.pooling == Pooling::kMean ? scale / static_cast<float>(count) : scale;
        ScatterBag(dx + r * width + field_offset, table.row_offsets, bags.ids + bags.offsets[cell], count, field.dim, s,
                   grad);
      }
      field_offset += field.dim;
    }
  }
  return Status::Ok();
}

}  // namespace metaps::worker
