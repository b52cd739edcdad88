// The decoder: Llama / Qwen2 / Mistral (pre-norm, RMSNorm, rotate-half RoPE, grouped-query causal
// attention, SwiGLU MLP, optional q/k/v bias, tied or untied LM head), written once over the
// Backend interface, with forward, backward, LoRA adapters in numbered slots and AdamW.
//
// A batch packs variable-length sequences one after another (no padding is computed); every
// sequence names an adapter slot (-1 = base model only). LoRA stays unmerged on a side path
// y = W x + s * B (A dropout(x)), applied per run of consecutive sequences sharing a slot, so one
// batch can train or evaluate many adapters at once.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/threadpool.h"
#include "backend.h"
#include "buffer_pool.h"
#include "job_threading.h"

namespace sealkit {

struct ModelConfig {
  int64_t vocab = 0, hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  double rms_eps = 1e-6;
  bool tied = false;
  bool qkv_bias = false;
  std::vector<float> inv_freq;  // head_dim / 2 rotary frequencies (scaling already applied)
};

enum Proj : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumProj };
const char* proj_name(int proj);  // "q_proj", ...
int proj_from_name(const std::string& name);  // -1 when unknown

// A tensor in backend memory with, when trained, its gradient and AdamW moments (f32).
struct Param {
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  float* grad = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  // The weight's copies packed for the backend's GEMM (Backend::pack_weight): [0] for dx = dy W,
  // [1] for y = x W^T. Made on first use by a GEMM that reads one, dropped when the weight changes.
  std::unique_ptr<cpu::PackedWeight> packed[2];
  // Its 12-bit coded copies for decoding (Backend::code_weight): [0] its rows, for one-row GEMMs,
  // [1] its packed strips, for batched decoding; made on first use where the backend codes weights.
  // coded_tried: coding was tried (it may decline: escapes, or no kernel reads one).
  std::unique_ptr<cpu::CodedWeight> coded[2];
  bool coded_tried[2] = {false, false};
  int64_t numel() const { return rows * cols; }
  float* f32() const { return static_cast<float*>(data); }
  WeightView view() const { return WeightView{data, dtype}; }
};

struct AdapterSpec {
  int64_t rank = 8;
  double alpha = 16;
  bool rslora = false;   // scale = alpha / sqrt(rank) instead of alpha / rank
  double dropout = 0;
  uint32_t targets = 0;  // bit p set = projection p adapted
};

struct Adapter {
  AdapterSpec spec;
  float scale = 1;
  std::vector<std::array<Param, kNumProj>> A, B;  // [layer][proj]; A [r, in], B [out, r]
  int64_t step = 0;                                // AdamW steps taken
};

// Keys and values of generated sequences, per layer [capacity rows, kv_heads * head_dim] of dtype
// elements (f32, or bf16 where the backend supports it).
struct KvCache {
  int64_t capacity = 0;
  DType dtype = DType::F32;
  size_t row_bytes = 0;  // one position of one layer's K (or V)
  std::vector<void*> k, v;
  size_t bytes = 0;
};

// One batch, described on the host.
struct Batch {
  std::vector<int32_t> tokens;   // [T]
  std::vector<int32_t> seq_len;  // [S], each >= 1, summing to T
  std::vector<int32_t> slot;     // [S], -1 = base model
  std::vector<int32_t> targets;  // [T] next-token targets (-1 = none) or empty
  std::vector<float> weights;    // [T] loss weight per token (backward only)
  // Generation: sequence s continues a cached sequence. Its tokens sit at positions past[s] + i,
  // their keys/values are stored at cache rows cache_start[s] + past[s] + i, and attention reads
  // cache rows cache_start[s] .. cache_start[s] + past[s] + i.
  KvCache* cache = nullptr;
  std::vector<int32_t> past;         // [S]
  std::vector<int32_t> cache_start;  // [S]
  // Rows whose logits are computed and returned (forward only; empty = every row).
  std::vector<int32_t> logit_rows;
};

struct ForwardResult {
  std::vector<float> loss;    // [T] -log p(target), 0 where target < 0 (empty without targets)
  std::vector<float> logits;  // [T, vocab] when requested
};

