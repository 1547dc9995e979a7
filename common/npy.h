// NumPy .npy files of float32: the format numpy.save writes and numpy.load reads.
//
// Only little-endian float32 ('<f4') arrays in C order are handled, which is what embeddings and
// dense parameters are exported as; anything else is refused with an error naming the file rather
// than converted. See https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html.
//
// Thread-safety: the functions share no state.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace metaps {

struct NpyArray {
  std::vector<int64_t> shape;  // empty for a 0-d array (one element)
  std::vector<float> data;     // C order; size() is the product of shape
};

// Writes `data` with shape `shape` as a .npy file: format version 1.0 (2.0 only if the header
// would not fit 1.0's 64 KiB), dtype '<f4', fortran_order False, the header laid out byte for byte as
// numpy.save lays it out (so the data starts at a multiple of 64 bytes). Atomic: written to a
// temporary file in the same directory, synced and renamed over `path`, so a reader sees the old
// file or the whole new one. InvalidArgument when a dimension is negative or the shape's product is
// not data.size(); Internal (with the path and errno text) when the file cannot be written.
Status WriteNpyF32(const std::string& path, std::span<const float> data, const std::vector<int64_t>& shape);

// Reads a .npy file written by NumPy or by WriteNpyF32: format versions 1.0 and 2.0, dtype '<f4',
// C order. Errors name the file: NotFound when it is missing; InvalidArgument when it is not a
// .npy file (bad magic) or holds something else (another version, dtype or fortran order);
// DataLoss when the header cannot be parsed or the data is shorter or longer than the shape says;
// Internal for other I/O errors.
Result<NpyArray> ReadNpyF32(const std::string& path);

}  // namespace metaps
