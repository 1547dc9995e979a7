// StopOnSignals: runs `stop` once SIGTERM or SIGINT arrives, from a watcher thread.
//
// The signals are blocked in the constructing thread (and so in every thread it starts later) and
// taken with sigwait by the watcher, so `stop` may do anything a normal thread may (log, interrupt
// a transport). Construct it in main's thread before starting any other thread (a thread started
// earlier would not block the signals and could take one with its default action: exit, no
// clean-up), then Arm it once the object to stop exists. The destructor wakes and
// joins the watcher if no signal came.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <functional>
#include <mutex>
#include <thread>

namespace metaps::launch {

class StopOnSignals {
 public:
  // Blocks the signals now; `stop` (or the one given to Arm later) runs when one arrives.
  explicit StopOnSignals(std::function<void()> stop = {}) : stop_(std::move(stop)) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    watcher_ = std::thread([this] {
      int sig = 0;
      sigwait(&set_, &sig);
      std::lock_guard<std::mutex> lock(mu_);
      if (done_) return;
      fired_ = true;
      if (stop_) stop_();
    });
  }
  // Sets what a signal does, for objects made after the signals had to be blocked (construct
  // this first, before any thread exists, so none of them can take the signal with its default
  // action). A signal that came before runs `stop` at once.
  void Arm(std::function<void()> stop) {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = std::move(stop);
    if (fired_ && stop_) stop_();
  }
  // Forgets the action (its target is about to go away); a later signal does nothing.
  void Disarm() { Arm({}); }
  bool fired() {
    std::lock_guard<std::mutex> lock(mu_);
    return fired_;
  }
  ~StopOnSignals() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    pthread_kill(watcher_.native_handle(), SIGTERM);  // wakes the watcher if nothing came
    watcher_.join();
  }
  // Disarms when it goes out of scope: declare it right after the object `stop` refers to.
  struct ArmedScope {
    StopOnSignals& signals;
    ~ArmedScope() { signals.Disarm(); }
  };
  [[nodiscard]] ArmedScope ArmFor(std::function<void()> stop) {
    Arm(std::move(stop));
    return ArmedScope{*this};
  }
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;

 private:
  sigset_t set_;
  std::mutex mu_;
  bool done_ = false;   // GUARDED_BY(mu_)
  bool fired_ = false;  // GUARDED_BY(mu_)
  std::function<void()> stop_;  // GUARDED_BY(mu_)
  std::thread watcher_;
};

// `--stop-on-stdin-eof`: a process started by `metaps launch` over ssh or srun reads EOF on its
// stdin once the launcher lets go of it (it stops the job, or it died, or its connection did);
// this turns that EOF into a SIGTERM to this process, which then stops as on any SIGTERM. Call it
// after StopOnSignals exists, so that the reader thread blocks the signal too.
inline void StopOnStdinEof() {
  std::thread([] {
    char buf[256];
    while (true) {
      ssize_t n = ::read(0, buf, sizeof(buf));
      if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    ::kill(::getpid(), SIGTERM);
  }).detach();
}
inline constexpr const char* kStopOnStdinEofHelp =
    "Stop (as on SIGTERM) when stdin reaches its end: for processes started by `metaps launch`";

}  // namespace metaps::launch
