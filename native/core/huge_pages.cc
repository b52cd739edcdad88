#include "huge_pages.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "env_switch.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif

namespace sealkit {
namespace {

// Under AddressSanitizer a shared slab's bytes stay poisoned until cut into a block, and each block
// is followed by a poisoned gap: an overrun into the next weight's copy is still caught, as it was
// when every copy was an allocation of its own.
#ifdef __SANITIZE_ADDRESS__
constexpr size_t kRedZone = 64;
void poison(void* p, size_t n) { __asan_poison_memory_region(p, n); }
void unpoison(void* p, size_t n) { __asan_unpoison_memory_region(p, n); }
#else
constexpr size_t kRedZone = 0;
void poison(void*, size_t) {}
void unpoison(void*, size_t) {}
#endif

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

// Advises the whole huge pages of [p, p + bytes) (p on a huge-page boundary). Only advice: where it
// fails (THP compiled out, or "never") the pages stay small.
void advise_huge(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const size_t whole = bytes / kHugePageBytes * kHugePageBytes;
  if (whole > 0) (void)madvise(p, whole, MADV_HUGEPAGE);
#else
  (void)p, (void)bytes;
#endif
}

struct Slab {
  size_t bytes = 0;   // spanned
  size_t used = 0;    // cut so far (bump)
  size_t blocks = 0;  // live blocks
};

struct Slabs {
  std::mutex mutex;
  std::map<uintptr_t, Slab> by_base;
  uintptr_t current = 0;  // the shared slab small blocks are cut from; 0: none yet
};

// Never destroyed: a model freed during the process's exit still frees its blocks here.
Slabs& slabs() {
  static Slabs* s = new Slabs;
  return *s;
}

uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// Registers a fresh slab; frees it if the map cannot take it.
std::map<uintptr_t, Slab>::iterator add_slab(Slabs& s, void* p, size_t bytes) {
  try {
    return s.by_base.emplace(address(p), Slab{bytes, 0, 0}).first;
  } catch (...) {
    std::free(p);
    throw;
  }
}

}  // namespace

bool huge_pages_wanted() { return switch_on("SEALKIT_HUGE_PAGES"); }

void* huge_page_alloc(size_t bytes) {
  const size_t rounded = round_up(std::max<size_t>(bytes, 1), 64);
  const bool huge = rounded >= kHugePageBytes && huge_pages_wanted();
  void* p = nullptr;
  // posix_memalign, not aligned_alloc: the size need not be a multiple of the alignment.
  if (posix_memalign(&p, huge ? kHugePageBytes : 64, rounded) != 0 || !p) throw std::bad_alloc();
  if (huge) advise_huge(p, rounded);
  return p;
}

void* weight_block_alloc(size_t bytes) {
  const size_t need = round_up(std::max<size_t>(bytes, 1), 64);
  Slabs& s = slabs();
  std::lock_guard<std::mutex> lock(s.mutex);
  // A large block, or any block with the advice off (then every block is its own allocation, as
  // without slabs): a slab of its own.
  if (need >= kWeightSlabBlockMax || !huge_pages_wanted()) {
    auto it = add_slab(s, huge_page_alloc(need), need);
    it->second.used = need;
    it->second.blocks = 1;
    return reinterpret_cast<void*>(it->first);
  }
  auto it = s.current ? s.by_base.find(s.current) : s.by_base.end();
  if (it == s.by_base.end() || it->second.bytes - it->second.used < need + kRedZone) {
    it = add_slab(s, huge_page_alloc(kWeightSlabBytes), kWeightSlabBytes);
    poison(reinterpret_cast<void*>(it->first), kWeightSlabBytes);
    s.current = it->first;
  }
  void* p = reinterpret_cast<void*>(it->first + it->second.used);
  unpoison(p, need);
  it->second.used += need + kRedZone;
  it->second.blocks += 1;
  return p;
}

void weight_block_free(void* p) {
  if (!p) return;
  Slabs& s = slabs();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.by_base.upper_bound(address(p));
  if (it == s.by_base.begin() || (--it, address(p) >= it->first + it->second.used) || it->second.blocks == 0) {
    // Not a live block of ours: the caller's bug, and going on would free someone else's memory.
    std::fprintf(stderr, "sealkit: weight_block_free(%p): not a live weight block\n", p);
    std::abort();
  }
  if (--it->second.blocks > 0) return;
  if (s.current == it->first) s.current = 0;
  unpoison(reinterpret_cast<void*>(it->first), it->second.bytes);
  std::free(reinterpret_cast<void*>(it->first));
  s.by_base.erase(it);
}

WeightSlabStats weight_slab_stats() {
  Slabs& s = slabs();
  std::lock_guard<std::mutex> lock(s.mutex);
  WeightSlabStats st;
  for (const auto& [base, slab] : s.by_base) {
    (void)base;
    st.slabs += 1;
    st.bytes += slab.bytes;
    st.blocks += slab.blocks;
  }
  return st;
}

}  // namespace sealkit
