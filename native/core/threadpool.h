// A persistent pool of worker threads. Work is split into tasks that workers claim from an atomic
// counter, so uneven tasks balance themselves. Kernels that must be deterministic give every task
// its own output region (never a shared accumulator), which makes results independent of which
// thread ran which task.
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
#include <mutex>
#include <thread>
#include <vector>

#include "function_ref.h"

namespace sealkit {

class ThreadPool {
 public:
  // Called only while run() runs: a reference to the caller's lambda, never a copy.
  using Task = FunctionRef<void(int64_t task, int thread)>;

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(task, thread) for task in [0, n_tasks) on all threads (the caller is thread 0) and
  // returns when every task is done. Calls from different threads are serialised. A task that
  // throws stops the remaining unclaimed tasks and the exception is rethrown to the caller.
  void run(int64_t n_tasks, const Task& fn);

 private:
  // One run's task and count, in the slot of its generation's parity: a worker that saw a run late
  // may still read the previous slot while the caller fills the next one.
  struct Job {
    std::atomic<const Task*> task{nullptr};
    std::atomic<int64_t> n{0};
  };
  static uint64_t claim_word(uint32_t generation, uint32_t index) {
    return (static_cast<uint64_t>(generation) << 32) | index;
  }
  void worker_loop(int thread);
  void drain(uint32_t generation, int thread);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one run() at a time
  std::mutex mutex_;      // only around sleeping and waking
  std::condition_variable wake_;
  std::condition_variable done_;
  // Tasks are claimed from one word holding (generation, next index): a claim succeeds only for the
  // run it was meant for, so no worker ever runs a task of a run other than the one it read.
  alignas(64) std::atomic<uint64_t> next_{0};
  Job jobs_[2];
  alignas(64) std::atomic<int64_t> finished_{0};  // tasks done in this run (each thread adds once)
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleeping_workers_{0};     // changed under mutex_
  std::atomic<bool> caller_sleeping_{false};  // changed under mutex_
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
  std::mutex error_mutex_;
};

// The process-wide pool the CPU kernels use. set_global_threads() replaces it (not while a
// kernel runs); 0 means "all hardware threads".
ThreadPool& global_pool();
void set_global_threads(int threads);
int default_thread_count();

// Splits [0, n) into chunks of at least `grain` items and runs fn(begin, end) on the global pool.
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
