// Initializer: the value a row has before its first update, derived from (seed, key, element).
//
// Deterministic and stateless: the same (seed, key) always gives the same vector, in any process,
// after any restart, so a pull of an unseen key can return it without writing anything. Bits come
// from a counter-based hash (SplitMix64 of seed, key and element pair index); normals use
// Box-Muller in double precision, rounded to float (the double results of glibc's log/sin/cos are
// accurate well below float rounding, so machines with the same build agree bit for bit).
// Changing the derivation changes every unseen row: it is a format change.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/keys.h"
#include "common/status.h"

namespace metaps::ps {

enum class InitKind : uint8_t { kZeros = 0, kUniform = 1, kNormal = 2 };

std::string_view InitKindName(InitKind kind);
Result<InitKind> ParseInitKind(std::string_view name);

struct InitSpec {
  InitKind kind = InitKind::kNormal;
  float scale = 0.01f;  // uniform: U(-scale, scale); normal: N(0, scale^2); zeros: unused
  uint64_t seed = 0;    // combined with the table name's hash, so tables differ
};

// Writes the initial weights of `key` into out[0..dim).
void InitializeRow(const InitSpec& spec, uint64_t table_seed, Key key, float* out, uint32_t dim);

}  // namespace metaps::ps
