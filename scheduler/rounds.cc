#include "scheduler/rounds.h"

#include <algorithm>
#include <limits>

namespace metaps::scheduler {

Result<Consistency> ParseConsistency(const std::string& s) {
  if (s == "bsp") return Consistency::kBsp;
  if (s == "ssp") return Consistency::kSsp;
  if (s == "asp") return Consistency::kAsp;
  return InvalidArgument("expected bsp, ssp or asp, got '" + s + "'");
}

const char* ConsistencyName(Consistency c) {
  switch (c) {
    case Consistency::kBsp: return "bsp";
    case Consistency::kSsp: return "ssp";
    case Consistency::kAsp: return "asp";
  }
  return "?";
}

RoundClock::RoundClock(Consistency mode, uint32_t staleness, int num_workers)
    : mode_(mode),
      staleness_(mode == Consistency::kBsp ? 0 : staleness),
      clocks_(num_workers, 0),
      alive_(num_workers, true) {}

uint64_t RoundClock::MinClock() const {
  uint64_t m = std::numeric_limits<uint64_t>::max();
  for (size_t w = 0; w < clocks_.size(); ++w) {
    if (alive_[w]) m = std::min(m, clocks_[w]);
  }
  return m == std::numeric_limits<uint64_t>::max() ? 0 : m;
}

bool RoundClock::MayProceed(uint64_t clock) const {
  if (mode_ == Consistency::kAsp) return true;
  // Round `clock` may start when the slowest live worker is at most `staleness` rounds behind.
  return clock <= MinClock() + staleness_;
}

std::vector<std::pair<int, uint64_t>> RoundClock::Release() {
  std::vector<std::pair<int, uint64_t>> out;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (MayProceed(it->second)) {
      out.emplace_back(it->first, it->second);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<std::pair<int, uint64_t>> RoundClock::Advance(int worker, uint64_t clock) {
  if (worker < 0 || worker >= num_workers()) return {};
  clocks_[worker] = std::max(clocks_[worker], clock);
  alive_[worker] = true;
  waiting_[worker] = clock;
  return Release();
}

std::vector<std::pair<int, uint64_t>> RoundClock::SetAlive(int worker, bool alive) {
  if (worker < 0 || worker >= num_workers()) return {};
  alive_[worker] = alive;
  if (!alive) waiting_.erase(worker);
  return Release();
}

}  // namespace metaps::scheduler
