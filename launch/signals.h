// StopOnSignals: runs `stop` once SIGTERM or SIGINT arrives, from a watcher thread.
//
// The signals are blocked in the constructing thread (and so in every thread it starts later) and
// taken with sigwait by the watcher, so `stop` may do anything a normal thread may (log, interrupt
// a transport). Construct it in main's thread before starting others. The destructor wakes and
// joins the watcher if no signal came.
#pragma once

#include <signal.h>

#include <atomic>
#include <functional>
#include <thread>

namespace metaps::launch {

class StopOnSignals {
 public:
  explicit StopOnSignals(std::function<void()> stop) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    watcher_ = std::thread([this, stop = std::move(stop)] {
      int sig = 0;
      sigwait(&set_, &sig);
      if (!done_) stop();
    });
  }
  ~StopOnSignals() {
    done_ = true;
    pthread_kill(watcher_.native_handle(), SIGTERM);  // wakes the watcher if nothing came
    watcher_.join();
  }
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;

 private:
  sigset_t set_;
  std::atomic<bool> done_{false};
  std::thread watcher_;
};

}  // namespace metaps::launch
