// The lineage of a shard's parameters: which history of pushes its state belongs to, so that a
// delta snapshot is only ever written and served on top of a state it really descends from.
//
// Push sequence numbers alone cannot tell: a shard restored from an older checkpoint (a resumed
// job rolled back, or a new job warm-started from another run) numbers its next pushes from the
// checkpoint's sequence number on, so the same number can name different pushes in two
// histories. Every ParamStore::Open therefore starts a new segment: a random id and the sequence
// number it starts after. The segments are stored with the shard's data, so a checkpoint carries
// the segments of the history that produced it and a store restored from it extends them.
//
// A state (L, s) -- lineage L, pushes applied up to s -- descends from (B, b) when s >= b, B is a
// prefix of L, and the segment of L that follows B's last (if any) starts at or after b: the
// history went on from the base's state instead of from a point before it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace metaps::ps {

struct LineageSegment {
  std::string id;         // 16 hex digits, random
  uint64_t from_seq = 0;  // the segment's pushes have sequence numbers above this
  bool operator==(const LineageSegment&) const = default;
};
using Lineage = std::vector<LineageSegment>;

// A fresh random segment id.
std::string NewLineageId();

// [{"id": "...", "from_seq": N}, ...]
nlohmann::json LineageToJson(const Lineage& lineage);
// `where` names the value in errors (a file and key).
Result<Lineage> LineageFromJson(const nlohmann::json& j, const std::string& where);

// OK when (later, later_seq) descends from (base, base_seq); otherwise FailedPrecondition saying
// why (an empty lineage on either side cannot be checked and is refused too).
Status CheckDescends(const Lineage& base, uint64_t base_seq, const Lineage& later, uint64_t later_seq);

}  // namespace metaps::ps
