#include "threadpool.h"

#include "lane_help.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>

namespace sealkit {

ThreadPool::ThreadPool(int threads) {
  if (threads < 1) threads = 1;
  threads_ = threads;
  ranges_ = std::make_unique<OwnedRange[]>(static_cast<size_t>(threads));
  for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

namespace {

thread_local bool tl_inline_runs = false;

constexpr int64_t kSpinMicros = 50;

// Spins until done() or about kSpinMicros have passed; true if done() became true.
template <typename Done>
bool spin_until(Done done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}

}  // namespace

InlineRuns::InlineRuns(bool on) : previous_(tl_inline_runs) { tl_inline_runs = previous_ || on; }
InlineRuns::~InlineRuns() { tl_inline_runs = previous_; }

// Inline, a thread plans for itself, or for itself and the other lane's thread once that one helps
// (lane_help.h).
int ThreadPool::threads() const { return tl_inline_runs ? lane_threads() : threads_; }

void ThreadPool::run_task(const Task& task, int64_t i, int thread) {
  errors_.run([&] { task(i, thread); });
}

// Claims and runs tasks of `generation` until none is left (or the caller has moved on to a later
// run: then the claim words carry another generation and nothing is claimed). The slot's task and
// count are read (acquire) after a claim word showed this generation and before the first claim;
// they can only have been overwritten by a later run, which the caller publishes after resetting
// every claim word past this generation, so a claim with them fails and they are never used.
void ThreadPool::drain(uint32_t generation, int thread) {
  const Job& job = jobs_[generation & 1];
  int64_t done = 0;
  if (job.owned.load(std::memory_order_acquire)) {
    OwnedRange& own = ranges_[static_cast<size_t>(thread)];
    if (own.generation() != generation) return;
    const Task* task = job.task.load(std::memory_order_acquire);
    const int64_t n = job.n.load(std::memory_order_relaxed);
    const int threads = threads_;
    uint32_t i = 0;
    // The own range, front to back: its word's line stays in this thread's cache unless stolen from.
    while (own.take(generation, true, i)) {
      run_task(*task, range_first(n, thread, threads) + i, thread);
      ++done;
    }
    // Then the others' ranges, from the back.
    for (int k = 1; k < threads; ++k) {
      const int victim = (thread + k) % threads;
      while (ranges_[static_cast<size_t>(victim)].take(generation, false, i)) {
        run_task(*task, range_first(n, victim, threads) + i, thread);
        ++done;
      }
    }
  } else {
    uint64_t word = next_.load(std::memory_order_acquire);
    if (claim_generation(word) != generation) return;
    const Task* task = job.task.load(std::memory_order_acquire);
    const int64_t n = job.n.load(std::memory_order_relaxed);
    for (;;) {
      if (claim_generation(word) != generation || claim_index(word) >= n) break;
      if (!next_.compare_exchange_weak(word, word + 1, std::memory_order_acquire, std::memory_order_acquire)) continue;
      run_task(*task, claim_index(word), thread);
      ++done;
      word = next_.load(std::memory_order_acquire);
    }
  }
  if (done == 0) return;
  // One count per thread and run, not per task: the counter's cache line crosses cores once.
  finished_.fetch_add(done, std::memory_order_seq_cst);
  // Paired with run(): it sets caller_sleeping_ and then re-checks finished_ (all seq_cst), so
  // either it sees this count or this thread sees it asleep and wakes it.
  if (caller_sleeping_.load(std::memory_order_seq_cst)) {
    std::lock_guard<std::mutex> lock(mutex_);
    done_.notify_all();
  }
}

void ThreadPool::worker_loop(int thread) {
  uint32_t seen = 0;
  for (;;) {
    const auto ready = [&] {
      return generation_.load(std::memory_order_seq_cst) != seen || stop_.load(std::memory_order_relaxed);
    };
    if (!spin_until(ready)) {
      // Paired with run(): it publishes the generation and then reads sleeping_workers_ (seq_cst),
      // so either it sees this worker asleep and wakes it, or the wait's check sees the generation.
      std::unique_lock<std::mutex> lock(mutex_);
      sleeping_workers_.fetch_add(1, std::memory_order_seq_cst);
      wake_.wait(lock, ready);
      sleeping_workers_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    drain(seen, thread);
  }
}

// No lock on the way: the job goes out through the claim words and the generation, and the caller
// waits on one counter. Against the earlier pool (a mutex taken by each side for every run, a
// shared counter bumped per task), an empty run of 8 tasks on 2 threads took ~0.5-1.1 us instead
// of ~1.9 (a standalone loop of 20,000 runs).
void ThreadPool::run(int64_t n_tasks, const Task& fn) {
  if (n_tasks <= 0) return;
  if (n_tasks > static_cast<int64_t>(UINT32_MAX) - 1) throw std::length_error("ThreadPool::run: too many tasks");
  // Inline runs touch no pool state, so they take no lock: a pool task inside an InlineRuns scope
  // (gemm_chains runs each chain's GEMMs so) may run kernels while its run holds run_mutex_.
  if (tl_inline_runs && run_with_lane_help(n_tasks, fn)) return;
  if (workers_.empty() || n_tasks == 1 || tl_inline_runs) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
    return;
  }
  std::lock_guard<std::mutex> serial(run_mutex_);
  // Every task of the previous run has finished (run() waited for it), so no thread can claim one
  // of its tasks any more: the other slot, the counters and the error are free to reset.
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  Job& job = jobs_[generation & 1];
  const int threads = threads_;
  const bool owned = (n_tasks + threads - 1) / threads <= kMaxOwned;
  job.n.store(n_tasks, std::memory_order_relaxed);
  job.owned.store(owned, std::memory_order_relaxed);
  // Release: a worker late from an earlier run that reads this task has had every claim word of
  // the previous run's reset made visible to its claims (see drain()).
  job.task.store(&fn, std::memory_order_release);
  finished_.store(0, std::memory_order_relaxed);
  errors_.reset();
  if (owned) {
    for (int t = 0; t < threads; ++t) {
      const int64_t len = range_first(n_tasks, t + 1, threads) - range_first(n_tasks, t, threads);
      ranges_[static_cast<size_t>(t)].reset(generation, static_cast<uint32_t>(len));
    }
  } else {
    next_.store(claim_word(generation, 0), std::memory_order_release);
  }
  generation_.store(generation, std::memory_order_seq_cst);
  if (sleeping_workers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }
  drain(generation, 0);
  const auto all_done = [&] { return finished_.load(std::memory_order_seq_cst) >= n_tasks; };
  if (!spin_until(all_done)) {
    std::unique_lock<std::mutex> lock(mutex_);
    caller_sleeping_.store(true, std::memory_order_seq_cst);
    done_.wait(lock, all_done);
    caller_sleeping_.store(false, std::memory_order_relaxed);
  }
  errors_.rethrow();
}

int default_thread_count() {
  if (const char* env = std::getenv("SEALKIT_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

static std::unique_ptr<ThreadPool>& pool_slot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
static std::mutex& pool_slot_mutex() {
  static std::mutex m;
  return m;
}

// The pool as the kernels read it: one atomic load, no lock (every kernel call asks, several times
// per GEMM: a SEAL inner step makes thousands of such calls, and the lock taken on each showed as
// 1-1.5 % of the step's samples). The slot's mutex guards creating and replacing it.
static std::atomic<ThreadPool*>& pool_pointer() {
  static std::atomic<ThreadPool*> pointer{nullptr};
  return pointer;
}

ThreadPool& global_pool() {
  if (ThreadPool* pool = pool_pointer().load(std::memory_order_acquire)) return *pool;
  std::lock_guard<std::mutex> lock(pool_slot_mutex());
  auto& p = pool_slot();
  if (!p) {
    p = std::make_unique<ThreadPool>(default_thread_count());
    pool_pointer().store(p.get(), std::memory_order_release);
  }
  return *p;
}

void set_global_threads(int threads) {
  std::lock_guard<std::mutex> lock(pool_slot_mutex());
  auto& p = pool_slot();
  if (threads <= 0) threads = default_thread_count();
  if (p && p->size() == threads) return;
  pool_pointer().store(nullptr, std::memory_order_release);
  p = std::make_unique<ThreadPool>(threads);
  pool_pointer().store(p.get(), std::memory_order_release);
}

void parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  ThreadPool& pool = global_pool();
  // Aim for a few chunks per thread so the atomic counter can balance uneven work.
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, static_cast<int64_t>(pool.threads()) * 4);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  pool.run(chunks, [&](int64_t c, int) {
    const int64_t b = even_share(c, n, chunks), e = even_share(c + 1, n, chunks);
    if (b < e) fn(b, e);
  });
}

namespace {
// A range of chunk indices [front, back) in one atomic word, so that its owner (taking the front)
// and thieves (taking the back) never take the same chunk. One per cache line: packed 8 bytes apart,
// every thread's claim of its own next chunk took the line from the others' cores, as theirs took
// it back. SmolLM2-135M decoding, in-process A/B against the packed layout (AMD Zen 5 VM): with the
// vCPUs on cores apart (round trips ~570-600 ns) batch 1 1.041x and 1.042x, batch 8 1.025x and
// 1.002x; with them sharing a cache (~195 ns) batch 1 1.004-1.007x, batch 8 1.010x and 1.018x.
class alignas(64) ChunkRange {
 public:
  void reset(uint32_t front, uint32_t back) { word_.store(pack(front, back), std::memory_order_relaxed); }
  // The front chunk, and the back as it stood then; false when the range is empty.
  bool take_front(uint32_t& chunk, uint32_t& back) {
    uint64_t w = word_.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t f = front_of(w), b = back_of(w);
      if (f >= b) return false;
      if (word_.compare_exchange_weak(w, pack(f + 1, b), std::memory_order_relaxed)) {
        chunk = f;
        back = b;
        return true;
      }
    }
  }
  bool take_back(uint32_t& chunk) {
    uint64_t w = word_.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t f = front_of(w), b = back_of(w);
      if (f >= b) return false;
      if (word_.compare_exchange_weak(w, pack(f, b - 1), std::memory_order_relaxed)) {
        chunk = b - 1;
        return true;
      }
    }
  }

 private:
  static uint64_t pack(uint32_t f, uint32_t b) { return (static_cast<uint64_t>(f) << 32) | b; }
  static uint32_t front_of(uint64_t w) { return static_cast<uint32_t>(w >> 32); }
  static uint32_t back_of(uint64_t w) { return static_cast<uint32_t>(w); }
  std::atomic<uint64_t> word_{0};
};
}  // namespace

void parallel_streams(int64_t n, int64_t grain, FunctionRef<void(const StreamChunk&)> fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  ThreadPool& pool = global_pool();
  const int64_t chunks = (n + grain - 1) / grain;
  const int64_t ranges = std::min<int64_t>(pool.threads(), chunks);
  if (ranges <= 1) {
    fn(StreamChunk{0, n, n, false});
    return;
  }
  if (chunks > UINT32_MAX) throw std::length_error("parallel_streams: too many chunks");
  std::vector<ChunkRange> range(static_cast<size_t>(ranges));
  for (int64_t r = 0; r < ranges; ++r)
    range[static_cast<size_t>(r)].reset(static_cast<uint32_t>(chunks * r / ranges),
                                        static_cast<uint32_t>(chunks * (r + 1) / ranges));
  const auto items = [&](int64_t chunk) { return std::min(n, chunk * grain); };
  // Task r owns range r; whichever thread runs it walks the range, then steals from the others.
  pool.run(ranges, [&](int64_t r, int) {
    uint32_t c = 0, back = 0;
    int64_t last_end = -1;
    while (range[static_cast<size_t>(r)].take_front(c, back)) {
      const int64_t b = items(c), e = items(c + 1);
      fn(StreamChunk{b, e, items(back), b == last_end});
      last_end = e;
    }
    for (int64_t k = 1; k < ranges; ++k) {
      ChunkRange& victim = range[static_cast<size_t>((r + k) % ranges)];
      while (victim.take_back(c)) {
        const int64_t b = items(c), e = items(c + 1);
        fn(StreamChunk{b, e, e, false});
      }
    }
  });
}

}  // namespace sealkit
