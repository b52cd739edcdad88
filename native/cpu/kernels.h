// CPU kernels: every op of the decoder, forward and backward. Row-major throughout.
//
// Each kernel is a template over the compute type T, instantiated for float (what the engine runs)
// and double (the reference the finite-difference gradient checks use). Weights that may be
// stored in bf16 arrive as a WeightView; in the double instantiation they must be F64.
//
// Conventions:
//  - "+=" outputs accumulate into what the caller passes (the caller zeroes them first when it
//    wants a plain result); "=" outputs are overwritten.
//  - Kernels parallelise on the global thread pool and are deterministic: the same inputs give the
//    same bits whatever the thread count (no reduction is split across tasks).
//  - Shapes are validated by the caller (the model); kernels assume them.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "../core/dtype.h"

namespace sealkit::cpu {

// ---- GEMM -------------------------------------------------------------------------------------
// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
// op(A) = A (stored [M, lda>=K]) or A^T (stored [K, lda>=M]) when trans_a.
// op(B) = B (stored [K, ldb>=N]) or B^T (stored [N, ldb>=K]) when trans_b.
// B may be f32 or bf16 for T=float (f64 for T=double). beta == 0 ignores C's old contents (NaNs
// included). With bf16 B on CPUs with AVX512-BF16 (Isa::Avx512Bf16), A is rounded to bf16
// (round-to-nearest-even) and products accumulate in f32 — the numerics of PyTorch's bf16
// autocast — through AMX tiles where the CPU has them (SEALKIT_AMX=0 disables) or vdpbf16ps.
// f32 B is always computed in f32. Orientations the model uses: forward y = x W^T (trans_b), input gradient dx = dy W,
// weight gradient dW = dy^T x (trans_a).
struct PackedWeight;
struct CodedWeight;

template <typename T>
struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const T* A = nullptr;
  int64_t lda = 0;
  bool trans_a = false;
  WeightView B;
  int64_t ldb = 0;
  bool trans_b = false;
  T* C = nullptr;
  int64_t ldc = 0;
  T alpha = 1;
  T beta = 0;
  // Optional: B already packed for this GEMM's kernel (pack_weight). Read in place of B when it was
  // packed from this very B (data, orientation, N, K, ldb) for the kernel this call runs; ignored
  // otherwise, so a stale or foreign one costs the packing, never the result.
  const PackedWeight* packed_b = nullptr;
  // Optional: B's rows coded in 12 bits (coded_weight.h, code_weight). Read in place of B by the
  // few-rows GEMMs (y = x W^T) when coded from this very B (data, N, K, ldb), the CPU has the kernel
  // and SEALKIT_CODED_WEIGHTS is not 0; same bits as B's own rows. Ignored otherwise.
  const CodedWeight* coded_b = nullptr;
  // Optional (T = float): A given as bf16 rows in place of A (then ignored): op(A) = A, row i's k at
  // A_bf16[i * lda + k]. The result is that of A given as f32 with these values. Meant for inputs a
  // bf16-product kernel would round to bf16 anyway (round_to_bf16 gives the values packing would):
  // with bf16 B under AVX512-BF16 (vdpbf16ps, not AMX), K and lda even, the tiles read these rows as
  // they are and A is never packed, so a producer that writes them (scoring's norms and SwiGLU) takes
  // a pass over its output off the GEMM; every other path widens them to f32 first. Every GEMM entry
  // point below takes it.
  const uint16_t* A_bf16 = nullptr;
};
template <typename T>
void gemm(const GemmArgs<T>& args);

// dst[i] = x[i] rounded to bf16 as the bf16-product kernels round A while packing (to nearest even,
// f32 denormals to zero, NaNs kept NaN): the values GemmArgs::A_bf16 stands for. Needs AVX512-BF16
// (Isa::Avx512Bf16); elsewhere it throws.
void round_to_bf16(const float* x, uint16_t* dst, int64_t n);