struct StepSpec {
  bool full = false;        // step the base parameters
  std::vector<int> slots;   // or step these adapters (each clipped on its own)
  std::vector<double> lrs;  // per slot learning rate (empty = adam.lr for all)
  AdamWParams adam;         // adam.step is ignored: each group counts its own steps
  double max_grad_norm = 0; // <= 0: no clipping
};

class Model {
 public:
  Model(ModelConfig config, std::unique_ptr<Backend> backend, DType storage);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return *backend_; }
  DType storage() const { return storage_; }

  // Base parameters by Hugging Face name (model.layers.0.self_attn.q_proj.weight, ...).
  const std::vector<std::string>& param_names() const { return names_; }
  Param& param(const std::string& name);  // throws for an unknown name
  void set_param(const std::string& name, const void* host, const char* src_dtype, int64_t n);
  std::vector<float> get_param(const std::string& name);
  std::vector<float> get_param_grad(const std::string& name);
  // Random initialisation for pretraining and benchmarks: matrices N(0, std), norms 1, biases 0.
  void init_random(uint64_t seed, float std);

  // Adapters. create: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming-uniform default), B = 0.
  void create_adapter(int slot, const AdapterSpec& spec, uint64_t seed);
  void drop_adapter(int slot);
  bool has_adapter(int slot) const;
  Adapter& adapter(int slot);
  Param& adapter_tensor(int slot, int layer, int proj, bool is_b);
  // W += scale * B A for every adapted projection (f32 storage only); the adapter stays resident.
  void merge_adapter(int slot);
  std::vector<float> read_tensor(const Param& p, bool grad);
  void write_tensor(Param& p, const float* host, int64_t n);

  // Forward pass; with targets, returns per-token losses (logits untouched when want_logits).
  ForwardResult forward(const Batch& batch, bool want_logits);
  // Forward + backward; accumulates gradients into the adapters the batch names, or into every
  // base parameter when train_full. Loss gradient of token t is scaled by batch.weights[t].
  ForwardResult backward(const Batch& batch, bool train_full, uint64_t dropout_seed);
  // Clips and applies AdamW to the named groups, then zeroes their gradients. Returns each
  // group's gradient norm before clipping (full first, then slots in order).
  std::vector<double> step(const StepSpec& spec);
  void zero_grad();

  size_t memory_bytes() const { return bytes_; }
  // Whether decoding codes the bf16 weights (Backend::code_weight): Auto asks the backend once, on
  // the first decoding step (its size rule and SEALKIT_CODED_WEIGHTS), On codes them whatever their
  // size where the backend can, Off never. Set before the first decoding step.
  enum class CodedWeights { Auto, On, Off };
  void set_coded_weights(CodedWeights mode) { coded_mode_ = mode; }
  // Bytes of projection and LM-head weights a decoding step of `rows` sequences reads: their coded
  // copies for that many rows where the model made them (on its first such step, where the backend
  // codes weights), else the weights themselves.
  size_t decode_read_bytes(int64_t rows) const;

  // Runs one job of `tokens` tokens (a forward, a backward, a training step, decoding steps) with its
  // kernels on the pool or inline on this thread, as JobThreading has measured faster for jobs of
  // its kind and size. The CPU backend only; results are the same either way.
  template <typename F>
  auto run_job(JobKind kind, int64_t tokens, F&& job) -> decltype(job()) {
    if (!host_pool_) return job();
    return threading_.run(kind, tokens, global_pool().size(), job);
  }
  std::vector<JobThreading::Report> job_threading() const { return threading_.report(); }

  // KV cache of `rows` positions of `dtype` elements; kv_cache_bytes tells the size before
  // allocating. default_kv_dtype: bf16 when the weights are stored in bf16 and the backend can hold
  // a bf16 cache (as PyTorch keeps a bf16 model's cache in bf16), else f32.
  size_t kv_cache_bytes(int64_t rows, DType dtype) const;
  DType default_kv_dtype() const;
  std::unique_ptr<KvCache> create_cache(int64_t rows, DType dtype);
  void release_cache(KvCache& cache);

 private:
  struct Layer {
    Param norm1, norm2;
    std::array<Param, kNumProj> proj;
    std::array<Param, 3> bias;  // q, k, v (qkv_bias only)
  };
  struct Segment {
    int64_t row0, rows;
    int slot;
  };
  struct Workspace;  // activations, kept per layer when training
  struct Lane;       // one thread's share of a pass: its workspace and scratch (see split_point)

  void* alloc(size_t bytes);
  void release(void* p);
  // f32 buffers of n elements for adapters (weights, gradients, AdamW moments), zeroed, through
  // adapter_buffers_ (buffer_pool.h: a dropped adapter's buffers serve the next one).
  float* take_f32(int64_t n);
  void give_f32(float* p, int64_t n);
  // An adapter's f32 tensor [rows, cols] and its gradient, from take_f32.
  void adapter_param(Param& p, int64_t rows, int64_t cols);
  void alloc_param(Param& p, const std::string& name, int64_t rows, int64_t cols, DType dtype);
  void ensure_grads(Param& p);
  void ensure_moments(Param& p, bool adapter);  // an adapter's come from take_f32
  std::vector<Param*> all_params();
  void validate(const Batch& batch, bool need_targets) const;
  std::vector<Segment> segments(const Batch& batch) const;
  int64_t max_rank(const std::vector<Segment>& segs) const;

  void run(const Batch& batch, bool backward, bool train_full, bool want_logits, uint64_t dropout_seed,
           ForwardResult& result);
  // A pass over `batch` on one lane's workspace and scratch (run's body; both lanes of a split pass
  // run it at once, each on its own thread).
  void run_lane(Lane& lane, const Batch& batch, bool backward, bool train_full, bool want_logits,
                uint64_t dropout_seed, ForwardResult& result);
  // The lane's workspace, (re)built when `batch` needs more than it has (not while lanes run).
  void ensure_workspace(Lane& lane, const Batch& batch, bool backward);
  // Where a LoRA training pass on a small model splits its batch (see model.cc): the index of the
  // first sequence of the second lane, or 0 to run it whole. Rests on the model and the batch only,
  // never on the thread count, so a pass gives the same bits on any number of threads.
  size_t split_point(const Batch& batch, bool backward, bool train_full) const;
  // A training pass as two lanes of sequences (cut = split_point), each lane from the embeddings to
  // its adapters' gradients on one thread; an adapter with sequences in both gets the second lane's
  // sum added to its gradients after both.
  void run_split(const Batch& batch, size_t cut, uint64_t dropout_seed, ForwardResult& result);
  size_t kv_row_bytes(DType dtype) const;  // one cache position of one layer's K (or V)
  // One adapter covers all T rows and targets this projection: its side path can ride on the base
  // GEMM (gemm_with_update).
  bool whole_batch_adapter(int proj, const std::vector<Segment>& segs, int64_t T) const;
  // The batch's T rows are one segment: one adapter over every sequence.
  static bool one_segment(const std::vector<Segment>& segs, int64_t T);
  // Some sequence of the batch names an adapter that targets one of `projs` (a bit per projection).
  bool any_adapter_on(uint32_t projs, const std::vector<Segment>& segs) const;
  // Several adapters' (or one adapter's on some rows) side paths on this projection can ride on the
  // base GEMM as one update with a segment of rows per sequence (cpu::LowRankSegment): each such
  // adapter has the batch's largest rank rmax (the update's depth and its U's row stride) and, when
  // training, no dropout; the weights are bf16 and C (c_elements floats) comes from memory
  // (model.cc has the figures). The caller also asks the backend whether it adds such an update
  // inside the GEMM. SEALKIT_SEGMENTED_UPDATE (read per call): 0 keeps the chains, 1 takes the
  // segmented update whatever C's size (tests), unset decides by the size.
  bool segmented_update(int proj, const std::vector<Segment>& segs, int64_t rmax, bool training,
                        int64_t c_elements) const;
  // That update (in the lane's segments): forward, y += s xa B^T per sequence (U = xa); else the input
  // gradient's dx += dxa A (U = dxa). Each sequence's rows of U at row * rmax.
  cpu::LowRankUpdate segmented_parts(Lane& lane, int layer, int proj, const std::vector<Segment>& segs, const float* U, int64_t rmax,
                                     bool forward);
  // y = x W^T for one projection (no bias, no adapters).
  Gemm base_gemm(int layer, int proj, const float* x, float* y, int64_t T);
  // W's packed copy for a GEMM of `rows` rows in this orientation (null when the backend's GEMM would
  // not read one), made on first use; drop_packed frees both when W changes.
  const cpu::PackedWeight* packed_weight(Param& W, bool transposed, int64_t rows);
  // W's coded copy for a GEMM y = x W^T of `rows` rows (packed: that GEMM's packed_b), null unless
  // the backend codes weights at this model's size and such a GEMM reads one; made on first use,
  // freed by drop_packed.
  const cpu::CodedWeight* coded_weight(Param& W, int64_t rows, const cpu::PackedWeight* packed);
  // The weights a decoding step streams (projections and LM head), and the bytes of the bf16 ones.
  std::vector<const Param*> decode_weights() const;
  size_t streamed_weight_bytes() const;
  void drop_packed(Param& p);
  // The projections projs[0..n) (one input: q, k, v; gate, up) have one adapter over all T rows,
  // without dropout when training: their adapters' xa, and their dA, can each run as one group.
  bool adapter_group(const int* projs, int n, const std::vector<Segment>& segs, int64_t T, bool training) const;
  // xa_i = x A_i^T for an adapter group, as one backend gemm_group.
  void adapter_xa_group(int layer, const int* projs, int n, const float* x, int64_t T,
                        const std::vector<Segment>& segs, float* const* xa, int64_t rmax);
  // dA_i += dxa_i^T x for an adapter group, as one backend gemm_group.
  void adapter_da_group(Lane& lane, int layer, const int* projs, int n, const float* x, int64_t T,
                        const std::vector<Segment>& segs, float* const* dxa);
  // y = x W^T (+ bias) + each adapter's side path; base_done: y already holds x W^T (a group ran it);
  // xa_done: xa already holds x A^T (adapter_xa_group ran it). With swiglu_gate (the up projection,
  // scoring): act = silu(swiglu_gate) * y too, on y's last GEMM where every update rides on it
  // (Backend::gemm_up_swiglu; y is then scratch): returns whether act was made there.
  bool linear_forward(Lane& lane, int layer, int proj, const float* x, float* y, int64_t T, const std::vector<Segment>& segs,
                      float* xa, int64_t rmax, bool training, uint64_t seed, bool base_done = false,
                      bool xa_done = false, const float* swiglu_gate = nullptr, float* swiglu_act = nullptr);
  // dx == nullptr: the input's gradient is not wanted (the first layer's q, k, v when the embeddings
  // do not train); only the weight and adapter gradients are formed. dxa: scratch for the adapters'
  // dxa (T x rmax); defer_da: leave dA to adapter_da_group (dxa then has to outlive this call).
  // swiglu (the down projection, whose dx is SwiGLU's dact): where dx's last product can run as one
  // backend gemm_swiglu_backward, it does, and returns true (dx is then unspecified, SwiGLU's
  // gradients written); else false, and the caller runs swiglu_backward on dx.
  bool linear_backward(Lane& lane, int layer, int proj, const float* x, const float* dy, float* dx, bool accumulate, int64_t T,
                       const std::vector<Segment>& segs, const float* xa, int64_t rmax, bool train_full,
                       uint64_t seed, float* dxa, bool defer_da, const cpu::SwigluGrad* swiglu = nullptr);
  // gs chain by chain (chain_len each) through the backend's gemm_chains, or call by call for one.
  void run_chains(const std::vector<Gemm>& gs, int chain_len);
  int64_t in_dim(int proj) const;
  int64_t out_dim(int proj) const;

  ModelConfig config_;
  std::unique_ptr<Backend> backend_;
  DType storage_;
  size_t bytes_ = 0;
  CodedWeights coded_mode_ = CodedWeights::Auto;
  bool decoding_step_ = false;  // the pass running is a decoding step (Model::run)
  int8_t codes_weights_ = -1;  // whether decoding's GEMMs read coded weights: -1 not yet asked
  BufferPool adapter_buffers_, kv_buffers_;  // kept for reuse (buffer_pool.h)
  std::vector<std::string> names_;
  std::map<std::string, Param*> by_name_;
  Param embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  float* inv_freq_ = nullptr;  // device copy
  std::map<int, std::unique_ptr<Adapter>> adapters_;
  int64_t full_step_ = 0;
  // Lane 0 runs every pass; lane 1 the second half of a split training pass (split_point).
  std::unique_ptr<Lane> lanes_[2];
  std::mutex packed_mutex_;  // packed_weight's copies are made on first use, by either lane
  bool host_pool_ = false;  // the backend's kernels run on global_pool()
  JobThreading threading_;
};

}  // namespace sealkit
