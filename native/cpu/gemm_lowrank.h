// GEMMs with a narrow result (N at most kLowRankMax): LoRA side paths whose result width is the
// adapter's rank. See gemm_lowrank.cc.
#pragma once

#include "kernels.h"

namespace sealkit::cpu {

constexpr int64_t kLowRankMax = 32;

// Computes g (f32 A, f32 B or bf16 B widened, any orientation) when the active ISA has AVX-512
// (bf16 B: AVX-512 without BF16) and N is at most kLowRankMax; returns false, touching nothing, for
// every other call.
bool gemm_lowrank(const GemmArgs<float>& g);

}  // namespace sealkit::cpu
