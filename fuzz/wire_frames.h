// How fuzz_wire (and its seed generator) turn one byte string into the frames of a message.
//
//   byte 0        flags: bit 0 = the server expects job id "job"; bit 1 = it expects token "tok";
//                 bit 2 = frames start 1 byte past an 8-byte boundary (as a ZeroMQ frame may)
//   then frames   each a 2-byte little-endian length and that many bytes (cut short at the end of
//                 the input); at most kMaxFuzzFrames
//
// Each frame gets its own exact-size heap buffer, so AddressSanitizer sees any read past a frame.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"

namespace metaps::fuzz {

constexpr size_t kMaxFuzzFrames = 8;
enum WireFlags : uint8_t { kServerJobId = 1, kServerAuth = 2, kMisaligned = 4 };

inline std::vector<Bytes> SplitFrames(const uint8_t* data, size_t size, uint8_t* flags) {
  std::vector<Bytes> frames;
  *flags = size > 0 ? data[0] : 0;
  size_t pos = size > 0 ? 1 : 0;
  const size_t skew = (*flags & kMisaligned) ? 1 : 0;
  while (pos < size && frames.size() < kMaxFuzzFrames) {
    size_t n = data[pos];
    if (pos + 1 < size) n |= size_t{data[pos + 1]} << 8;
    pos += 2;
    if (pos > size) pos = size;
    if (n > size - pos) n = size - pos;
    std::shared_ptr<uint8_t[]> buf(new uint8_t[n + skew]);
    uint8_t* at = buf.get() + skew;
    if (n) std::memcpy(at, data + pos, n);
    frames.emplace_back(at, n, std::shared_ptr<const void>(buf, buf.get()));
    pos += n;
  }
  return frames;
}

// The inverse, for seeds: flags byte then length-prefixed frames.
inline std::string JoinFrames(uint8_t flags, const std::vector<Bytes>& frames) {
  std::string out(1, static_cast<char>(flags));
  for (const Bytes& f : frames) {
    const size_t n = f.size() > 0xffff ? 0xffff : f.size();
    out.push_back(static_cast<char>(n & 0xff));
    out.push_back(static_cast<char>(n >> 8));
    out.append(reinterpret_cast<const char*>(f.data()), n);
  }
  return out;
}

}  // namespace metaps::fuzz
