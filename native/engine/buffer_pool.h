// Buffers a model frees and allocates again and again, kept for reuse: the adapters of SEAL's inner
// loop (created and dropped in groups of 16: weights, gradients, AdamW moments) and the KV caches
// of its generations (one per generate call).
//
// Why: fresh memory is page-faulted in on first touch (~11 us per 4 KiB page on the development VM),
// and the allocator had handed freed pages back to the kernel (glibc trims the top of each thread's
// arena, and the engine's jobs run on whichever libuv worker is free). Each group's first training
// step ran 3-4x slower than the rest (tiny preset, 16 adapters x 64 tokens: 60-77 ms against
// 17-19), and `npx seal demo` took 625k page faults.
//
// A pool never holds more than its own peak: live and kept buffers together stay within the most
// bytes that were ever live at once, so reuse never raises the model's memory high-water mark.
// Buffers are reused only at their exact size (callers round sizes to classes where sizes vary).
#pragma once
#include <cstddef>
#include <map>
#include <vector>

#include "backend.h"

namespace sealkit {

class BufferPool {
 public:
  // take: a zeroed buffer of `bytes`, kept or new (alloc: the model's allocator, which counts it).
  // give: back from the caller; kept within the peak, else released (returns the bytes released).
  template <typename Alloc>
  void* take(Backend& backend, size_t bytes, Alloc&& alloc) {
    live_ += bytes;
    if (live_ > peak_) peak_ = live_;
    auto it = kept_.find(bytes);
    if (it == kept_.end() || it->second.empty()) return alloc(bytes);
    void* p = it->second.back();
    it->second.pop_back();
    kept_bytes_ -= bytes;
    backend.zero(p, bytes);
    return p;
  }
  size_t give(Backend& backend, void* p, size_t bytes);
  // Releases every kept buffer; returns their bytes.
  size_t clear(Backend& backend);

 private:
  size_t live_ = 0, peak_ = 0, kept_bytes_ = 0;
  std::map<size_t, std::vector<void*>> kept_;  // by size
};

}  // namespace sealkit
