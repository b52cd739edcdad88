// Memory that the kernels stream through over and over (weights, a pass's activations), asked to be
// backed by transparent huge pages (2 MiB) where Linux offers them.
//
// Why: on 4 KiB pages every 4 KiB of a weight stream is a new TLB entry. A decoding step reads all
// 200+ MB of a model's weights once, far more than the TLBs cover, so each page costs a page walk;
// a training step's activations are read again in the backward pass. Two models in one process,
// one allocated each way, alternating (AMD Zen 5, 2 vCPUs, THP "madvise"; docs/performance-log.md):
// the tiny preset's LoRA step of 4 x 256 1.11-1.12x, SmolLM2-135M's 1.02-1.04x, its scoring 1.01x,
// decoding 1.02x (batch 1) and 0.99-1.04x (batch 8).
//
// Only advice: where THP is off ("never") or no huge page is free, the memory is ordinary pages
// and nothing else changes. SEALKIT_HUGE_PAGES=0 turns the advice off (read at each allocation).
#pragma once
#include <cstddef>

namespace sealkit {

// The size and alignment of a huge page.
constexpr size_t kHugePageBytes = size_t(2) << 20;

// Whether new allocations are advised onto huge pages (SEALKIT_HUGE_PAGES, on unless "0").
bool huge_pages_wanted();

// A block of `bytes` (> 0), 64-byte aligned; from kHugePageBytes up it starts on a huge-page
// boundary and its whole huge pages are advised MADV_HUGEPAGE (the tail past the last whole one is
// not rounded up, so it stays on small pages). Free with std::free. Throws std::bad_alloc.
void* huge_page_alloc(size_t bytes);

// Blocks that live as long as the weights they copy (each weight's packed or coded copy, most of
// them under 2 MiB, too small for a huge page of their own): cut one after another from shared
// slabs of whole huge pages (kWeightSlabBytes, or one slab per block from kWeightSlabBlockMax up).
// A slab goes back to the system when its last block is freed; a freed block's bytes are not
// reused before then, which suits blocks freed together with their model. 64-byte aligned;
// thread-safe. Throws std::bad_alloc.
constexpr size_t kWeightSlabBytes = size_t(32) << 20;
constexpr size_t kWeightSlabBlockMax = size_t(4) << 20;
void* weight_block_alloc(size_t bytes);
void weight_block_free(void* p);  // nullptr: nothing

// Slabs held now and the bytes they span (for tests and diagnostics).
struct WeightSlabStats {
  size_t slabs = 0, bytes = 0, blocks = 0;
};
WeightSlabStats weight_slab_stats();

}  // namespace sealkit
