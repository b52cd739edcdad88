// Two lanes of a split training pass (Model::run_split) run one per thread of a two-thread pool,
// their kernels inline. Their halves of the batch are equal, but their threads are not always: on a
// shared machine one vCPU is sometimes slowed for seconds at a time (one lane of the tiny preset's 4 x
// 256 step measured 18.5 ms against the other's 13.4, run after run), on a hybrid CPU one thread may
// sit on an efficiency core, and the step waits for the slower lane while the other thread idles.
// So the lane that finishes first lends its thread to the other: from then on the other lane's pool
// runs go to both threads, as a whole pass's would.
//
// Bits do not change: no kernel's bits depend on the thread count or on which thread runs a task
// (each task writes its own outputs), as the pool already requires. A run goes to the helper only if
// this thread's last threads() call already counted it, so a kernel that sized per-thread state by
// threads() never sees a thread index past it.
#pragma once
#include <atomic>
#include <cstdint>

#include "owned_range.h"
#include "run_errors.h"
#include "threadpool.h"

namespace sealkit {

class LaneHelp {
 public:
  LaneHelp() = default;
  LaneHelp(const LaneHelp&) = delete;
  LaneHelp& operator=(const LaneHelp&) = delete;

  // Runs fn(task, thread) for task in [0, n) on this thread (thread 0) and the helper (thread 1);
  // returns when every task is done, rethrowing the first exception a task threw. Only the lane
  // still running calls it, and only while serving() holds.
  void run(int64_t n, const ThreadPool::Task& fn);
  // True once the other lane's thread waits to help (it stays so until this lane ends).
  bool serving() const { return serving_.load(std::memory_order_acquire); }

  // Each lane's thread calls this as its pass starts.
  void lane_started();
  // Waits (spinning) until the other lane serves this one, or `seconds` have passed. For tests: a
  // lane that waits so runs its whole pass helped.
  void wait_for_helper(double seconds) const;
  // Each lane's thread calls this at the end of its pass. The first to finish serves the other's
  // runs until the other finishes; the second ends that service. `failed`: this lane is unwinding
  // from an exception, so it does not serve (the other lane then runs on alone).
  void lane_done(bool failed);

 private:
  // The helper's side: runs the posted runs' tasks until the other lane is done.
  void serve();
  // Claims and runs tasks of run `generation` as `thread` (0 the caller, 1 the helper); returns how
  // many it ran.
  int64_t drain(uint32_t generation, int thread);
  void run_task(const ThreadPool::Task& task, int64_t i, int thread);

  struct Job {
    std::atomic<const ThreadPool::Task*> task{nullptr};
    std::atomic<int64_t> n{0};
  };
  static constexpr int64_t kMaxTasks = 2 * OwnedRange::kMaxTasks;

  // Thread t owns range t (owned_range.h) and takes its front; a thread done with its own takes the
  // other's back, as the pool's threads do.
  OwnedRange ranges_[2];
  Job jobs_[2];  // by the generation's parity, as in the pool
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int64_t> finished_{0};
  alignas(64) std::atomic<bool> serving_{false};
  std::atomic<bool> closed_{false};
  std::atomic<int> lanes_started_{0};
  std::atomic<int> lanes_done_{0};
  RunErrors errors_;
};

// While one lives, this thread's lane takes help from `help` (nullptr: none): ThreadPool::threads()
// counts the helper once it serves, and ThreadPool::run gives it a share. Set inside the lane's
// InlineRuns scope; nested runs inside a task (on either thread) stay inline.
class LaneHelpScope {
 public:
  explicit LaneHelpScope(LaneHelp* help);
  ~LaneHelpScope();
  LaneHelpScope(const LaneHelpScope&) = delete;
  LaneHelpScope& operator=(const LaneHelpScope&) = delete;

 private:
  LaneHelp* previous_;
  bool previous_counted_;
};

// For ThreadPool (inside an InlineRuns scope): the threads a kernel on this thread may plan for
// (2 when a helper serves this lane, else 1; remembered for the next run), and whether a run of
// n_tasks goes to the helper (then it runs there and true is returned).
int lane_threads();
bool run_with_lane_help(int64_t n_tasks, const ThreadPool::Task& fn);

// Pool runs of split passes that went to both lanes' threads, since the addon loaded (info()).
uint64_t lane_help_runs();

}  // namespace sealkit
