#pragma once

// SharedWork: a few helper threads that join one request's work while the requesting thread does
// it too (a parameter server's big pull gather or push optimizer pass, split into chunks).
//
// Run(task) runs task(0) on the calling thread and task(w) on each helper w (1..helpers()) that
// is free to start before the calling thread's task(0) has returned; it returns once every run
// that started has returned. A helper that wakes later (its core was busy) does not join, and
// the caller never waits for it: on a machine whose cores are all taken the caller just does the
// work alone instead of waiting for a helper to be scheduled. So the task must share its work
// through its own state, typically an atomic chunk counter, and not count on any helper.
//
// One Run at a time per object (calls from one owner thread); the helpers exit on destruction.

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace metaps {

class SharedWork {
 public:
  // `name`-<w> names helper w (top -H, perf).
  SharedWork(size_t helpers, std::string name);
  ~SharedWork();
  SharedWork(const SharedWork&) = delete;
  SharedWork& operator=(const SharedWork&) = delete;

  size_t helpers() const { return threads_.size(); }
  void Run(const std::function<void(size_t worker)>& task);

  // Helper runs that joined a Run, over the object's life (for tests and profiles).
  size_t joins() const;

 private:
  void Loop(size_t worker);

  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  const std::function<void(size_t)>* task_ = nullptr;  // the open Run's task; null: none open
  size_t generation_ = 0;                              // Runs opened so far
  size_t active_ = 0;                                  // helpers inside the open or closing Run
  size_t joins_ = 0;
  bool stop_ = false;
  std::string name_;
  std::vector<std::thread> threads_;  // last: started after the members they use
};

}  // namespace metaps