// ---- packed weights ---------------------------------------------------------------------------
// A weight W [rows, cols] packed once, for one orientation (`transposed`: y = x W^T, else
// dx = dy W), into the B strips the GEMM's kernel streams: a bf16 W for the bf16-pair kernels under
// AVX512-BF16 (AMX tiles where the CPU has them, their pairs padded to whole 16-pair blocks; else
// vdpbf16ps), an f32 W for the f32 kernel of the active ISA. Packing B is 5-8 % of each of SmolLM2's
// training GEMMs on AMD Zen 5, more with AMX's fast products (scoring and the LoRA step 1.18x on an
// AMX Xeon); a GEMM given the packed weight skips it. A weight packed for one kernel is not read by
// the other (SEALKIT_AMX=0 after packing: B is packed per call).
// Same strips as the GEMM's own packing, so the same bits. The owner drops it when W changes (it
// holds no reference to W's contents, only its address for matching).
struct PackedWeight {
  const void* source = nullptr;
  bool trans_b = false;
  int64_t N = 0, K = 0, ldb = 0;
  // The kernel's strips it holds: nr columns each, of bf16 pairs (vdpbf16ps: a bf16 W) or of f32
  // (the f32 kernel: an f32 W).
  int nr = 0;
  bool pairs = false;
  // Pairs per strip are padded with zero pairs to a multiple of this (AMX: whole 16-pair blocks).
  int64_t pair_align = 1;
  int64_t strip_stride = 0;  // floats from one strip to the next (ceil(K/2) pairs, padded, or K rows, x nr)
  float* strips = nullptr;   // 64-byte aligned, owned
  size_t bytes = 0;
  PackedWeight() = default;
  PackedWeight(const PackedWeight&) = delete;
  PackedWeight& operator=(const PackedWeight&) = delete;
  ~PackedWeight();
};
// Whether a GEMM of M rows against a weight of this dtype and orientation would read a packed weight
// (an f32 weight, or a bf16 one where the bf16-pair kernels are active, and M above the few-rows
// path's limit, or a bf16 W^T at 2-16 rows where those read its strips), and packing is on
// (SEALKIT_PACKED_WEIGHTS=0, read per call, turns it off, for tests and benchmarks).
bool gemm_reads_packed_weight(int64_t M, DType dtype, bool transposed);
// Whether gemm's tiles read GemmArgs::A_bf16 rows as they are (no packing, no widening) for a B of
// `dtype` and more than 16 rows: bf16 B on the vdpbf16ps kernel (AVX512-BF16 without AMX tiles),
// unless SEALKIT_BF16_ROWS=0 (read per call; the model's producers then hand over f32 rows).
bool gemm_reads_bf16_rows(DType dtype);
// Whether decoding's few-rows GEMMs prefetch their weights with the non-temporal hint one block
// ahead (true) or 32 rows ahead into L2: this CPU's default, or SEALKIT_FEW_ROWS_NTA (gemm.cc).
bool few_rows_prefetch_nta();
// Whether bf16 GEMMs run on AMX tiles (the CPU has AMX-BF16, Linux grants the tile state, and
// SEALKIT_AMX is not 0), and whether decoding's few-rows GEMMs of 2-16 rows do too (also
// SEALKIT_AMX_FEW_ROWS not 0; gemm.cc, few_rows_amx_columns).
bool amx_tiles_on();
bool few_rows_amx_on();
// Whether decoding's few-rows GEMMs of 2-16 rows read bf16 weights' packed strips (vdpbf16ps, bf16
// GEMMs not on AMX tiles, SEALKIT_FEW_ROWS_PACKED and SEALKIT_PACKED_WEIGHTS not 0; gemm.cc,
// few_rows_strips).
bool few_rows_packed_on();
// Pair steps per K block of the vdpbf16ps strips' GEMM at depth K (the blocks few_rows_strips runs;
// coded strips keep their escape offsets at these blocks).
int64_t packed_strip_kc_depth(int64_t K);
// The packed weight (null when no kernel on this CPU reads one). Parallel over the pool.
std::unique_ptr<PackedWeight> pack_weight(WeightView w, int64_t rows, int64_t cols, bool transposed);

