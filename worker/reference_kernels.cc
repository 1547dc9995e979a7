#include "worker/reference_kernels.h"

#include <algorithm>
#include <string>

namespace metaps::worker {
namespace {

Status CheckBags(const ModelSpec& model, const BagsView& bags, const RowTableView& table) {
  if (bags.fields != model.num_fields()) {
    return InvalidArgument("bags have " + std::to_string(bags.fields) + " fields, the model " +
                           std::to_string(model.num_fields()));
  }
  const int64_t n = bags.rows * bags.fields;
  for (int64_t i = 0; i < n; ++i) {
    const int dim = model.fields[i % bags.fields].dim;
    for (int32_t j = bags.offsets[i]; j < bags.offsets[i + 1]; ++j) {
      const int32_t id = bags.ids[j];
      if (id < 0 || id >= table.num_rows) return OutOfRange("bag id " + std::to_string(id) + " outside the row table");
      if (table.row_offsets[id + 1] - table.row_offsets[id] != dim) {
        return InvalidArgument("row " + std::to_string(id) + " is not as wide as its field");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status ReferenceKernels::Matmul(const MatmulSpec& s, const float* a, const float* b, const float* bias, float* c) {
  for (int64_t bt = 0; bt < s.batch; ++bt) {
    const float* ab = a + bt * s.m * s.k;
    const float* bb = b + (s.broadcast_b ? 0 : bt * s.k * s.n);
    const float* biasb = bias ? bias + (s.broadcast_b ? 0 : bt * s.n) : nullptr;
    float* cb = c + bt * s.m * s.n;
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < s.k; ++p) {
          const double av = s.trans_a ? ab[p * s.m + i] : ab[i * s.k + p];
          const double bv = s.trans_b ? bb[j * s.k + p] : bb[p * s.n + j];
          acc += av * bv;
        }
        double v = s.alpha * acc;
        if (s.accumulate) v += cb[i * s.n + j];
        if (s.bias) v += biasb[j];
        if (s.relu) v = std::max(v, 0.0);
        cb[i * s.n + j] = static_cast<float>(v);
      }
    }
  }
  return Status::Ok();
}

Status ReferenceKernels::ReluBackward(int64_t count, const float* y, const float* dy, float* dx) {
  for (int64_t i = 0; i < count; ++i) dx[i] = y[i] > 0 ? dy[i] : 0.0f;
  return Status::Ok();
}

Status ReferenceKernels::SumRows(int64_t batch, int64_t m, int64_t n, const float* a, float alpha, bool accumulate,
                                 float* out) {
  for (int64_t bt = 0; bt < batch; ++bt) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < m; ++i) acc += a[(bt * m + i) * n + j];
      out[bt * n + j] = static_cast<float>(alpha * acc + (accumulate ? out[bt * n + j] : 0.0));
    }
  }
  return Status::Ok();
}

Status ReferenceKernels::GatherPool(const ModelSpec& model, const BagsView& bags, const RowTableView& table,
                                    const float* values, float* x) {
  METAPS_RETURN_IF_ERROR(CheckBags(model, bags, table));
  const int width = model.input_width();
  for (int64_t r = 0; r < bags.rows; ++r) {
    for (int f = 0; f < bags.fields; ++f) {
      const FieldSpec& field = model.fields[f];
      const int64_t cell = r * bags.fields + f;
      const int32_t begin = bags.offsets[cell], end = bags.offsets[cell + 1];
      for (int d = 0; d < field.dim; ++d) {
        double acc = 0;
        for (int32_t j = begin; j < end; ++j) acc += values[table.row_offsets[bags.ids[j]] + d];
        if (field.pooling == Pooling::kMean && end > begin) acc /= (end - begin);
        x[r * width + model.field_offset(f) + d] = static_cast<float>(acc);
      }
    }
  }
  return Status::Ok();
}

Status ReferenceKernels::ScatterAdd(const ModelSpec& model, const BagsView& bags, const RowTableView& table,
                                    const float* dx, float scale, float* grad) {
  METAPS_RETURN_IF_ERROR(CheckBags(model, bags, table));
  const int width = model.input_width();
  for (int64_t r = 0; r < bags.rows; ++r) {
    for (int f = 0; f < bags.fields; ++f) {
      const FieldSpec& field = model.fields[f];
      const int64_t cell = r * bags.fields + f;
      const int32_t begin = bags.offsets[cell], end = bags.offsets[cell + 1];
      if (end == begin) continue;
      const double s = field.pooling == Pooling::kMean ? scale / double(end - begin) : scale;
      for (int32_t j = begin; j < end; ++j) {
        float* g = grad + table.row_offsets[bags.ids[j]];
        for (int d = 0; d < field.dim; ++d) g[d] += static_cast<float>(s * dx[r * width + model.field_offset(f) + d]);
      }
    }
  }
  return Status::Ok();
}

}  // namespace metaps::worker
