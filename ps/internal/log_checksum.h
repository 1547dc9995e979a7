// The push log's record checksums (ps/param_store.cc, FileLog), kept apart with the format notes.
//
// Version 2 segments (this build writes them): XXH3-64 (libxxhash; on x86-64 the variant for the
// widest vector unit of the CPU, picked at run time) seeded with the segment's nonce, over the
// record's seq then its payload. 0.05-0.08 ms per 1.36 MB record against 0.17 ms for the
// version 1 checksum below, which segments of version 1 (and older, unkeyed ones) still use.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#include "common/keys.h"

namespace metaps::ps::internal {

// The version 1 checksum, over several byte ranges: four independent multiply-mix lanes over 8-byte
// words (fast: the log checksums every pushed byte), then a final mix. Not cryptographic; it
// detects torn and garbage tails.
class LegacyChecksum {
 public:
  // Streaming: the result depends only on the concatenation of what was passed.
  void Update(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    total_ += size;
    if (held_ > 0) {
      size_t take = std::min(size, size_t{32} - held_);
      std::memcpy(buf_ + held_, p, take);
      held_ += take;
      p += take;
      size -= take;
      if (held_ < 32) return;
      Block(buf_);
      held_ = 0;
    }
    while (size >= 32) {
      Block(p);
      p += 32;
      size -= 32;
    }
    std::memcpy(buf_, p, size);
    held_ = size;
  }
  uint64_t Finish() const {
    uint64_t lanes[4] = {lanes_[0], lanes_[1], lanes_[2], lanes_[3]};
    char last[32] = {};
    std::memcpy(last, buf_, held_);
    uint64_t w[4];
    std::memcpy(w, last, 32);
    uint64_t h = total_;
    for (int l = 0; l < 4; ++l) h = Mix64(h ^ ((lanes[l] ^ w[l]) * kMul));
    return h;
  }

 private:
  static constexpr uint64_t kMul = 0x9fb21c651e98df25ULL;
  void Block(const char* p) {
    uint64_t w[4];
    std::memcpy(w, p, 32);
    for (int l = 0; l < 4; ++l) lanes_[l] = (lanes_[l] ^ w[l]) * kMul + (lanes_[l] >> 29);
  }
  uint64_t lanes_[4] = {1, 2, 3, 4};
  char buf_[32];
  size_t held_ = 0;
  uint64_t total_ = 0;
};

// XXH3-64 over several byte ranges: the result depends only on their concatenation.
class Xxh3Checksum {
 public:
  // XXH3_INITSTATE first: reset_withSeed compares the seed with the state's previous one and
  // keeps the old derived secret when they match, so a state in reused memory (the stack of an
  // earlier checksum with the same nonce, its secret since overwritten) gave wrong checksums.
  explicit Xxh3Checksum(uint64_t seed) {
    XXH3_INITSTATE(&state_);
    XXH3_64bits_reset_withSeed(&state_, seed);
  }
  void Update(const void* data, size_t size) { XXH3_64bits_update(&state_, data, size); }
  uint64_t Finish() const { return XXH3_64bits_digest(&state_); }

 private:
  XXH3_state_t state_;
};

// The checksum of a record of a segment of format `version` (0: the unkeyed format before segment
// headers) holding `seq` and `payload`, as the log writes and checks it.
inline uint64_t RecordChecksum(uint32_t version, uint64_t nonce, uint64_t seq, const void* payload, size_t bytes) {
  if (version >= 2) {
    Xxh3Checksum c(nonce);
    c.Update(&seq, 8);
    c.Update(payload, bytes);
    return c.Finish();
  }
  LegacyChecksum c;
  if (version == 1) c.Update(&nonce, 8);
  c.Update(&seq, 8);
  c.Update(payload, bytes);
  return c.Finish();
}

}  // namespace metaps::ps::internal
