// ModelSpec: the shape of the meta-learned recommender the worker trains.
//
// Sparse fields (each a bag of feature keys, pooled by sum or mean into a vector of the field's own
// dim; one-hot is a bag of one) are concatenated in field order and fed to an MLP: linear layers with
// ReLU between them and a linear output of width 1, scored by MSE (ratings) or BCE-with-logits
// (clicks). The MLP's parameters are one flat float vector in the order W0, b0, W1, b1, ... where W_l
// is (in x out) row-major and y = x·W + b; ParamLayout says where each tensor lies.
//
// A ModelSpec is a plain value: copy it freely, share it across threads read-only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace metaps::worker {

enum class Pooling { kSum, kMean };
enum class Loss { kMse, kBce };

Result<Pooling> ParsePooling(std::string_view name);
Result<Loss> ParseLoss(std::string_view name);
std::string_view PoolingName(Pooling p);
std::string_view LossName(Loss l);

struct FieldSpec {
  std::string name;
  int dim = 0;
  Pooling pooling = Pooling::kSum;
};

// Where one tensor of the flat parameter vector lies.
struct TensorSlot {
  int64_t offset = 0;
  int64_t rows = 0;  // in-width for a weight matrix, 1 for a bias
  int64_t cols = 0;  // out-width
  int64_t size() const { return rows * cols; }
};

struct ModelSpec {
  std::vector<FieldSpec> fields;
  // Widths of the linear layers' outputs, input excluded; the last must be 1.
  std::vector<int> layers;
  Loss loss = Loss::kMse;

  // Reads a [model] table:
  //   layers = [64, 64, 1]        # output widths; the input width is the sum of field dims
  //   loss = "mse"                # mse | bce
  //   [[model.fields]]            # one per field, in input order
  //   name = "item"; dim = 32; pooling = "sum"   # sum | mean
  static Result<ModelSpec> FromConfig(const Config& model);

  // InvalidArgument when a width or dim is not positive, there are no fields or layers, or the
  // output width is not 1.
  Status Validate() const;

  int num_fields() const { return static_cast<int>(fields.size()); }
  int num_layers() const { return static_cast<int>(layers.size()); }
  int input_width() const;
  // Offset of field f's slice inside an input row.
  int field_offset(int f) const;
  // Widths with the input first: {input_width, layers...}.
  std::vector<int> widths() const;
  // Tensors in W0, b0, W1, b1, ... order; size 2 * num_layers().
  std::vector<TensorSlot> param_layout() const;
  int64_t num_params() const;
};

}  // namespace metaps::worker
