#pragma once

// SideThread: one thread that runs one task at a time while its owner does something else, for
// overlapping two independent pieces of one request (a parameter server's push: the log append
// on the side thread while the optimizer runs on the caller's).
//
// Start(task) hands the task over; Wait() returns once it has run. One task in flight at a time;
// Start and Wait are called by one owner thread. The thread exits when the object is destroyed.

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "common/thread_name.h"

namespace metaps {

class SideThread {
 public:
  // `name` (at most 15 characters) is the thread's name in top -H, perf and /proc.
  explicit SideThread(std::string name = "metaps-side") : name_(std::move(name)), thread_([this] { Loop(); }) {}
  ~SideThread() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  SideThread(const SideThread&) = delete;
  SideThread& operator=(const SideThread&) = delete;

  // REQUIRES: no task in flight (every Start is followed by a Wait before the next).
  void Start(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> l(mu_);
      task_ = std::move(task);
      pending_ = true;
    }
    cv_.notify_all();
  }

  // Blocks until the task given to Start has run.
  void Wait() {
    std::unique_lock<std::mutex> l(mu_);
    done_cv_.wait(l, [this] { return !pending_; });
  }

 private:
  void Loop() {
    NameThisThread(name_);
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      cv_.wait(l, [this] { return pending_ || stop_; });
      if (pending_) {
        auto task = std::move(task_);
        l.unlock();
        task();
        l.lock();
        pending_ = false;
        done_cv_.notify_all();
        continue;
      }
      if (stop_) return;
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::function<void()> task_;
  bool pending_ = false;
  bool stop_ = false;
  std::string name_;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace metaps
