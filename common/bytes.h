// Bytes: an immutable, reference-counted byte range.
//
// This is how payloads move through metaps without copies: a Bytes can own a std::vector, a
// received ZeroMQ message, or a slice of either. Copying a Bytes copies a pointer and bumps a
// reference count; the memory stays alive until the last Bytes referring to it is gone.
// Thread-safety: a Bytes may be read from many threads; the count is atomic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace metaps {

class Bytes {
 public:
  Bytes() = default;
  Bytes(const void* data, size_t size, std::shared_ptr<const void> owner)
      : data_(static_cast<const std::byte*>(data)), size_(size), owner_(std::move(owner)) {}

  // Copies `size` bytes.
  static Bytes Copy(const void* data, size_t size);
  static Bytes CopyString(std::string_view s) { return Copy(s.data(), s.size()); }
  // Takes ownership of a vector without copying its contents.
  template <typename T>
  static Bytes FromVector(std::vector<T> v) {
    auto owner = std::make_shared<std::vector<T>>(std::move(v));
    return Bytes(owner->data(), owner->size() * sizeof(T), owner);
  }

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::string_view AsStringView() const {
    return {reinterpret_cast<const char*>(data_), size_};
  }
  const std::shared_ptr<const void>& owner() const { return owner_; }

  // Number of whole T elements, and whether the bytes are an exact, aligned array of T.
  template <typename T>
  bool IsArrayOf() const {
    return size_ % sizeof(T) == 0 && reinterpret_cast<uintptr_t>(data_) % alignof(T) == 0;
  }
  // REQUIRES: IsArrayOf<T>() (use Aligned<T>() first when the source may be unaligned).
  // The span borrows this Bytes' memory, so As() is refused on a temporary (e.g. on the result of
  // Aligned(), which may be a fresh copy): keep the Bytes in a variable first.
  template <typename T>
  std::span<const T> As() const& {
    return {reinterpret_cast<const T*>(data_), size_ / sizeof(T)};
  }
  template <typename T>
  std::span<const T> As() const&& = delete;
  // Returns *this when suitably aligned for T, else an aligned copy.
  template <typename T>
  Bytes Aligned() const {
    if (reinterpret_cast<uintptr_t>(data_) % alignof(T) == 0) return *this;
    return Copy(data_, size_);
  }

 private:
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> owner_;
};

inline Bytes Bytes::Copy(const void* data, size_t size) {
  // 16-byte aligned storage so that As<uint64_t>/As<float> work on the copy.
  size_t words = (size + 15) / 16;
  auto owner = std::shared_ptr<std::max_align_t[]>(new std::max_align_t[words == 0 ? 1 : words]);
  if (size) std::memcpy(owner.get(), data, size);
  return Bytes(owner.get(), size, std::shared_ptr<const void>(owner, owner.get()));
}

}  // namespace metaps
