// A thread's range of one run's tasks in one atomic word: generation (32 bits) | front (16) | back
// (16), tasks [front, back) of the range unclaimed. The owner takes from the front, other threads
// from the back, so they never take the same task; and a claim succeeds only for the run (the
// generation) it was meant for, so a thread late from an earlier run claims nothing of a later one.
// The thread pool's owned runs (threadpool.h) and a split pass's lane help (lane_help.h) claim so.
// (parallel_streams' ChunkRange is the same claim without a generation, over 32-bit indices.)
#pragma once
#include <atomic>
#include <cstdint>

namespace sealkit {

struct alignas(64) OwnedRange {
  static constexpr int64_t kMaxTasks = 0xFFFF;  // per range

  static uint64_t word_of(uint32_t generation, uint32_t front, uint32_t back) {
    return (static_cast<uint64_t>(generation) << 32) | (static_cast<uint64_t>(front) << 16) | back;
  }
  static uint32_t generation_of(uint64_t w) { return static_cast<uint32_t>(w >> 32); }

  // Opens the range for run `generation` with `tasks` (<= kMaxTasks) unclaimed.
  void reset(uint32_t generation, uint32_t tasks) {
    word.store(word_of(generation, 0, tasks), std::memory_order_release);
  }
  uint32_t generation() const { return generation_of(word.load(std::memory_order_acquire)); }

  // Takes one task index (relative to the range) of `generation`: from the front (its owner) or the
  // back (the others); false when the range is empty or another run's.
  bool take(uint32_t generation, bool front, uint32_t& index) {
    uint64_t w = word.load(std::memory_order_acquire);
    for (;;) {
      const uint32_t f = static_cast<uint32_t>(w >> 16) & 0xFFFF, b = static_cast<uint32_t>(w) & 0xFFFF;
      if (generation_of(w) != generation || f >= b) return false;
      const uint64_t taken = front ? word_of(generation, f + 1, b) : word_of(generation, f, b - 1);
      if (word.compare_exchange_weak(w, taken, std::memory_order_acquire, std::memory_order_acquire)) {
        index = front ? f : b - 1;
        return true;
      }
    }
  }

  std::atomic<uint64_t> word{0};
};

}  // namespace sealkit
