#include "worker/data/events.h"

#include <charconv>

namespace metaps::data {

std::string_view KindName(FieldSpec::Kind kind) { return kind == FieldSpec::Kind::kBag ? "bag" : "onehot"; }

std::string_view PoolingName(FieldSpec::Pooling pooling) {
  return pooling == FieldSpec::Pooling::kMean ? "mean" : "sum";
}

std::string_view SideName(FieldSpec::Side side) {
  switch (side) {
    case FieldSpec::Side::kUser:
      return "user";
    case FieldSpec::Side::kItem:
      return "item";
    case FieldSpec::Side::kContext:
      break;
  }
  return "context";
}

uint64_t IdFromString(std::string_view raw) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(raw.data(), raw.data() + raw.size(), v);
  if (!raw.empty() && ec == std::errc() && p == raw.data() + raw.size()) return v;
  return Hash64(raw);
}

Dataset::Dataset(std::vector<FieldSpec> schema) : schema_(std::move(schema)) {}

int Dataset::FieldIndex(std::string_view name) const {
  for (size_t i = 0; i < schema_.size(); ++i) {
    if (schema_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

std::vector<std::vector<Key>> Dataset::FieldBags(size_t event) const {
  std::vector<std::vector<Key>> out(schema_.size());
  for (size_t f = 0; f < schema_.size(); ++f) {
    auto k = keys(event, f);
    out[f].assign(k.begin(), k.end());
  }
  return out;
}

void Dataset::BeginEvent(uint64_t user, uint64_t item, float label, int64_t timestamp) {
  users_.push_back(user);
  items_.push_back(item);
  labels_.push_back(label);
  timestamps_.push_back(timestamp);
}

void Dataset::AbortEvent() {
  // Offsets of the fields already ended belong to the event being dropped.
  const size_t keep = (users_.size() - 1) * schema_.size() + 1;
  offsets_.resize(keep);
  keys_.resize(offsets_.back());
  users_.pop_back();
  items_.pop_back();
  labels_.pop_back();
  timestamps_.pop_back();
}

void Dataset::Reserve(size_t events, size_t keys_per_event) {
  users_.reserve(events);
  items_.reserve(events);
  labels_.reserve(events);
  timestamps_.reserve(events);
  offsets_.reserve(events * schema_.size() + 1);
  keys_.reserve(events * keys_per_event);
}

}  // namespace metaps::data
