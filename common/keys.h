// Feature keys: 64-bit identifiers of embedding rows.
//
// A key is a hash of (field, raw value); there are no modulo buckets, so two distinct values
// collide only by 64-bit hash accident. The hash is fixed forever (it names rows persisted on
// disk and exported to serving): changing it is a format change.
#pragma once

#include <cstdint>
#include <string_view>

namespace metaps {

using Key = uint64_t;

// SplitMix64 finalizer: a bijection on 64-bit values with good avalanche.
constexpr uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a 64 over bytes, then mixed.
constexpr uint64_t Hash64(std::string_view s, uint64_t seed = 0xcbf29ce484222325ULL) {
  uint64_t h = seed;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return Mix64(h);
}

// The key of `value` in `field`. Distinct fields give independent keys for equal values.
constexpr Key FeatureKey(std::string_view field, std::string_view value) {
  return Hash64(value, Hash64(field) ^ 0x5bd1e9955bd1e995ULL);
}

}  // namespace metaps
