#pragma once

// FirstOccurrence: finds duplicate keys within one batch (a pull or push request), for the client
// that deduplicates before sending and the server that sums a push's duplicate gradients.
//
// For each position i of the batch it returns the first position j <= i holding the same key. The
// table is open addressing over 4-byte *positions* into the batch (the key is read back from the
// batch to compare), sized 2-4x the batch: 128 KiB for a 10k-key batch, which stays in the L2 cache.
// A table of key-value entries (16 bytes each, 512 KiB) was fetched from memory on most calls
// where something else streams megabytes through the cache between requests (a client receiving
// 1.3 MB replies, a server serving random rows): 0.07 against 0.04 ms per 10k keys in a
// microbenchmark with the caches polluted between calls, and ~0.1 ms per request in `bench ps`.
//
// Usage: Start(keys), then FindFirstRepeat(); when it finds a repeat, NumberUnique() numbers the
// unique keys. (Visit(i) for i = 0, 1, ... in increasing order is the step both are made of.) One
// batch at a time; not thread-safe (keep one per thread and reuse it: its memory is kept between
// batches).

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "common/keys.h"
#include "common/prefetch.h"

namespace metaps {

class FirstOccurrence {
 public:
  // Starts a batch. `keys` must stay valid and unchanged until the batch is done.
  // REQUIRES: keys.size() < UINT32_MAX.
  void Start(std::span<const Key> keys) {
    keys_ = keys.data();
    size_ = keys.size();
    const size_t cap = std::bit_ceil(std::max<size_t>(16, 2 * keys.size()));
    if (table_.capacity() > 8 * cap) std::vector<uint32_t>().swap(table_);  // after a much bigger batch
    if (table_.size() != cap) table_.resize(cap);
    std::memset(table_.data(), 0xff, cap * sizeof(uint32_t));  // every slot kEmpty
    mask_ = cap - 1;
  }

  // Visits positions in order, from the first, until one repeats an earlier key, and returns that
  // position (not recorded), or the batch size when every key is distinct.
  size_t FindFirstRepeat() {
    for (size_t j = 0; j < std::min(size_, kAhead); ++j) Prefetch(j);
    for (size_t i = 0; i < size_; ++i) {
      if (i + kAhead < size_) Prefetch(i + kAhead);
      if (Visit(i) != i) return i;
    }
    return size_;
  }

  // After FindFirstRepeat() returned `repeat` (< size): numbers the unique keys in the order they
  // first occur, in (*unique_of)[i] for every position i (positions before `repeat` are their
  // own number), and calls each(i, u, first) for every position i >= repeat, where u is its
  // number and `first` whether keys[i] first occurs at i. Returns the number of unique keys.
  template <typename Each>
  size_t NumberUnique(size_t repeat, std::vector<uint32_t>* unique_of, Each&& each) {
    unique_of->resize(size_);
    uint32_t* of = unique_of->data();
    for (size_t j = 0; j < repeat; ++j) of[j] = static_cast<uint32_t>(j);
    size_t unique = repeat;
    for (size_t i = repeat; i < size_; ++i) {
      if (i + kAhead < size_) Prefetch(i + kAhead);
      const uint32_t first = Visit(i);
      const bool fresh = first == i;
      of[i] = fresh ? static_cast<uint32_t>(unique++) : of[first];
      each(i, of[i], fresh);
    }
    return unique;
  }

  // Brings the table line that keys[i] probes first into the cache.
  void Prefetch(size_t i) const { PrefetchLine(&table_[Mix64(keys_[i]) & mask_]); }

  // The first position j <= i with keys[j] == keys[i]. When there is none, i is recorded (and
  // returned), so later positions with this key return i. Calling it again for a position whose
  // key was already recorded returns the same j and changes nothing.
  uint32_t Visit(size_t i) {
    const Key k = keys_[i];
    size_t h = Mix64(k) & mask_;
    while (true) {
      const uint32_t e = table_[h];
      if (e == kEmpty) {
        table_[h] = static_cast<uint32_t>(i);
        return static_cast<uint32_t>(i);
      }
      if (keys_[e] == k) return e;
      h = (h + 1) & mask_;
    }
  }

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;
  // Probes run this many positions behind their prefetches: the table is read at random, and
  // that many misses in flight hide most of their latency.
  static constexpr size_t kAhead = 16;
  const Key* keys_ = nullptr;
  size_t size_ = 0;
  std::vector<uint32_t> table_;
  size_t mask_ = 0;
};

}  // namespace metaps
