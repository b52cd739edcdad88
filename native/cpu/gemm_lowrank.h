// GEMMs with a narrow result (N at most kLowRankMax, or M for A^T B): LoRA side paths where one
// side of the result is the adapter's rank. See gemm_lowrank.cc.
#pragma once

#include "kernels.h"

namespace sealkit::cpu {

constexpr int64_t kLowRankMax = 32;

// Computes g (f32 A, f32 B or bf16 B widened, any orientation) when the active ISA has AVX-512
// (bf16 B: AVX-512 without BF16) and N is at most kLowRankMax, or M is with op(A) = A^T and
// op(B) = B; returns false, touching nothing, for every other call.
bool gemm_lowrank(const GemmArgs<float>& g);
// Whether gemm_lowrank(g) computes g (it returns true exactly then).
bool gemm_lowrank_runs(const GemmArgs<float>& g);

// Runs gs[0..n) as one pass, with the bits of gemm_lowrank on each, when they share their large
// operand and would each take a low-rank path: up to 3 calls of N <= 16 on the same op(A) (LoRA's
// xa = x A^T for q, k, v; gate, up), or up to 4 weight gradients A_i^T B of M_i <= N on the same B
// (dA = dxa^T x). Returns false, touching nothing, otherwise. The caller rules out what gemm would
// have sent elsewhere first (the few-rows path).
bool gemm_lowrank_group(const GemmArgs<float>* gs, int n);

}  // namespace sealkit::cpu
