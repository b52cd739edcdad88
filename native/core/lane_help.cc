#include "lane_help.h"

#include <chrono>

namespace sealkit {

namespace {

thread_local LaneHelp* tl_help = nullptr;
// Whether this thread's last lane_threads() counted the helper (run_with_lane_help's condition).
thread_local bool tl_help_counted = false;
std::atomic<uint64_t> g_helped_runs{0};

}  // namespace

LaneHelpScope::LaneHelpScope(LaneHelp* help) : previous_(tl_help), previous_counted_(tl_help_counted) {
  tl_help = help;
  tl_help_counted = false;
}

LaneHelpScope::~LaneHelpScope() {
  tl_help = previous_;
  tl_help_counted = previous_counted_;
}

int lane_threads() {
  tl_help_counted = tl_help != nullptr && tl_help->serving();
  return tl_help_counted ? 2 : 1;
}

bool run_with_lane_help(int64_t n_tasks, const ThreadPool::Task& fn) {
  if (n_tasks < 2 || !tl_help_counted || tl_help == nullptr) return false;
  g_helped_runs.fetch_add(1, std::memory_order_relaxed);
  tl_help->run(n_tasks, fn);
  return true;
}

uint64_t lane_help_runs() { return g_helped_runs.load(std::memory_order_relaxed); }

void LaneHelp::wait_for_helper(double seconds) const {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!serving() && std::chrono::steady_clock::now() < until)
    for (int i = 0; i < 64; ++i) cpu_relax();
}

void LaneHelp::run_task(const ThreadPool::Task& task, int64_t i, int thread) {
  errors_.run([&] {
    LaneHelpScope nested(nullptr);  // runs inside a task stay on its thread
    task(i, thread);
  });
}

// The job's task is read only after a claim word showed this generation, and used only after a
// claim succeeded: a slot rewritten by a later run (which resets the claim words first) can make no
// claim succeed (the pool's drain() argues the same).
int64_t LaneHelp::drain(uint32_t generation, int thread) {
  OwnedRange& own = ranges_[thread];
  OwnedRange& other = ranges_[1 - thread];
  if (own.generation() != generation) return 0;
  const Job& job = jobs_[generation & 1];
  const ThreadPool::Task* task = job.task.load(std::memory_order_acquire);
  const int64_t n = job.n.load(std::memory_order_relaxed);
  const int64_t first[2] = {0, n / 2};
  int64_t done = 0;
  uint32_t i = 0;
  while (own.take(generation, true, i)) {
    run_task(*task, first[thread] + i, thread);
    ++done;
  }
  while (other.take(generation, false, i)) {
    run_task(*task, first[1 - thread] + i, thread);
    ++done;
  }
  return done;
}

void LaneHelp::run(int64_t n, const ThreadPool::Task& fn) {
  if (n > kMaxTasks) {  // beyond a range word: alone, in order (no training kernel plans so many)
    LaneHelpScope nested(nullptr);
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  // The previous run's tasks are all done (this thread waited for them), so its slot's successor,
  // the claim words and the counters are free to reset.
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  Job& job = jobs_[generation & 1];
  job.n.store(n, std::memory_order_relaxed);
  job.task.store(&fn, std::memory_order_release);
  finished_.store(0, std::memory_order_relaxed);
  errors_.reset();
  ranges_[0].reset(generation, static_cast<uint32_t>(n / 2));
  ranges_[1].reset(generation, static_cast<uint32_t>(n - n / 2));
  generation_.store(generation, std::memory_order_release);
  const int64_t mine = drain(generation, 0);
  // The helper adds its count once, after its last task (release): its outputs are visible then.
  while (finished_.load(std::memory_order_acquire) + mine < n) cpu_relax();
  errors_.rethrow();
}

void LaneHelp::serve() {
  // Read before serving_ is set: a run posted once the other lane can see serving_ is a new one.
  uint32_t seen = generation_.load(std::memory_order_acquire);
  serving_.store(true, std::memory_order_release);
  for (;;) {
    uint32_t generation = generation_.load(std::memory_order_acquire);
    while (generation == seen) {
      // The other lane closes only after its last run returned, so nothing posted is left then.
      if (closed_.load(std::memory_order_acquire)) return;
      cpu_relax();
      generation = generation_.load(std::memory_order_acquire);
    }
    seen = generation;
    const int64_t done = drain(generation, 1);
    if (done > 0) finished_.fetch_add(done, std::memory_order_release);
  }
}

void LaneHelp::lane_started() { lanes_started_.fetch_add(1, std::memory_order_acq_rel); }

void LaneHelp::lane_done(bool failed) {
  if (lanes_done_.fetch_add(1, std::memory_order_acq_rel) == 0) {
    // Serve only a lane running on another thread now: a pool whose worker came late may run both
    // lanes on this thread, one after the other, and the second must not wait on this one.
    if (!failed && lanes_started_.load(std::memory_order_acquire) == 2) serve();
    return;
  }
  closed_.store(true, std::memory_order_release);
}

}  // namespace sealkit
