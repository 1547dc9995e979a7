// Software prefetches that the compiler keeps.
//
// GCC 12 at -O2/-O3 deletes a loop whose body is only __builtin_prefetch calls (dead-code
// elimination treats the builtin as having no effect). That silently removed the optimizer's
// row prefetch: the Adam pass over 10k scattered rows took 0.46-0.49 ms instead of 0.14 ms
// (docs/performance-log.md, "the optimizer's prefetches were compiled away"). These helpers issue
// the instruction through a volatile asm statement on x86-64, which no pass may delete, and fall
// back to the builtin elsewhere.
// A prefetch never faults, so any address may be passed.
#pragma once

#include <cstddef>
#include <cstdint>

namespace metaps {

// Brings the cache line holding `p` toward the core (all cache levels). The line is fetched the
// same way whether the caller then reads or writes it (PREFETCHW needs a CPU feature the
// generic x86-64 target does not assume; measured no faster for the optimizer's rows).
inline void PrefetchLine(const void* p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p);
#endif
}

// Every cache line of [p, p + bytes).
inline void PrefetchBytes(const void* p, size_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63};
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
  for (uintptr_t a = first; a < end; a += 64) PrefetchLine(reinterpret_cast<const void*>(a));
}

}  // namespace metaps
