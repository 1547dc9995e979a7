#include "common/shared_work.h"

#include "common/thread_name.h"

namespace metaps {

SharedWork::SharedWork(size_t helpers, std::string name) : name_(std::move(name)) {
  threads_.reserve(helpers);
  for (size_t w = 1; w <= helpers; ++w) threads_.emplace_back([this, w] { Loop(w); });
}

SharedWork::~SharedWork() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

size_t SharedWork::joins() const {
  std::lock_guard<std::mutex> l(mu_);
  return joins_;
}

void SharedWork::Run(const std::function<void(size_t)>& task) {
  if (threads_.empty()) return task(0);
  {
    std::lock_guard<std::mutex> l(mu_);
    task_ = &task;
    ++generation_;
  }
  work_cv_.notify_all();
  task(0);
  std::unique_lock<std::mutex> l(mu_);
  task_ = nullptr;  // closed: no helper joins from here on
  done_cv_.wait(l, [this] { return active_ == 0; });
}

void SharedWork::Loop(size_t worker) {
  NameThisThread(name_ + "-" + std::to_string(worker));
  std::unique_lock<std::mutex> l(mu_);
  size_t seen = 0;  // the last generation this helper looked at
  while (true) {
    work_cv_.wait(l, [&] { return stop_ || (task_ != nullptr && generation_ != seen); });
    if (stop_) return;
    seen = generation_;
    const std::function<void(size_t)>* task = task_;
    ++active_;
    ++joins_;
    l.unlock();
    (*task)(worker);
    l.lock();
    if (--active_ == 0) done_cv_.notify_all();
  }
}

}  // namespace metaps
