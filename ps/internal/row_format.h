// The on-disk layout of a parameter-server shard's rows and table registry (docs/storage.md),
// shared by the store (ps/param_store.cc) and the snapshot export that reads its checkpoints
// (ps/snapshot.cc). Changing any of it is a format change.
//
// "rows" space: key = big-endian u32 table id, then big-endian u64 feature key (12 bytes, so a
// table's rows are contiguous and in key order); value = DiskRowHeader, then dim weights and
// state_floats optimizer-state floats (little-endian f32).
// "meta" space: "table/<name>" -> TableRecord.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/keys.h"

namespace metaps::ps::internal::row_format {

constexpr uint8_t kRowVersion = 1;
constexpr char kTablePrefix[] = "table/";
constexpr size_t kRowKeyBytes = 12;

// Header of a row value in the "rows" space, followed by dim weights and state_floats state floats.
struct DiskRowHeader {
  uint8_t version;
  uint8_t optimizer;
  uint16_t reserved0;
  uint32_t dim;
  uint32_t state_floats;
  uint32_t reserved1;
  uint64_t update_count;
  uint64_t last_step;
  uint64_t last_seq;  // sequence number of the last push applied to this row
};
static_assert(sizeof(DiskRowHeader) == 40);

// A table's entry in the "meta" space under "table/<name>".
struct TableRecord {
  uint32_t id;
  uint32_t dim;
  uint32_t state_floats;
  uint8_t dense;
  uint8_t optimizer;
  uint16_t reserved;
};
static_assert(sizeof(TableRecord) == 16);

inline void WriteRowKey(char* out, uint32_t table_id, Key key) {
  for (int i = 3; i >= 0; --i) out[3 - i] = static_cast<char>((table_id >> (8 * i)) & 0xff);
  for (int i = 7; i >= 0; --i) out[4 + 7 - i] = static_cast<char>((key >> (8 * i)) & 0xff);
}

// The inverse of WriteRowKey. REQUIRES: `in` holds kRowKeyBytes bytes.
inline void ReadRowKey(const char* in, uint32_t* table_id, Key* key) {
  uint32_t t = 0;
  Key k = 0;
  for (int i = 0; i < 4; ++i) t = (t << 8) | static_cast<uint8_t>(in[i]);
  for (int i = 4; i < 12; ++i) k = (k << 8) | static_cast<uint8_t>(in[i]);
  *table_id = t;
  *key = k;
}

}  // namespace metaps::ps::internal::row_format