// A rank-r update added to a GEMM's result: C += scale * U op(V), U [M, rank] (row stride ldu),
// op(V) [rank, N] = V (stored [rank, ldv>=N]) or V^T (stored [N, ldv>=rank]) when trans_v. All f32.
// LoRA's side paths: y += s xa B^T in the forward pass, dx += dxa A in the backward pass.
// A batch that mixes adapters gives each sequence's rows its own adapter: `segments` (n_segments of
// them, rows ascending, not overlapping) then say which rows take which V and scale; rows outside
// every segment get no update, and V, ldv and scale above are unused (U, ldu, trans_v and rank
// are shared: row t of U at U + t * ldu for every segment).
struct LowRankSegment {
  int64_t row0 = 0, rows = 0;
  const float* V = nullptr;
  int64_t ldv = 0;
  float scale = 1;
};
struct LowRankUpdate {
  const float* U = nullptr;
  int64_t ldu = 0;
  const float* V = nullptr;
  int64_t ldv = 0;
  bool trans_v = false;
  int64_t rank = 0;
  float scale = 1;
  const LowRankSegment* segments = nullptr;
  int n_segments = 0;
};
// gemm(g), then C += scale * U op(V): the same bits as the two separate calls gemm(g) and
// gemm({M, N, K = rank, A = U, B = V, alpha = scale, beta = 1}) (with segments, that call per
// segment on its rows: update_gemm). Where the packed AVX-512 kernels run, the update is added to
// each tile of C right after its last K block, while the tile is in L1, by the micro-kernel the
// separate call would have used; elsewhere it is the separate calls. Throws std::invalid_argument
// for segments outside C's rows, out of order or overlapping.
void gemm_with_update(const GemmArgs<float>& g, const LowRankUpdate& update);
// The separate calls of an update on g's C, C = scale * U op(V) + C: update_calls of them (one, or
// one per segment), call i by update_gemm (segment i's, on its rows: C = seg.scale * U op(seg.V) + C).
int update_calls(const LowRankUpdate& update);
// Whether gemm_with_update(g, update) adds the update on its tiles (else it runs the separate calls
// after the GEMM). A batch mixing adapters asks before it hands the per-sequence updates over as
// segments: where they would run call by call, its chains run them in parallel instead.
bool gemm_update_on_tiles(const GemmArgs<float>& g, const LowRankUpdate& update);
GemmArgs<float> update_gemm(const GemmArgs<float>& g, const LowRankUpdate& update, int i);
// n GEMMs that share an operand (the projections of one input: q, k, v; gate, up; their adapters'
// xa = x A^T and dA = dxa^T x), with the bits of the calls one by one. When every one streams a bf16
// W for a few rows (decoding), they run as one dispatch over all the W's rows: one wake-up of the
// pool and one tail instead of n. Many rows against bf16 weights that all come packed for the
// vdpbf16ps kernel (scoring's q, k, v) run as one packed GEMM across their N's, x packed once.
// LoRA's xa and dA of one input run as one pass over the shared operand (gemm_lowrank_group). Any
// other group runs call by call.
void gemm_group(const GemmArgs<float>* gs, int n);
// n_chains independent chains of chain_len GEMMs each, gs chain by chain: chain c is
// gs[c * chain_len + j] for j in [0, chain_len), run in that order (a GEMM may read an earlier
// one's C in its chain). Chains write disjoint memory and read nothing another chain writes. With
// the bits of the calls one by one, in order. Where that is estimated faster, each chain runs on
// one thread, the chains spread over the pool (the per-sequence LoRA products of a batch that
// mixes adapters; see gemm_chains.cc); else call by call. Returns whether the chains ran so.
bool gemm_chains(const GemmArgs<float>* gs, int n_chains, int chain_len);
// The MLP's gate and up projections and SwiGLU on them: act = silu(gate.C) * up.C after gate and up
// (two GEMMs of one A: same A, lda, M, N, K and orientations; beta 0), with the bits of
// gemm(gate), gemm(up), swiglu_forward. act is [M, N] with rows ld_act apart. Where both weights
// come packed for the vdpbf16ps kernel (PackedWeight) and K fits one K block, each 14 x 32 tile of
// both products is computed into a scratch tile (in L1) and only act's tile is stored: gate.C
// and up.C are then left untouched (neither reaches memory, A is packed once, and SwiGLU needs no
// pass of its own); elsewhere the three calls run in sequence and fill gate.C and up.C. Returns
// whether it fused them. SEALKIT_FUSED_GATE_UP=0 (read per call) always runs the three calls.
// With act_bf16, act is stored there instead, as bf16 rows ld_act apart (round_to_bf16's values: the
// down projection's A_bf16), and `act` is not written; the fused path then is the vdpbf16ps one only
// (not AMX), and elsewhere up.C ends up holding act in f32.
bool gemm_gate_up_swiglu(const GemmArgs<float>& gate, const GemmArgs<float>& up, float* act, int64_t ld_act,
                         uint16_t* act_bf16 = nullptr);
