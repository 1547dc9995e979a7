// RoundClock: the consistency rules between workers' clocks (rounds).
//
// A worker that finished round r reports clock r+1 and asks to start round r+1. Whether it may:
//   BSP (bulk synchronous):   when every live worker has reported clock >= r+1 (a barrier).
//   SSP (bounded staleness s): when (r+1) - min(live clocks) <= s; s = 0 is BSP.
//   ASP (asynchronous):       at once.
// Dead workers are left out of the minimum; a worker that joins or comes back starts from the
// clock it reports. Pure logic, no I/O; the Scheduler owns one. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace metaps::scheduler {

enum class Consistency { kBsp, kSsp, kAsp };

Result<Consistency> ParseConsistency(const std::string& s);
const char* ConsistencyName(Consistency c);

class RoundClock {
 public:
  RoundClock(Consistency mode, uint32_t staleness, int num_workers);

  // Records that `worker` reached `clock` and wants to run round `clock`. Returns the workers
  // (possibly including this one and others waiting) that may now proceed, each with the clock
  // they waited at.
  std::vector<std::pair<int, uint64_t>> Advance(int worker, uint64_t clock);
  // Marks a worker dead (left out of the minimum) or alive again; returns released waiters.
  std::vector<std::pair<int, uint64_t>> SetAlive(int worker, bool alive);

  // Restores a worker's clock from saved state without making it wait.
  void Restore(int worker, uint64_t clock) {
    if (worker >= 0 && worker < num_workers()) clocks_[worker] = clock;
  }

  uint64_t MinClock() const;  // over live workers
  uint64_t Clock(int worker) const { return clocks_.at(worker); }
  bool Waiting(int worker) const { return waiting_.count(worker) > 0; }
  int num_workers() const { return static_cast<int>(clocks_.size()); }

 private:
  bool MayProceed(uint64_t clock) const;
  std::vector<std::pair<int, uint64_t>> Release();

  Consistency mode_;
  uint32_t staleness_;
  std::vector<uint64_t> clocks_;
  std::vector<bool> alive_;
  std::map<int, uint64_t> waiting_;  // worker -> clock it asked to run
};

}  // namespace metaps::scheduler
