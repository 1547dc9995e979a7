// Random identifiers: 16 hex digits (64 bits from std::random_device), for names that must differ
// across processes and runs (a client's incarnation, a snapshot's id, a lineage segment).
#pragma once

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>

namespace metaps {

inline std::string RandomHexId() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(v));
  return hex;
}

}  // namespace metaps