// SwiGLU's backward pass on a GEMM's result: the MLP's dact = dy W_down (+ the down adapter's
// dxa A, `update`, may be null) is the GEMM's C, and SwiGLU's gradients follow from it, gate and up:
// dgate, dup (swiglu_backward's contract). All four arrays are [M, N] with rows g.ldc apart, like C.
struct SwigluGrad {
  const float* gate = nullptr;
  const float* up = nullptr;
  float* dgate = nullptr;
  float* dup = nullptr;
};
// gemm(g) or gemm_with_update(g, *update), then swiglu_backward on C, with the bits of those calls.
// Where the weight comes packed for the vdpbf16ps kernel (PackedWeight), beta is 0 and K fits one K
// block, each 14 x 32 tile of dact (with the update added, as gemm_with_update adds it) is computed
// into a scratch tile in L1 and only dgate's and dup's tiles are stored: C is left untouched (dact
// never reaches memory and SwiGLU's backward needs no pass of its own). Elsewhere the calls run in
// sequence and fill C. Returns whether it fused them. SEALKIT_FUSED_SWIGLU_BACKWARD=0 (read per
// call) always runs the calls.
bool gemm_swiglu_backward(const GemmArgs<float>& g, const LowRankUpdate* update, const SwigluGrad& s);

// SwiGLU's forward pass on the up projection's GEMM, when its gate projection carries its own
// update (scoring and prefill under adapters on gate and up, where gemm_gate_up_swiglu does not
// apply): gemm(up) or gemm_with_update(up, *update), then act = silu(gate) * up.C, with the bits of
// those calls (gate and act strided like up.C). Fused where gemm_swiglu_backward fuses: each tile of
// up (with its update) stays in a scratch tile and only act's tile is stored; up.C is left
// untouched. Elsewhere the calls run in sequence and fill up.C. Returns whether it fused them.
// SEALKIT_FUSED_UP_SWIGLU=0 (read per call) always runs the calls. SmolLM2-135M scoring under one
// adapter 1.020-1.023x, 16 adapters x 64 1.006-1.010x (`seal bench forward --ab-env`, AMD Zen 5).
bool gemm_up_swiglu(const GemmArgs<float>& up, const LowRankUpdate* update, const float* gate, float* act);

// ---- embedding ---------------------------------------------------------------------------------
// out[i, :] = table[ids[i], :]  (table [vocab, dim], f32/bf16 for float, f64 for double)
template <typename T>
void embedding_forward(const int32_t* ids, int64_t n, WeightView table, int64_t dim, T* out);
// dtable[ids[i], :] += dout[i, :]   (tokens in order, so repeated ids sum deterministically)
template <typename T>
void embedding_backward(const int32_t* ids, int64_t n, const T* dout, int64_t dim, T* dtable);

