// Causal grouped-query attention whose products run in bf16 with f32 accumulation (vdpbf16ps):
// what a model with bf16 weights asks for (AttentionShape::bf16_products), the precision
// torch.autocast gives attention's two matmuls. The contract is kernels.h's attention_forward /
// attention_backward; only the roundings differ:
//   forward:  S = scale * bf16(Q) . bf16(K); softmax in f32 (lse from the unrounded exps);
//             out = (sum_j bf16(exp(S_j - max)) * bf16(V_j)) / sum_j exp(S_j - max);
//   backward: P = exp(S - lse) from the same S; dP = bf16(dout) . bf16(V); dS = scale * P * (dP - delta)
//             in f32 (delta = dout . out in f32); dq = bf16(dS) bf16(K), dk = bf16(dS)^T bf16(Q),
//             dv = bf16(P)^T bf16(dout).
// Every sum runs in a fixed order, so the bits never depend on the thread count.
#pragma once

#include "../core/cpu_features.h"
#include "kernels.h"

namespace sealkit::cpu {

// Whether this CPU runs these kernels: the active ISA is AVX512-BF16 on a CPU whose vdpbf16ps issues
// at its FMA's rate, doubling the FLOPs (AMD Zen 4/5, 2 threads: 462 against 234 GFLOP/s, 1,089
// against 549). Intel's AMX Xeon ran vdpbf16ps at half its FMA's FLOPs (165 against 335), so there
// bf16 products would be slower than the f32 kernels.
bool attention_bf16_supported();
// Whether attention_bf16_* take this call: the shape asks for bf16 products, the CPU is supported,
// head_dim is a multiple of 16, and SEALKIT_ATTENTION_BF16 is not "0" (read per call, for
// in-process A/B). Otherwise the f32 kernels run.
bool attention_bf16_runs(const AttentionShape& s, Isa isa);

void attention_bf16_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                            float* lse);
void attention_bf16_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                             const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv);

}  // namespace sealkit::cpu
