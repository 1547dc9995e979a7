#include "ps/internal/log_checksum.h"

#include <cstddef>
#include <cstring>
#include <new>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace metaps::ps::internal {
namespace {

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A checksum streamed in parts equals XXH3-64 of the whole, seeded with the nonce, whatever the
// split.
TEST(LogChecksumTest, Xxh3StreamsLikeTheOneShotHash) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 2000; ++i) {
    const std::string s = RandomBytes(rng, rng() % 3000);
    const uint64_t seed = rng();
    const size_t a = s.empty() ? 0 : rng() % s.size();
    Xxh3Checksum c(seed);
    c.Update(s.data(), a);
    c.Update(s.data() + a, s.size() - a);
    ASSERT_EQ(c.Finish(), XXH3_64bits_withSeed(s.data(), s.size(), seed)) << "size " << s.size() << " split " << a;
  }
}

// The push log builds a checksum on the stack for every record, with the segment's nonce as the
// seed, so a new one often lies where an earlier one with the same seed lay, its derived secret
// since overwritten by other calls. XXH3's reset keeps the secret when the old seed matches
// unless the state was initialized first: that gave wrong checksums for some records (found
// when a change of stack layout made replays end segments early). Here the memory is made to
// look like that on purpose.
TEST(LogChecksumTest, Xxh3IgnoresWhatTheMemoryHeldBefore) {
  std::mt19937_64 rng(5);
  const std::string data = RandomBytes(rng, 1000);
  const uint64_t seed = 0x1234'5678'9abc'def0ull;
  alignas(Xxh3Checksum) std::byte memory[sizeof(Xxh3Checksum)];
  auto* first = new (memory) Xxh3Checksum(seed);
  first->~Xxh3Checksum();
  // Clobber everything but the seed (and extSecret, NULL for a seeded state): the secret, the
  // accumulators and the buffer now hold other bytes.
  XXH3_state_t probe;
  const size_t seed_at = offsetof(XXH3_state_t, seed), seed_end = seed_at + sizeof(probe.seed);
  const size_t ext_at = offsetof(XXH3_state_t, extSecret), ext_end = ext_at + sizeof(probe.extSecret);
  for (size_t i = 0; i < sizeof(XXH3_state_t); ++i) {
    if ((i >= seed_at && i < seed_end) || (i >= ext_at && i < ext_end)) continue;
    memory[i] = static_cast<std::byte>(0xa5);
  }
  auto* second = new (memory) Xxh3Checksum(seed);
  second->Update(data.data(), data.size());
  EXPECT_EQ(second->Finish(), XXH3_64bits_withSeed(data.data(), data.size(), seed));
  second->~Xxh3Checksum();
}

}  // namespace
}  // namespace metaps::ps::internal