// ---- RMSNorm (Llama): y = x / sqrt(mean(x^2) + eps) * w ------------------------------------------
// rstd[r] = 1/sqrt(mean(x[r]^2)+eps) is saved for the backward pass.
template <typename T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t dim, double eps);
// The residual add and the next norm as one pass over the rows (a pre-norm decoder's x += sublayer
// output, then norm(x)): x += r, then rmsnorm_forward(x, w, y, rstd, ...), with the bits of axpy(x,
// r, n, 1) and rmsnorm_forward in sequence. Each block of rows is normalised right after its add,
// while it is in cache: x comes from memory once, not twice.
template <typename T>
void residual_rmsnorm_forward(T* x, const T* r, const T* w, T* y, T* rstd, int64_t rows, int64_t dim, double eps);
// The same two with y as bf16 rows: each value round_to_bf16's of the f32 y, for a next GEMM that
// takes them as its A_bf16 (scoring's projections, which would round y to bf16 anyway). y is never
// written in f32. Needs AVX512-BF16, as round_to_bf16 does.
void rmsnorm_forward_bf16(const float* x, const float* w, uint16_t* y, float* rstd, int64_t rows, int64_t dim,
                          double eps);
void residual_rmsnorm_forward_bf16(float* x, const float* r, const float* w, uint16_t* y, float* rstd, int64_t rows,
                                   int64_t dim, double eps);
// dx += d/dx, dw += d/dw (dw may be null when the norm weight is frozen).
template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw, int64_t rows,
                      int64_t dim);

// ---- RoPE (Hugging Face rotate-half pairing: element i pairs with i + head_dim/2) -----------------
// x holds `rows` rows of `heads` heads of `head_dim` values; row r starts at x + r*row_stride.
// Angle for row r, pair i: positions[r] * inv_freq[i] (computed in T). In place.
// forward: (a, b) -> (a cos - b sin, b cos + a sin); backward applies the inverse rotation to the
// gradient (also in place).
template <typename T>
void rope_forward(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                  const int32_t* positions, const float* inv_freq);
template <typename T>
void rope_backward(T* dx, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                   const int32_t* positions, const float* inv_freq);

// ---- causal grouped-query attention over packed variable-length sequences -----------------------
// Tokens of several sequences are packed one after another; sequence s covers rows
// [seq_start[s], seq_start[s] + seq_len[s]) and attends causally within itself only.
// q: [rows, q_stride] with heads*head_dim used; k, v: [rows, kv_stride] with kv_heads*head_dim used.
// Query head h reads kv head h / (heads / kv_heads).
// out: [rows, heads*head_dim] (=), lse: [rows, heads] log-sum-exp of the scaled scores (=), kept for
// the backward pass instead of the probability matrix (scores are recomputed).
struct AttentionShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t q_stride = 0, kv_stride = 0;
  double scale = 0;  // usually 1/sqrt(head_dim)
  const int32_t* seq_start = nullptr;
  const int32_t* seq_len = nullptr;
  int64_t n_seqs = 0;
  int64_t max_seq_len = 0;  // longest sequence (sizes scratch and GPU launches)
  // Products in bf16 with f32 accumulation (attention_bf16.h: what a model with bf16 weights asks
  // for, as torch.autocast does); taken where the CPU has AVX512-BF16 and head_dim is a multiple
  // of 16, else the f32 kernels run. The CUDA backend keeps f32 products.
  bool bf16_products = false;
};
// The forward kernels' work units: (sequence, query head, first query) of every block of q_block
// queries, sequence by sequence, head by head (shared by the f32 and bf16-product kernels).
struct AttentionUnit {
  int64_t seq, head, t0;
};
std::vector<AttentionUnit> attention_units(const AttentionShape& s, int64_t q_block);
template <typename T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* out, T* lse);
// dq (=, layout of q), dk and dv (=, layout of k/v). Rows of dq/dk/dv outside the used columns are
// left untouched.
template <typename T>
void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const T* dout, T* dq, T* dk, T* dv);

// ---- SwiGLU: out = silu(gate) * up ---------------------------------------------------------------
template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n);
// dgate =, dup =
template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* dout, T* dgate, T* dup, int64_t n);

// ---- softmax cross-entropy, fused, in place ------------------------------------------------------
// For each row r: loss[r] = logsumexp(logits[r]) - logits[r][targets[r]] (= -log p(target)).
// Rows whose target is negative get loss 0. When grad_scale is non-null the logits row is
// overwritten by its gradient (softmax - onehot) * grad_scale[r] (rows with grad_scale 0 or a
// negative target become 0), so no second vocab-sized buffer is needed.
template <typename T>
void cross_entropy(T* logits, const int32_t* targets, int64_t rows, int64_t vocab, T* loss,
                   const T* grad_scale);

