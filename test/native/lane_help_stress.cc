// Stress test of LaneHelp (native/core/lane_help.h) on its own, built with ThreadSanitizer by
// test/lane-help.test.ts: many split "passes" on a pool of two threads, each lane a random sequence
// of parallel_for runs whose every item records which run wrote it. Either lane may finish first
// (random work per lane), so the helper serves runs of every size, from the first op of a pass to
// its last; some passes throw from a task on either thread. Checks that every item of every run ran
// exactly once, before the run returned, that an exception reaches its lane, and that a lane that
// starts runs to its end (the other lane of a throwing pass may never start: the pool skips tasks not
// yet begun once one has thrown, which happens when that lane's thread comes late).
// Usage: lane_help_stress [passes]   (exit 0: all good; 1: a check failed; TSan reports exit 66)
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <vector>

#include "../../native/core/lane_help.h"
#include "../../native/core/threadpool.h"

using namespace sealkit;

namespace {

int failures = 0;
void check(bool ok, const char* what, int pass) {
  if (ok) return;
  if (++failures <= 10) std::fprintf(stderr, "pass %d: %s\n", pass, what);
}

// A little arithmetic per item, so that tasks take unequal, non-zero time.
double spin(int64_t units) {
  double x = 1.0;
  for (int64_t i = 0; i < units; ++i) x = x * 1.0000001 + 1e-9;
  return x;
}

struct LaneLog {
  int64_t runs = 0, helped_threads = 0;
  bool started = false, threw = false;
};

// One lane: `runs` parallel_for runs of random sizes; item i of run r stores r + 1 in its slot.
void lane_work(std::mt19937_64& rng, int pass, int runs, int throw_at, LaneLog& log) {
  std::vector<int> slots;
  std::uniform_int_distribution<int> items(1, 300), grain(1, 8), work(0, 400);
  for (int r = 0; r < runs; ++r) {
    const int n = items(rng), g = grain(rng), units = work(rng);
    slots.assign(static_cast<size_t>(n), 0);
    if (global_pool().threads() == 2) ++log.helped_threads;
    std::atomic<int> twice{0};
    parallel_for(n, g, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        if (r == throw_at && i == n - 1) throw std::runtime_error("task failed");
        if (slots[static_cast<size_t>(i)] != 0) twice.fetch_add(1);
        slots[static_cast<size_t>(i)] = r + 1;
        spin(units);
      }
    });
    for (int v : slots) check(v == r + 1, "an item did not run in its run", pass);
    check(twice.load() == 0, "an item ran twice", pass);
    ++log.runs;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int passes = argc > 1 ? std::atoi(argv[1]) : 400;
  set_global_threads(2);
  std::mt19937_64 seeds(12345);
  int64_t helped = 0, thrown = 0, skipped = 0;
  for (int pass = 0; pass < passes; ++pass) {
    LaneHelp help;
    std::mt19937_64 rng[2] = {std::mt19937_64(seeds()), std::mt19937_64(seeds())};
    // Unequal lanes either way round; about one pass in eight throws from one lane's run.
    const int runs[2] = {static_cast<int>(rng[0]() % 40) + 1, static_cast<int>(rng[1]() % 40) + 1};
    const int thrower = pass % 8 == 3 ? static_cast<int>(rng[0]() % 2) : -1;
    LaneLog logs[2];
    bool caught = false;
    try {
      global_pool().run(2, [&](int64_t i, int) {
        logs[i].started = true;
        InlineRuns on_this_thread(true);
        help.lane_started();
        if (pass % 5 == 0 && i == 0) help.wait_for_helper(1.0);
        try {
          LaneHelpScope helped_scope(&help);
          lane_work(rng[i], pass, runs[i], i == thrower ? runs[i] / 2 : -1, logs[i]);
        } catch (...) {
          logs[i].threw = true;
          help.lane_done(true);
          throw;
        }
        help.lane_done(false);
      });
    } catch (const std::runtime_error& e) {
      caught = true;
    }
    check(caught == (thrower >= 0), "the exception did not reach the caller", pass);
    if (thrower >= 0) {
      check(logs[thrower].threw, "the throwing lane did not see its exception", pass);
      ++thrown;
    }
    for (int i = 0; i < 2; ++i) {
      // Once a lane has thrown, the pool skips tasks not yet begun (run_errors.h): the other lane may
      // never start (its thread came late, so the throwing lane's thread took its task). A lane that
      // starts runs to its end.
      if (!logs[i].started) {
        check(thrower >= 0 && i != thrower, "a lane never started in a pass that did not throw", pass);
        ++skipped;
        continue;
      }
      if (i != thrower) check(logs[i].runs == runs[i], "a lane did not finish its runs", pass);
      helped += logs[i].helped_threads;
    }
  }
  std::printf("passes %d, runs planned for two threads %lld, passes that threw %lld, runs shared %llu, failures %d, "
              "lanes skipped after a throw %lld\n",
              passes, static_cast<long long>(helped), static_cast<long long>(thrown),
              static_cast<unsigned long long>(lane_help_runs()), failures, static_cast<long long>(skipped));
  // The helper must really have served (else this tested nothing).
  if (lane_help_runs() == 0) {
    std::fprintf(stderr, "no run was shared with a helper\n");
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
