#include "ps/dedupe_window.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace metaps::ps {
namespace {

constexpr uint32_t kWindowMagic = 0x3157'4444;  // "DDW1"

void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), 4); }

}  // namespace

DedupeWindow::DedupeWindow(size_t senders, size_t per_sender)
    : max_senders_(std::max<size_t>(1, senders)), per_sender_(std::max<size_t>(1, per_sender)) {}

bool DedupeWindow::Seen(std::string_view sender, uint64_t request_id) const {
  auto it = senders_.find(std::string(sender));
  return it != senders_.end() && it->second.ids.count(request_id) > 0;
}

void DedupeWindow::Add(std::string_view sender_view, uint64_t request_id) {
  std::string sender(sender_view);
  if (senders_.size() >= max_senders_ && !senders_.count(sender)) {
    auto oldest = senders_.begin();
    for (auto it = senders_.begin(); it != senders_.end(); ++it) {
      if (it->second.last_use < oldest->second.last_use) oldest = it;
    }
    senders_.erase(oldest);
  }
  Recent& r = senders_[std::move(sender)];
  r.last_use = ++clock_;
  if (r.ids.insert(request_id).second) r.order.push_back(request_id);
  while (r.order.size() > per_sender_) {
    r.ids.erase(r.order.front());
    r.order.pop_front();
  }
}

std::string DedupeWindow::Encode() const {
  std::vector<const std::pair<const std::string, Recent>*> by_use;
  by_use.reserve(senders_.size());
  size_t bytes = 8;
  for (const auto& e : senders_) {
    by_use.push_back(&e);
    bytes += 8 + e.first.size() + 8 * e.second.order.size();
  }
  std::sort(by_use.begin(), by_use.end(), [](auto* a, auto* b) { return a->second.last_use < b->second.last_use; });
  std::string out;
  out.reserve(bytes);
  PutU32(&out, kWindowMagic);
  PutU32(&out, static_cast<uint32_t>(by_use.size()));
  for (const auto* e : by_use) {
    PutU32(&out, static_cast<uint32_t>(e->first.size()));
    PutU32(&out, static_cast<uint32_t>(e->second.order.size()));
    out.append(e->first);
    for (uint64_t id : e->second.order) out.append(reinterpret_cast<const char*>(&id), 8);
  }
  return out;
}

Status DedupeWindow::Decode(std::string_view bytes) {
  senders_.clear();
  clock_ = 0;
  auto take32 = [&](uint32_t* v) {
    if (bytes.size() < 4) return false;
    std::memcpy(v, bytes.data(), 4);
    bytes.remove_prefix(4);
    return true;
  };
  uint32_t magic = 0, n = 0;
  if (!take32(&magic) || magic != kWindowMagic || !take32(&n)) {
    return DataLoss("the stored dedupe window is not in a known format");
  }
  for (uint32_t s = 0; s < n; ++s) {
    uint32_t name_bytes = 0, ids = 0;
    if (!take32(&name_bytes) || !take32(&ids) || bytes.size() < name_bytes ||
        (bytes.size() - name_bytes) / 8 < ids) {
      senders_.clear();
      return DataLoss("the stored dedupe window is truncated");
    }
    const std::string_view name = bytes.substr(0, name_bytes);
    bytes.remove_prefix(name_bytes);
    for (uint32_t i = 0; i < ids; ++i) {
      uint64_t id;
      std::memcpy(&id, bytes.data() + 8 * size_t{i}, 8);
      Add(name, id);
    }
    bytes.remove_prefix(8 * size_t{ids});
  }
  if (!bytes.empty()) {
    senders_.clear();
    return DataLoss("the stored dedupe window has trailing bytes");
  }
  return Status::Ok();
}

}  // namespace metaps::ps