// ---- exp over a row ------------------------------------------------------------------------------
// out[i] = exp(x[i] - shift) * scale (out may be x itself, or null); returns the sum of the
// exp(x[i] - shift), accumulated in double in a fixed order for the active ISA. The vectorised exp
// of the attention and cross-entropy kernels (Cephes polynomial, within a few ulp of expf).
double exp_shifted(const float* x, float* out, int64_t n, float shift, float scale);
// A block of rows at once (the attention kernels' softmax): rows r in [0, rows), ld apart, row r
// holding n0 + r values, each replaced by exp(x - shift[r]), its sum (exp_shifted's) into sums[r]
// when sums is non-null.
void exp_rows_shifted(float* x, int64_t ld, int64_t rows, int64_t n0, const float* shift, double* sums);

// ---- optimiser and reductions --------------------------------------------------------------------
// AdamW (PyTorch semantics): p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps). step counts from 1.
struct AdamWParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  int64_t step = 1;
};
template <typename T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWParams& p);

// Sum of squares in double, with a fixed summation tree (deterministic for any thread count).
template <typename T>
double sum_squares(const T* x, int64_t n);

// x *= s
template <typename T>
void scale_inplace(T* x, int64_t n, T s);

// y += a * x
template <typename T>
void axpy(T* y, const T* x, int64_t n, T a);

// One trained tensor with its gradient and AdamW moments.
struct OptimTensor {
  float* param;
  float* grad;
  float* m;
  float* v;
  int64_t n;
};
// A whole optimiser step's tensors in one pool run each (SEAL's small LoRA steps have dozens to
// hundreds of tensors of a few thousand elements, where one run per tensor and op was a few percent
// of a step). sum_squares_many: the sum over the tensors, in order, of sum_squares of each grad.
// adamw_many: per tensor, grad *= grad_scale (unless 1), adamw_step, then grad = 0. Both give the
// bits of those calls made one by one.
double sum_squares_many(const OptimTensor* ts, int count);
void adamw_many(const OptimTensor* ts, int count, const AdamWParams& p, float grad_scale);

// The factor torch.nn.utils.clip_grad_norm_ scales gradients of norm `norm` by (1 when
// max_grad_norm <= 0, or when the norm is already within it).
inline float clip_scale(double norm, double max_grad_norm) {
  if (max_grad_norm <= 0) return 1.0f;
  const double coef = max_grad_norm / (norm + 1e-6);
  return coef < 1 ? static_cast<float>(coef) : 1.0f;
}

// One optimiser group of a step (a model's base parameters, or one adapter): its tensors and this
// step's AdamW hyper-parameters.
struct OptimGroup {
  const OptimTensor* ts;
  int count;
  AdamWParams adam;
};
// Whether optimizer_groups runs these groups one per task (see there) rather than each across the
// pool: several groups per thread (SEALKIT_OPTIMIZER_TASKS=0, read per call, never; same bits).
bool optimizer_groups_per_task(int count);
// Per group: norms[g] = its gradient norm (sum_squares_many), its gradients scaled by
// clip_scale(norms[g], max_grad_norm), then adamw_many. Where optimizer_groups_per_task(count), the
// groups are the pool's tasks, each run on one thread: SEAL's inner loop steps 16 adapters at once,
// and one pool run per adapter and op (32 a step) split each adapter's gradients between the cores
// twice, where one task reads them for the norm and again for AdamW on one core. In process, by the
// VM's state: an inner-loop step of the demo model 1.013-1.047x, the tiny preset's 16 adapters x 20
// tokens 0.99-1.055x and x 64 1.00-1.03x. Same bits: no op's bits depend on the thread count.
void optimizer_groups(const OptimGroup* groups, int count, double max_grad_norm, double* norms);

}  // namespace sealkit::cpu
