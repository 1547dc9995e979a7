// DedupeWindow: the request ids of the pushes a shard has applied, per sender, so that a retried
// push (same sender, same request id) is acknowledged again without being applied twice.
//
// Bounded: the newest `per_sender` ids of each of the `senders` most recently active senders (a
// sender's ids are forgotten oldest first; a sender not heard from for longest goes first).
// ParamStore owns one (guarded by its mutex), adds to it in the same step that makes a push
// durable, and persists it (Encode/Decode) so that it survives a restart (docs/storage.md).
//
// Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "common/status.h"

namespace metaps::ps {

class DedupeWindow {
 public:
  // Default: 4096 senders, 1024 ids each.
  explicit DedupeWindow(size_t senders = 4096, size_t per_sender = 1024);

  bool Seen(std::string_view sender, uint64_t request_id) const;
  // Records an applied push. Adding an id already present only refreshes the sender.
  void Add(std::string_view sender, uint64_t request_id);
  bool empty() const { return senders_.empty(); }
  size_t num_senders() const { return senders_.size(); }

  // Serialized form (little-endian), senders least recently active first, each sender's ids
  // oldest first:
  //   {u32 magic "DDW1", u32 senders} then per sender {u32 name bytes, u32 ids} name u64 ids[]
  std::string Encode() const;
  // Replaces the contents with an encoded window, re-adding it in order (so a window encoded with
  // larger bounds is trimmed to this one's). DataLoss when the bytes are not an encoded window.
  Status Decode(std::string_view bytes);

 private:
  struct Recent {
    std::unordered_set<uint64_t> ids;
    std::deque<uint64_t> order;  // oldest first
    uint64_t last_use = 0;
  };
  size_t max_senders_, per_sender_;
  uint64_t clock_ = 0;
  std::unordered_map<std::string, Recent> senders_;
};

}  // namespace metaps::ps
