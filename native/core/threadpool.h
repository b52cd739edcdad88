// A persistent pool of worker threads. Each thread owns a contiguous range of a run's tasks and
// takes them front to back; a thread done with its own range takes tasks from the back of the
// others', so uneven tasks and slow threads still balance. Kernels that must be deterministic give
// every task its own output region (never a shared accumulator), which makes results independent of
// which thread ran which task.
//
// Why owned ranges, not one shared counter: the two vCPUs of a cloud VM are sometimes placed on
// cores that share no cache (the host moves them; a cache-line round trip between them measured
// ~450 ns then, ~190 ns otherwise). A shared counter sends its line across at every claim, and the
// thread that runs task i changes from run to run, so the data one kernel wrote is often read by the
// other thread in the next. With owned ranges a thread claims from its own cache line and, in
// kernels that split the same rows the same way, reads back mostly what it wrote itself.
//
// Waiting spins briefly before it blocks: the kernels of one step follow each other within
// microseconds (a decode step runs ~300 of them), while a futex sleep/wake round trip costs tens
// of microseconds, more under virtualisation. A worker idle for longer than kSpinMicros sleeps.
// A run between spinning threads takes no lock: the caller publishes the job through atomics and
// each thread reports its finished tasks once (see run() for the measured cost).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "function_ref.h"
#include "owned_range.h"
#include "run_errors.h"

namespace sealkit {

class ThreadPool {
 public:
  // Called only while run() runs: a reference to the caller's lambda, never a copy.
  using Task = FunctionRef<void(int64_t task, int thread)>;

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // 1 on a thread inside an InlineRuns scope (kernels then plan for one thread), or 2 there while
  // the other lane of a split training pass helps this one (lane_help.h).
  int threads() const;
  int size() const { return threads_; }  // the threads it owns, in any scope

  // Runs fn(task, thread) for task in [0, n_tasks) on all threads (the caller is thread 0) and
  // returns when every task is done. Calls from different threads are serialised. A task that
  // throws stops the remaining unclaimed tasks and the exception is rethrown to the caller. Inside
  // an InlineRuns scope the caller runs every task itself, in order (or shares them with a helping
  // lane's thread, lane_help.h).
  void run(int64_t n_tasks, const Task& fn);

 private:
  // One run's task and count, in the slot of its generation's parity: a worker that saw a run late
  // may still read the previous slot while the caller fills the next one. owned: the run's tasks
  // are split into per-thread ranges (else, for runs too large for a range word, one counter).
  struct Job {
    std::atomic<const Task*> task{nullptr};
    std::atomic<int64_t> n{0};
    std::atomic<bool> owned{false};
  };
  static constexpr int64_t kMaxOwned = OwnedRange::kMaxTasks;  // tasks per thread range
  // The shared claim word of a larger run: generation (high 32 bits) | next task index (low 32).
  static uint64_t claim_word(uint32_t generation, uint32_t index) {
    return (static_cast<uint64_t>(generation) << 32) | index;
  }
  static uint32_t claim_generation(uint64_t word) { return static_cast<uint32_t>(word >> 32); }
  static int64_t claim_index(uint64_t word) { return static_cast<uint32_t>(word); }
  static int64_t range_first(int64_t n, int t, int threads) { return n * t / threads; }
  void worker_loop(int thread);
  void drain(uint32_t generation, int thread);
  // Runs task i of the current run, recording the first exception.
  void run_task(const Task& task, int64_t i, int thread);

  int threads_ = 1;  // set before any worker starts
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one run() at a time
  std::mutex mutex_;      // only around sleeping and waking
  std::condition_variable wake_;
  std::condition_variable done_;
  // Owned runs: one range per thread (thread t's: tasks [first(t) + front, first(t) + back)).
  // Larger runs: tasks are claimed from one word holding (generation, next index). Either way a
  // claim succeeds only for the run it was meant for, so no worker ever runs a task of a run other
  // than the one it read.
  std::unique_ptr<OwnedRange[]> ranges_;
  alignas(64) std::atomic<uint64_t> next_{0};
  Job jobs_[2];
  alignas(64) std::atomic<int64_t> finished_{0};  // tasks done in this run (each thread adds once)
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleeping_workers_{0};     // changed under mutex_
  std::atomic<bool> caller_sleeping_{false};  // changed under mutex_
  RunErrors errors_;
};

// A spin-wait's pause (the pool's and the lane help's waits).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// While one lives, the pool runs this thread's work inline: threads() is 1 and run() executes every
// task on the caller, as a one-thread pool would. For jobs too small to gain from a second thread
// (see engine/job_threading.h). Results do not change: no kernel's bits depend on the thread count.
class InlineRuns {
 public:
  explicit InlineRuns(bool on);
  ~InlineRuns();
  InlineRuns(const InlineRuns&) = delete;
  InlineRuns& operator=(const InlineRuns&) = delete;

 private:
  bool previous_;
};

// The process-wide pool the CPU kernels use. set_global_threads() replaces it (not while a
// kernel runs); 0 means "all hardware threads".
ThreadPool& global_pool();
void set_global_threads(int threads);
int default_thread_count();

// Where part i of `total` units split into `parts` parts one unit apart in size begins (part
// `parts` begins at total). Every split of work into tasks uses it: ceil(total / parts) per part
// leaves the last part short or empty (74 units in 8 parts: 7 x 10 + 4), and with each thread owning
// a contiguous range of tasks one thread's share was 40 units to the other's 34.
inline int64_t even_share(int64_t i, int64_t total, int64_t parts) { return i * total / parts; }

// Splits [0, n) into chunks of at least `grain` items (evened out: even_share) and runs
// fn(begin, end) on the global pool.
void parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn);

// One chunk of parallel_streams: items [begin, end). The thread that runs it goes on, unless
// another thread takes that part first, to the items up to run_end (>= end). continues: this
// chunk follows the thread's previous one in the same run (that chunk ended at begin and its
// run_end lay past it), so a kernel that prefetched up to run_end has requested its first items.
struct StreamChunk {
  int64_t begin = 0, end = 0, run_end = 0;
  bool continues = false;
};
// For kernels that stream memory front to back (decoding's weight rows): [0, n) is split into one
// contiguous range per thread, which its thread takes front to back, `grain` items at a time; a
// thread done with its own range then takes chunks from the back of the others'. So each thread
// mostly walks one long run, and a kernel can prefetch past a chunk's end up to run_end without
// restarting its stream at every chunk, while a slow thread (a busy core of a shared machine)
// still hands its tail to the others.
void parallel_streams(int64_t n, int64_t grain, FunctionRef<void(const StreamChunk&)> fn);

}  // namespace sealkit
