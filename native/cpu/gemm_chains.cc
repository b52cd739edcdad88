// Independent chains of small GEMMs, one chain per task (gemm_chains in kernels.h).
//
// Why: a batch that mixes adapters (SEAL's inner loop trains up to 16 at once, one per sequence;
// its evaluation scores and decodes them the same way) runs every LoRA product once per sequence:
// per projection and layer two in the forward pass and four in the backward pass, each a GEMM of
// 64 x 16 x 128 or the like — a microsecond or two of work behind a pool dispatch that costs as
// much or more. Run call by call, those products took ~10 ms of a 28 ms tiny-preset step of 16
// adapters x 64 tokens (~1,700 calls), where the same tokens under one adapter take 15 ms. Here a
// sequence's products run in order on one thread (its xa then its y += s xa B^T; its dB, dxa, dA,
// dx), and the sequences spread over the pool: one dispatch per projection instead of dozens, and
// each chain's intermediate (xa, dxa) is still in that core's cache when the next product reads it.
//
// The bits are those of the calls one by one: each GEMM is the same call, run inline on one thread,
// and no kernel's bits depend on the thread count (kernels.h). Chains that would not gain (a few
// large products, where one thread per chain leaves a core idle or loses the per-GEMM split)
// run call by call; SEALKIT_GEMM_CHAINS=0 (read per call) always does.
#include <algorithm>
#include <cstdint>

#include "../core/env_switch.h"
#include "../core/threadpool.h"
#include "kernels.h"

namespace sealkit::cpu {
namespace {

// Costs for choosing between the two ways (rough, from the tiny preset's profiles on 2 vCPUs): a
// pool dispatch of one small GEMM costs ~3 us beyond its work, and one thread runs these products
// at ~100 GFLOP/s (0.01 ns per FLOP).
constexpr double kDispatchNs = 3000;
constexpr double kNsPerFlop = 0.01;

double flops(const GemmArgs<float>& g) { return 2.0 * static_cast<double>(g.M) * static_cast<double>(g.N) * g.K; }

// One chain per task when that is estimated faster than the calls one by one on `threads` threads.
// Chains are assumed alike (one GEMM shape per position, rows per sequence), so the one-per-task
// time is the slowest thread's share of whole chains.
bool chains_pay(const GemmArgs<float>* gs, int n_chains, int chain_len, int threads) {
  double work = 0, longest = 0;
  for (int c = 0; c < n_chains; ++c) {
    double chain = 0;
    for (int j = 0; j < chain_len; ++j) chain += flops(gs[c * chain_len + j]);
    work += chain;
    longest = std::max(longest, chain);
  }
  const int64_t per_thread = (n_chains + threads - 1) / threads;
  const double chained = std::max(static_cast<double>(per_thread) * work / n_chains, longest) * kNsPerFlop;
  const double one_by_one = static_cast<double>(n_chains) * chain_len * kDispatchNs + work * kNsPerFlop / threads;
  return chained < one_by_one;
}

}  // namespace

bool gemm_chains(const GemmArgs<float>* gs, int n_chains, int chain_len) {
  if (n_chains <= 0 || chain_len <= 0) return false;
  ThreadPool& pool = global_pool();
  const int threads = pool.threads();
  if (threads > 1 && n_chains > 1 && switch_on("SEALKIT_GEMM_CHAINS") && chains_pay(gs, n_chains, chain_len, threads)) {
    pool.run(n_chains, [&](int64_t c, int) {
      InlineRuns on_this_thread(true);
      for (int j = 0; j < chain_len; ++j) gemm(gs[c * chain_len + j]);
    });
    return true;
  }
  for (int i = 0; i < n_chains * chain_len; ++i) gemm(gs[i]);
  return false;
}

}  // namespace sealkit::cpu
