// Dataset: the events a training job reads, held in memory in a compact columnar form.
//
// An event is one (user, item) interaction: a label (a rating or a 0/1 click), a timestamp, and for
// every field of the schema a bag of 64-bit feature keys (`FeatureKey(field name, raw value)`).
// A one-hot field (user id, gender, item id, year...) has exactly one key per event; a bag field
// (genres, tags) has zero or more, pooled by sum or mean. User and item attributes are fields
// like any other; `FieldSpec::side` says which side of the interaction a field describes, so the
// engine can tell the user's own rows (adapted in the inner loop when asked) from the rest.
//
// Storage: per-event columns (user, item, label, timestamp) plus one flat key array addressed by
// per-(event, field) offsets, so MovieLens 1M (1M events, 8 fields, ~10 keys each) costs about
// 165 MB (keys 80, offsets 64, per-event columns 28) and no per-event heap allocation. A Dataset is built
// once by a reader (single thread) and then read-only: const methods may run concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/keys.h"
#include "common/status.h"

namespace metaps::data {

struct FieldSpec {
  enum class Kind : uint8_t { kOneHot, kBag };
  enum class Pooling : uint8_t { kSum, kMean };
  enum class Side : uint8_t { kUser, kItem, kContext };

  std::string name;  // also the namespace of the field's keys: FeatureKey(name, raw value)
  Kind kind = Kind::kOneHot;
  Pooling pooling = Pooling::kSum;  // meaningful for bags; one-hot fields pool one row either way
  Side side = Side::kContext;
  uint32_t dim = 16;  // embedding width of this field's rows
};

std::string_view KindName(FieldSpec::Kind kind);           // "onehot", "bag"
std::string_view PoolingName(FieldSpec::Pooling pooling);  // "sum", "mean"
std::string_view SideName(FieldSpec::Side side);           // "user", "item", "context"

// Malformed input seen while reading. Bad lines are skipped; everything else is kept.
struct BadLineStats {
  uint64_t lines = 0;  // data lines examined, over all files (headers and blank lines excluded)
  uint64_t bad = 0;    // of which malformed and skipped
  // The first few reports, each "file:line: reason" (the rest are counted, and passed to the
  // reader's callback if one is set).
  std::vector<std::string> examples;
};

// The numeric user (or item) id of a raw id string: the value itself when it is a decimal integer
// that fits in 64 bits ("42" -> 42), otherwise Hash64(raw). Split files use the same rule.
uint64_t IdFromString(std::string_view raw);

class Dataset {
 public:
  Dataset() = default;
  explicit Dataset(std::vector<FieldSpec> schema);

  const std::vector<FieldSpec>& schema() const { return schema_; }
  size_t num_fields() const { return schema_.size(); }
  // Index of the field called `name`, or -1.
  int FieldIndex(std::string_view name) const;

  size_t size() const { return users_.size(); }
  bool empty() const { return users_.empty(); }

  uint64_t user(size_t event) const { return users_[event]; }
  uint64_t item(size_t event) const { return items_[event]; }  // 0 when the source has no item column
  float label(size_t event) const { return labels_[event]; }
  int64_t timestamp(size_t event) const { return timestamps_[event]; }
  // The keys of field `field` (schema order) in event `event`. REQUIRES: event < size(), field <
  // num_fields().
  std::span<const Key> keys(size_t event, size_t field) const {
    const size_t at = event * schema_.size() + field;
    return {keys_.data() + offsets_[at], keys_.data() + offsets_[at + 1]};
  }
  // All keys of an event, fields concatenated in schema order.
  std::span<const Key> all_keys(size_t event) const {
    const size_t at = event * schema_.size();
    return {keys_.data() + offsets_[at], keys_.data() + offsets_[at + schema_.size()]};
  }
  // The event's keys as one vector per field (schema order): the nested form some consumers take.
  // Allocates; prefer keys() on hot paths.
  std::vector<std::vector<Key>> FieldBags(size_t event) const;
  const std::vector<float>& labels() const { return labels_; }
  const std::vector<uint64_t>& users() const { return users_; }

  // True when every label is 0 or 1 (clicks, or ratings binarized by `data.binarize_threshold`).
  bool binary_labels() const { return binary_labels_; }
  void set_binary_labels(bool b) { binary_labels_ = b; }

  BadLineStats bad;

  // --- Building (readers) ---
  // Starts an event; then call AddKey for fields in schema order (EndField after each field, in
  // order, num_fields() times). A started event must be completed or dropped with AbortEvent.
  void BeginEvent(uint64_t user, uint64_t item, float label, int64_t timestamp);
  void AddKey(Key key) { keys_.push_back(key); }
  void EndField() { offsets_.push_back(keys_.size()); }
  void AbortEvent();
  void Reserve(size_t events, size_t keys_per_event);

 private:
  std::vector<FieldSpec> schema_;
  std::vector<uint64_t> users_, items_;
  std::vector<float> labels_;
  std::vector<int64_t> timestamps_;
  std::vector<Key> keys_;
  // offsets_[e * F + f] is where field f of event e starts in keys_; one trailing entry.
  std::vector<uint64_t> offsets_ = {0};
  bool binary_labels_ = false;
};

}  // namespace metaps::data
