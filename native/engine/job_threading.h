// Whether a model job (a forward, a backward, a training step, decoding steps) runs its kernels on
// the thread pool or inline on the job's own thread: chosen per kind and size of job from the times
// of past jobs.
//
// Why measured, not configured: a LoRA step of SEAL's inner loop (one sequence of 64 tokens on a
// small model) is ~200 kernels of a few microseconds each. On a 2-vCPU cloud VM whose vCPUs share a
// last-level cache, splitting each kernel over both threads runs that step ~1.4x faster than one
// thread. The host sometimes places the vCPUs on cores that share no cache (a cache-line round trip
// then measured ~450 ns instead of ~190); every kernel's input, written by the other thread a few
// microseconds earlier, then crosses between caches, and the same step ran 1.2-1.4x slower on two
// threads than on one. The placement changes while a process runs, so each kind of job keeps the
// recent times of both ways and takes the faster (by 5 % at least, so near-ties do not flap), trying
// the other now and then.
//
// Only jobs that take under kMaxInlineMillis on the pool are ever tried inline: larger ones have
// enough work per kernel for two threads to win anyway (with the vCPUs apart, the tiny step at
// 1 x 128, ~4 ms, ran level on one thread and two; 4 x 256 ran 1.6x faster on two), and a trial
// would cost a whole slow job.
// The choice never changes results: no kernel's bits depend on the thread count.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <type_traits>
#include <vector>

#include "../core/threadpool.h"

namespace sealkit {

// Decode: generation steps (tokens = sequences x steps); Prefill: a generation's prompt.
enum class JobKind : int { Forward = 0, Backward, TrainStep, Decode, Prefill };
const char* job_kind_name(JobKind kind);

class JobThreading {
 public:
  static constexpr double kMaxInlineMillis = 3.0;
  static constexpr int kWindow = 9;          // recent times kept per way
  static constexpr int kMinSamples = 3;      // of each way before choosing
  static constexpr double kMargin = 0.05;    // the other way must be this much faster to switch
  // Jobs between tries of the other way: from kMinProbe, doubling while it loses, up to kMaxProbe.
  static constexpr int64_t kMinProbe = 8;
  static constexpr int64_t kMaxProbe = 128;

  // One kind and size of job: its recent times each way and the way it runs now.
  struct Report {
    JobKind kind = JobKind::Forward;
    int64_t tokens_up_to = 0;  // jobs of (tokens_up_to / 2, tokens_up_to] tokens
    int64_t jobs = 0, inline_jobs = 0;
    // Lower quartiles of the recent jobs each way (0: none yet).
    double pooled_us_per_token = 0, inline_us_per_token = 0;
    bool inline_now = false;
  };

  // mode: SEALKIT_JOB_THREADING = "pooled" | "inline" | anything else (adaptive, the default).
  enum class Mode { Adaptive, Pooled, Inline };
  static Mode mode_from_env();

  // Runs job() on this thread, its kernels inline or on the pool as decide() says, and records its
  // time. pool_threads: the pool's size (1: nothing to choose).
  template <typename F>
  auto run(JobKind kind, int64_t tokens, int pool_threads, F&& job) -> decltype(job()) {
    const Mode mode = mode_from_env();
    if (pool_threads <= 1 || mode != Mode::Adaptive) {
      InlineRuns scope(mode == Mode::Inline);
      return job();
    }
    const bool on = decide(kind, tokens);
    InlineRuns scope(on);
    const auto t0 = std::chrono::steady_clock::now();
    const auto millis = [&] {
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    if constexpr (std::is_void_v<decltype(job())>) {
      job();
      record(kind, tokens, on, millis());
    } else {
      auto result = job();
      record(kind, tokens, on, millis());
      return result;
    }
  }

  // The policy, open for tests: whether the next job of this kind and size runs inline, and the
  // time one took.
  bool decide(JobKind kind, int64_t tokens);
  void record(JobKind kind, int64_t tokens, bool ran_inline, double millis);

  std::vector<Report> report() const;

 private:
  // Recent times of one way, as milliseconds per token. Compared by their lower quartile: noise
  // only adds time (the pool's step times here have a tail of 2x at the 90th percentile), so the
  // fast end of the recent times says what a way can do, and a burst of slow jobs moves it less.
  struct Window {
    std::array<double, kWindow> ms_per_token{};
    int count = 0, next = 0;
    void add(double v);
    double lower_quartile() const;  // 0 when empty
  };
  struct Entry {
    Window pooled, inlined;
    int64_t jobs = 0, inline_jobs = 0;
    bool inline_now = false;
    int64_t next_probe = 0;  // job number at which the other way runs once
    int64_t probe_every = kMinProbe;
  };
  static int bucket_of(int64_t tokens);  // jobs of (2^(b-1), 2^b] tokens share bucket b
  Entry& entry(JobKind kind, int64_t tokens);
  bool eligible(const Entry& e, int64_t tokens) const;

  mutable std::mutex mutex_;  // jobs of one model are serial; the report is read from JS
  std::map<std::pair<int, int>, Entry> entries_;
};

}  // namespace sealkit
