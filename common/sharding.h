// Placement of keys on server shards.
//
// Jump consistent hash (Lamping & Veach, 2014): uniform over shards, needs no table, and when the
// number of shards grows from S to S+1 exactly the keys that move go to the new shard, about
// 1/(S+1) of them. Shard ids are 0..S-1; the scheduler's shard map names each shard's address.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/keys.h"

namespace metaps {

int32_t JumpConsistentHash(uint64_t key, int32_t num_shards);

inline int32_t ShardOf(Key key, int32_t num_shards) {
  // Keys are already hashes, but user code may pass small integers: mix so placement stays uniform.
  return JumpConsistentHash(Mix64(key), num_shards);
}

// Addresses of the shards of one membership epoch.
struct ShardMap {
  uint64_t epoch = 0;
  std::vector<std::string> endpoints;  // index = shard id
  int32_t size() const { return static_cast<int32_t>(endpoints.size()); }
};

}  // namespace metaps
