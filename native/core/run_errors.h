// The first exception a run's tasks threw, for the thread pool (threadpool.h) and a split pass's
// lane help (lane_help.h): a task that throws stops the run's unstarted tasks, and the run's caller
// rethrows it once every task has finished.
#pragma once
#include <atomic>
#include <exception>
#include <mutex>
#include <utility>

namespace sealkit {

class RunErrors {
 public:
  // Before a run's tasks are published (no task of an earlier run is still running).
  void reset() {
    failed_.store(false, std::memory_order_relaxed);
    error_ = nullptr;
  }
  // Calls task() unless a task of this run has thrown; records the first exception.
  template <typename Task>
  void run(Task&& task) {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      std::forward<Task>(task)();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  // After every task of the run has finished: rethrows its first exception, if one was thrown.
  void rethrow() {
    std::exception_ptr e;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      std::swap(e, error_);
    }
    if (e) std::rethrow_exception(e);
  }

 private:
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
  std::mutex mutex_;
};

}  // namespace sealkit
