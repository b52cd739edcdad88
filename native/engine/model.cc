#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

#include "../core/env_switch.h"
#include "../core/lane_help.h"
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif
#include "../core/rng.h"

namespace sealkit {

namespace {
constexpr int64_t kGroupRows = 16;    // forward passes of at most this many rows group their projections
constexpr int kAdapterGroupMax = 3;   // projections reading one input: q, k, v
constexpr int kQkv[3] = {kQ, kK, kV}, kGateUp[2] = {kGate, kUp};
constexpr int64_t kLogitChunk = 256;  // rows of logits materialised at once (bounds memory to chunk x vocab)
constexpr size_t kCompactHeadFraction = 16;  // see head_rows
// A segmented update (segmented_update) pays where the per-sequence calls would read and write C's
// rows from memory: C of this many bytes or more (the size at which the GEMM streams C).
constexpr int64_t kSegmentedMinBytes = int64_t(2) << 20;
const char* kProjNames[kNumProj] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

std::string layer_prefix(int64_t l) { return "model.layers." + std::to_string(l) + "."; }
std::string proj_param_name(int64_t l, int p) {
  return layer_prefix(l) + (p <= kO ? "self_attn." : "mlp.") + kProjNames[p] + ".weight";
}
uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
  return (static_cast<uint64_t>(rng_u32(seed, a * 131 + b)) << 32) | rng_u32(seed ^ 0x5eed5eedULL, a * 131 + b);
}

// The rows the LM head runs on when no logits are returned: those with a target and, in training,
// a non-zero loss weight. compact is false, and the head runs on every row, when fewer than one row
// in kCompactHeadFraction is left out (each sequence's last row has no target: gathering and
// scattering to skip those cost the tiny model's step ~1%), or when SEALKIT_COMPACT_HEAD=0 (read
// per call, for A/B measurements and tests).
struct HeadRows {
  bool compact = false;
  std::vector<int32_t> rows, targets;
  std::vector<float> weights;
};
// Whether row t has a loss the head must compute: a target and, in training, a non-zero weight.
bool row_has_loss(const Batch& b, size_t t, bool backward) {
  return b.targets[t] >= 0 && !(backward && b.weights[t] == 0.0f);
}
HeadRows head_rows(const Batch& b, bool backward) {
  HeadRows h;
  if (!switch_on("SEALKIT_COMPACT_HEAD")) return h;
  for (size_t t = 0; t < b.targets.size(); ++t) {
    if (!row_has_loss(b, t, backward)) continue;
    h.rows.push_back(static_cast<int32_t>(t));
    h.targets.push_back(b.targets[t]);
    if (backward) h.weights.push_back(b.weights[t]);
  }
  const size_t left_out = b.tokens.size() - h.rows.size();
  h.compact = left_out > 0 && left_out * kCompactHeadFraction >= b.tokens.size();
  return h;
}
}  // namespace

const char* proj_name(int proj) { return proj >= 0 && proj < kNumProj ? kProjNames[proj] : "?"; }
int proj_from_name(const std::string& name) {
  for (int p = 0; p < kNumProj; ++p)
    if (name == kProjNames[p]) return p;
  return -1;
}

// Device buffers of one forward/backward pass. Per-layer activations are kept only when a
// backward pass follows; buffers are reused across calls and grow only when a batch is larger.
struct Model::Workspace {
  Backend& be;
  size_t bytes = 0;
  int64_t T = 0, kept = 0, rmax = 0;

  struct LayerActs {
    float *xn1, *rstd1, *q, *k, *v, *ao, *lse, *xmid, *xn2, *rstd2, *gate, *up, *act;
    std::array<float*, kNumProj> xa;
  };
  std::vector<float*> resid;  // kept+1 residual-stream buffers [T, H] (or 2 when not keeping)
  std::vector<LayerActs> acts;
  float *xf, *rstdf, *logits;
  int32_t *tokens, *positions, *targets, *seq_start, *seq_len;
  int32_t *cache_rows, *kv_start, *kv_len, *sel_rows;
  float *weights, *loss;
  // the LM head's compact rows (see head_rows)
  int32_t *live_rows, *live_targets;
  float* live_weights;
  // backward scratch
  float *dx, *dxn, *dq, *dk, *dv, *dao, *dgate, *dup, *dact, *drop_a, *drop_b, *dxf;
  // Adapters' dxa = s dy B, one slot (T x rmax) per projection of an adapter group (q, k, v), whose
  // dA run together once all the group's dxa are formed.
  float* dxa;
  float* dxa_slot(int i) const { return dxa + i * T * rmax; }

  // Every buffer is cut from one block (slices 256-byte aligned, as a GPU's vector loads and BLAS
  // like them): one allocation, which the CPU puts on huge pages (huge_pages.h), where one per
  // buffer had left most of them too small for one. The layout runs twice: get() first only
  // measures (returns nullptr), then allocate() makes the block and the second run hands out its
  // slices. Under AddressSanitizer each slice is followed by a poisoned gap in host memory, so an
  // overrun into the next buffer is still caught.
  Workspace(Backend& b, bool host) : be(b), host_(host) {}
  ~Workspace() {
    if (!block_) return;
    unpoison(block_, bytes);
    be.release(block_);
  }
  template <typename P>
  P* get(int64_t n) {
    const size_t b = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(P) + 255) / 256 * 256;
    const size_t at = bytes;
    bytes += b + red_zone();
    if (!block_) return nullptr;
    poison(static_cast<char*>(block_) + at + b, red_zone());
    return reinterpret_cast<P*>(static_cast<char*>(block_) + at);
  }
  void allocate() {
    block_ = be.alloc(bytes);
    bytes = 0;
  }

 private:
#ifdef __SANITIZE_ADDRESS__
  size_t red_zone() const { return host_ ? 256 : 0; }
  void poison(void* p, size_t n) const {
    if (n) __asan_poison_memory_region(p, n);
  }
  void unpoison(void* p, size_t n) const {
    if (host_) __asan_unpoison_memory_region(p, n);
  }
#else
  size_t red_zone() const { return 0; }
  void poison(void*, size_t) const {}
  void unpoison(void*, size_t) const {}
#endif
  bool host_;
  void* block_ = nullptr;
};

struct Model::Lane {
  std::unique_ptr<Workspace> ws;
  // linear_forward's and linear_backward's chains of per-sequence LoRA products (and the adapter
  // slot of each backward chain), kept so that a step allocates nothing.
  std::vector<Gemm> chains;
  std::vector<int> chain_slots;
  std::vector<cpu::LowRankSegment> segments;  // a segmented update's rows, V and scale per sequence
  // A split pass's sequences for this lane, and what its pass returned.
  Batch batch;
  ForwardResult result;
  // The lane is half of a pass over a batch that mixes adapters (or leaves rows without one): its
  // adapters then take the per-sequence paths the whole pass takes, even where the lane holds one
  // adapter only, so that every adapter gets the bits of the whole pass, whatever else the batch
  // holds and wherever the cut falls (SEAL's inner loop regroups its jobs when it resumes).
  bool mixed = false;
  // Lane 1 of a split pass: gradient buffers standing in for the tensors of the adapters whose
  // sequences fall in both lanes (the lanes run at once; these sums are added to the adapters' own
  // afterwards), cut from grad_store.
  std::unordered_map<const Param*, float*> grads;
  std::vector<float> grad_store;
  // Where this lane's pass adds p's gradient.
  float* grad(const Param& p) const {
    const auto it = grads.find(&p);
    return it == grads.end() ? p.grad : it->second;
  }
};

Model::Model(ModelConfig config, std::unique_ptr<Backend> backend, DType storage)
    : config_(std::move(config)), backend_(std::move(backend)), storage_(storage) {
  const auto& c = config_;
  if (c.vocab <= 0 || c.hidden <= 0 || c.intermediate <= 0 || c.layers <= 0 || c.heads <= 0 || c.kv_heads <= 0 ||
      c.head_dim <= 0)
    throw std::invalid_argument("model config: every size must be positive");
  if (c.heads % c.kv_heads != 0) throw std::invalid_argument("model config: heads must be a multiple of kv_heads");
  if (c.head_dim % 2 != 0) throw std::invalid_argument("model config: head_dim must be even (rotary pairs)");
  if (static_cast<int64_t>(c.inv_freq.size()) != c.head_dim / 2)
    throw std::invalid_argument("model config: inv_freq must have head_dim/2 entries");
  if (storage != DType::F32 && storage != DType::BF16) throw std::invalid_argument("storage must be f32 or bf16");
  host_pool_ = backend_->name() == "cpu";
  for (auto& lane : lanes_) lane = std::make_unique<Lane>();

  const int64_t H = c.hidden, I = c.intermediate, Dq = c.heads * c.head_dim, Dkv = c.kv_heads * c.head_dim;
  alloc_param(embed_, "model.embed_tokens.weight", c.vocab, H, storage);
  layers_.resize(static_cast<size_t>(c.layers));
  for (int64_t l = 0; l < c.layers; ++l) {
    Layer& L = layers_[static_cast<size_t>(l)];
    std::string pre = layer_prefix(l);
    alloc_param(L.norm1, pre + "input_layernorm.weight", H, 1, DType::F32);
    const int64_t outs[kNumProj] = {Dq, Dkv, Dkv, H, I, I, H};
    const int64_t ins[kNumProj] = {H, H, H, Dq, H, H, I};
    for (int p = 0; p < kNumProj; ++p) alloc_param(L.proj[p], proj_param_name(l, p), outs[p], ins[p], storage);
    if (c.qkv_bias)
      for (int p = 0; p < 3; ++p)
        alloc_param(L.bias[p], pre + "self_attn." + kProjNames[p] + ".bias", outs[p], 1, DType::F32);
    alloc_param(L.norm2, pre + "post_attention_layernorm.weight", H, 1, DType::F32);
  }
  alloc_param(final_norm_, "model.norm.weight", H, 1, DType::F32);
  if (!c.tied) alloc_param(lm_head_, "lm_head.weight", c.vocab, H, storage);
  inv_freq_ = static_cast<float*>(alloc(c.inv_freq.size() * sizeof(float)));
  backend_->upload(inv_freq_, c.inv_freq.data(), c.inv_freq.size() * sizeof(float));
}

Model::~Model() {
  for (auto& lane : lanes_) lane->ws.reset();
  while (!adapters_.empty()) drop_adapter(adapters_.begin()->first);
  for (BufferPool* pool : {&adapter_buffers_, &kv_buffers_}) bytes_ -= pool->clear(*backend_);
  for (Param* p : all_params()) {
    backend_->release(p->data);
    if (p->grad) backend_->release(p->grad);
    if (p->m) backend_->release(p->m);
    if (p->v) backend_->release(p->v);
  }
  backend_->release(inv_freq_);
}

void* Model::alloc(size_t bytes) {
  void* p = backend_->alloc(bytes);
  bytes_ += bytes;
  return p;
}

float* Model::take_f32(int64_t n) {
  return static_cast<float*>(
      adapter_buffers_.take(*backend_, static_cast<size_t>(n) * sizeof(float), [&](size_t b) { return alloc(b); }));
}

void Model::give_f32(float* p, int64_t n) {
  bytes_ -= adapter_buffers_.give(*backend_, p, static_cast<size_t>(n) * sizeof(float));
}

void Model::adapter_param(Param& p, int64_t rows, int64_t cols) {
  p.dtype = DType::F32;
  p.rows = rows;
  p.cols = cols;
  p.data = take_f32(p.numel());
  p.grad = take_f32(p.numel());
}

void Model::alloc_param(Param& p, const std::string& name, int64_t rows, int64_t cols, DType dtype) {
  p.rows = rows;
  p.cols = cols;
  p.dtype = dtype;
  p.data = alloc(static_cast<size_t>(rows * cols) * dtype_size(dtype));
  if (!name.empty()) {
    names_.push_back(name);
    by_name_[name] = &p;
  }
}

std::vector<Param*> Model::all_params() {
  std::vector<Param*> out;
  for (auto& kv : by_name_) out.push_back(kv.second);
  return out;
}

void Model::ensure_grads(Param& p) {
  if (p.grad) return;
  if (p.dtype != DType::F32)
    throw std::runtime_error("full-parameter training needs f32 weights; load the model with storage f32");
  p.grad = static_cast<float*>(alloc(static_cast<size_t>(p.numel()) * sizeof(float)));
}

void Model::ensure_moments(Param& p, bool adapter) {
  const auto fresh = [&] {
    return adapter ? take_f32(p.numel()) : static_cast<float*>(alloc(static_cast<size_t>(p.numel()) * sizeof(float)));
  };
  if (!p.m) p.m = fresh();
  if (!p.v) p.v = fresh();
}

Param& Model::param(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw std::invalid_argument("unknown parameter '" + name + "'");
  return *it->second;
}

void Model::set_param(const std::string& name, const void* host, const char* src_dtype, int64_t n) {
  Param& p = param(name);
  if (n != p.numel())
    throw std::invalid_argument("parameter '" + name + "': got " + std::to_string(n) + " values, expected " +
                                std::to_string(p.numel()));
  drop_packed(p);
  backend_->upload_converted(p.data, p.dtype, host, src_dtype, n);
}

std::vector<float> Model::read_tensor(const Param& p, bool grad) {
  std::vector<float> out(static_cast<size_t>(p.numel()));
  if (grad) {
    if (p.grad) backend_->download(out.data(), p.grad, out.size() * sizeof(float));
    return out;  // zeros when no gradient was ever accumulated
  }
  if (p.dtype == DType::F32) {
    backend_->download(out.data(), p.data, out.size() * sizeof(float));
  } else {
    std::vector<uint16_t> raw(out.size());
    backend_->download(raw.data(), p.data, raw.size() * 2);
    for (size_t i = 0; i < raw.size(); ++i) out[i] = bf16_to_f32(raw[i]);
  }
  return out;
}

void Model::write_tensor(Param& p, const float* host, int64_t n) {
  if (n != p.numel()) throw std::invalid_argument("tensor size mismatch: got " + std::to_string(n) +
                                                  ", expected " + std::to_string(p.numel()));
  drop_packed(p);
  backend_->upload_converted(p.data, p.dtype, host, "F32", n);
}

std::vector<float> Model::get_param(const std::string& name) { return read_tensor(param(name), false); }
std::vector<float> Model::get_param_grad(const std::string& name) { return read_tensor(param(name), true); }

void Model::init_random(uint64_t seed, float std) {
  uint64_t index = 0;
  for (const std::string& name : names_) {
    Param& p = *by_name_[name];
    drop_packed(p);
    bool is_norm = name.find("norm") != std::string::npos;
    bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    float sd = (is_norm || is_bias) ? 0.0f : std;
    float value = is_norm ? 1.0f : 0.0f;
    if (p.dtype == DType::F32) {
      backend_->fill_normal(p.f32(), p.numel(), mix_seed(seed, index, 0), sd, value);
    } else {
      float* tmp = static_cast<float*>(backend_->alloc(static_cast<size_t>(p.numel()) * sizeof(float)));
      backend_->fill_normal(tmp, p.numel(), mix_seed(seed, index, 0), sd, value);
      std::vector<float> host(static_cast<size_t>(p.numel()));
      backend_->download(host.data(), tmp, host.size() * sizeof(float));
      backend_->release(tmp);
      backend_->upload_converted(p.data, p.dtype, host.data(), "F32", p.numel());
    }
    ++index;
  }
}

// ---- adapters ---------------------------------------------------------------------------------------

int64_t Model::in_dim(int proj) const {
  const auto& c = config_;
  switch (proj) {
    case kO: return c.heads * c.head_dim;
    case kDown: return c.intermediate;
    default: return c.hidden;
  }
}

int64_t Model::out_dim(int proj) const {
  const auto& c = config_;
  switch (proj) {
    case kQ: return c.heads * c.head_dim;
    case kK:
    case kV: return c.kv_heads * c.head_dim;
    case kGate:
    case kUp: return c.intermediate;
    default: return c.hidden;
  }
}

void Model::create_adapter(int slot, const AdapterSpec& spec, uint64_t seed) {
  if (slot < 0) throw std::invalid_argument("adapter slot must be >= 0");
  if (spec.rank <= 0) throw std::invalid_argument("adapter rank must be positive");
  if (spec.targets == 0 || spec.targets >= (1u << kNumProj))
    throw std::invalid_argument("adapter targets must name at least one of q,k,v,o,gate,up,down");
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw std::invalid_argument("adapter dropout must be in [0, 1)");
  drop_adapter(slot);
  auto a = std::make_unique<Adapter>();
  a->spec = spec;
  a->scale = static_cast<float>(spec.rslora ? spec.alpha / std::sqrt(static_cast<double>(spec.rank))
                                            : spec.alpha / static_cast<double>(spec.rank));
  a->A.resize(static_cast<size_t>(config_.layers));
  a->B.resize(static_cast<size_t>(config_.layers));
  for (int64_t l = 0; l < config_.layers; ++l) {
    for (int p = 0; p < kNumProj; ++p) {
      if (!(spec.targets & (1u << p))) continue;
      Param& A = a->A[static_cast<size_t>(l)][p];
      Param& B = a->B[static_cast<size_t>(l)][p];
      adapter_param(A, spec.rank, in_dim(p));
      adapter_param(B, out_dim(p), spec.rank);
      float bound = 1.0f / std::sqrt(static_cast<float>(in_dim(p)));
      backend_->fill_uniform(A.f32(), A.numel(), mix_seed(seed, static_cast<uint64_t>(l), static_cast<uint64_t>(p)),
                             bound);
    }
  }
  adapters_[slot] = std::move(a);
}

void Model::drop_adapter(int slot) {
  auto it = adapters_.find(slot);
  if (it == adapters_.end()) return;
  for (auto* side : {&it->second->A, &it->second->B})
    for (auto& layer : *side)
      for (Param& p : layer)
        for (float* buffer : {p.f32(), p.grad, p.m, p.v}) give_f32(buffer, p.numel());
  adapters_.erase(it);
}

bool Model::has_adapter(int slot) const { return adapters_.count(slot) != 0; }

Adapter& Model::adapter(int slot) {
  auto it = adapters_.find(slot);
  if (it == adapters_.end()) throw std::invalid_argument("no adapter in slot " + std::to_string(slot));
  return *it->second;
}

Param& Model::adapter_tensor(int slot, int layer, int proj, bool is_b) {
  Adapter& a = adapter(slot);
  if (layer < 0 || layer >= config_.layers) throw std::invalid_argument("adapter layer out of range");
  if (proj < 0 || proj >= kNumProj || !(a.spec.targets & (1u << proj)))
    throw std::invalid_argument(std::string("adapter in slot ") + std::to_string(slot) + " does not adapt " +
                                proj_name(proj));
  return is_b ? a.B[static_cast<size_t>(layer)][proj] : a.A[static_cast<size_t>(layer)][proj];
}

void Model::merge_adapter(int slot) {
  Adapter& a = adapter(slot);
  if (storage_ != DType::F32) throw std::runtime_error("merging an adapter needs f32 base weights; load the model with storage f32");
  for (int64_t l = 0; l < config_.layers; ++l)
    for (int p = 0; p < kNumProj; ++p) {
      if (!(a.spec.targets & (1u << p))) continue;
      Param& W = layers_[static_cast<size_t>(l)].proj[p];
      const Param& A = a.A[static_cast<size_t>(l)][p];
      const Param& B = a.B[static_cast<size_t>(l)][p];
      drop_packed(W);  // W changes in place: its packed copies would be stale
      Gemm g;  // W[out, in] += scale * B[out, r] A[r, in]
      g.M = W.rows; g.N = W.cols; g.K = A.rows;
      g.A = B.f32(); g.lda = B.cols;
      g.B = A.view(); g.ldb = A.cols;
      g.C = W.f32(); g.ldc = W.cols; g.alpha = a.scale; g.beta = 1;
      backend_->gemm(g);
    }
}

// ---- batches -----------------------------------------------------------------------------------------

void Model::validate(const Batch& b, bool need_targets) const {
  const int64_t T = static_cast<int64_t>(b.tokens.size());
  if (T == 0) throw std::invalid_argument("batch has no tokens");
  if (b.seq_len.empty()) throw std::invalid_argument("batch has no sequences");
  if (b.slot.size() != b.seq_len.size())
    throw std::invalid_argument("batch: slots has " + std::to_string(b.slot.size()) + " entries, expected one per sequence (" +
                                std::to_string(b.seq_len.size()) + ")");
  int64_t sum = 0;
  for (size_t s = 0; s < b.seq_len.size(); ++s) {
    if (b.seq_len[s] <= 0) throw std::invalid_argument("batch: sequence " + std::to_string(s) + " has length <= 0");
    sum += b.seq_len[s];
    int slot = b.slot[s];
    if (slot < -1 || (slot >= 0 && !has_adapter(slot)))
      throw std::invalid_argument("batch: sequence " + std::to_string(s) + " names adapter slot " + std::to_string(slot) +
                                  ", which holds no adapter");
  }
  if (sum != T)
    throw std::invalid_argument("batch: sequence lengths sum to " + std::to_string(sum) + " but there are " +
                                std::to_string(T) + " tokens");
  for (int64_t t = 0; t < T; ++t)
    if (b.tokens[static_cast<size_t>(t)] < 0 || b.tokens[static_cast<size_t>(t)] >= config_.vocab)
      throw std::invalid_argument("batch: token " + std::to_string(t) + " = " + std::to_string(b.tokens[static_cast<size_t>(t)]) +
                                  " is outside the vocabulary [0, " + std::to_string(config_.vocab) + ")");
  if (b.cache) {
    if (b.past.size() != b.seq_len.size() || b.cache_start.size() != b.seq_len.size())
      throw std::invalid_argument("batch: past and cache_start need one entry per sequence");
    for (size_t s = 0; s < b.seq_len.size(); ++s) {
      if (b.past[s] < 0 || b.cache_start[s] < 0 ||
          static_cast<int64_t>(b.cache_start[s]) + b.past[s] + b.seq_len[s] > b.cache->capacity)
        throw std::invalid_argument("batch: sequence " + std::to_string(s) + " does not fit in the KV cache (" +
                                    std::to_string(b.cache->capacity) + " rows)");
    }
  }
  for (int32_t r : b.logit_rows)
    if (r < 0 || r >= T) throw std::invalid_argument("batch: logit row " + std::to_string(r) + " is outside the batch");
  if (need_targets && b.targets.size() != static_cast<size_t>(T))
    throw std::invalid_argument("batch: targets must have one entry per token");
  if (!b.targets.empty()) {
    if (b.targets.size() != static_cast<size_t>(T)) throw std::invalid_argument("batch: targets must have one entry per token");
    for (int64_t t = 0; t < T; ++t)
      if (b.targets[static_cast<size_t>(t)] < -1 || b.targets[static_cast<size_t>(t)] >= config_.vocab)
        throw std::invalid_argument("batch: target " + std::to_string(t) + " is outside [-1, vocab)");
  }
}

std::vector<Model::Segment> Model::segments(const Batch& b) const {
  std::vector<Segment> segs;
  int64_t row = 0;
  for (size_t s = 0; s < b.seq_len.size(); ++s) {
    int slot = b.slot[s];
    if (slot >= 0) {
      if (!segs.empty() && segs.back().slot == slot && segs.back().row0 + segs.back().rows == row)
        segs.back().rows += b.seq_len[s];
      else
        segs.push_back({row, b.seq_len[s], slot});
    }
    row += b.seq_len[s];
  }
  return segs;
}

int64_t Model::max_rank(const std::vector<Segment>& segs) const {
  int64_t r = 0;
  for (const Segment& s : segs) r = std::max(r, adapters_.at(s.slot)->spec.rank);
  return r;
}

// ---- linear layers with the LoRA side path -------------------------------------------------------------

bool Model::one_segment(const std::vector<Segment>& segs, int64_t T) {
  return segs.size() == 1 && segs[0].row0 == 0 && segs[0].rows == T;
}

bool Model::whole_batch_adapter(int proj, const std::vector<Segment>& segs, int64_t T) const {
  return one_segment(segs, T) && (adapters_.at(segs[0].slot)->spec.targets & (1u << proj));
}

bool Model::any_adapter_on(uint32_t projs, const std::vector<Segment>& segs) const {
  for (const Segment& s : segs)
    if (adapters_.at(s.slot)->spec.targets & projs) return true;
  return false;
}

bool Model::segmented_update(int proj, const std::vector<Segment>& segs, int64_t rmax, bool training,
                             int64_t c_elements) const {
  // bf16 weights and a C from memory only. In-process A/B (`seal bench --ab-env
  // SEALKIT_SEGMENTED_UPDATE=0`, AMD Zen 5), bf16 SmolLM2-135M: LoRA step of 4 adapters x 256 tokens
  // 1.042-1.047x, of 16 x 64 1.016-1.028x, scoring 16 x 64 1.014-1.028x. A C in cache (the tiny
  // preset's, 1.5 MB or less) gains nothing there: its per-sequence calls run in parallel chains
  // with their rows at hand (tiny scoring 16 x 64 0.95x with, training 1.01x). Next to f32 tiles
  // (f32 FMA at depth r themselves) the updates cost about what the calls do (f32 SmolLM2 step
  // 1.012x, scoring 0.983x; tiny f32 16 x 64 steps 0.983-0.988x).
  if (storage_ != DType::BF16) return false;
  const bool from_memory = c_elements * static_cast<int64_t>(sizeof(float)) >= kSegmentedMinBytes;
  bool any = false;
  for (const Segment& s : segs) {
    const AdapterSpec& spec = adapters_.at(s.slot)->spec;
    if (!(spec.targets & (1u << proj))) continue;
    if (spec.rank != rmax || (training && spec.dropout > 0)) return false;
    any = true;
  }
  return any && switch_on_or("SEALKIT_SEGMENTED_UPDATE", from_memory);
}

cpu::LowRankUpdate Model::segmented_parts(Lane& lane, int layer, int proj, const std::vector<Segment>& segs,
                                          const float* U, int64_t rmax, bool forward) {
  std::vector<cpu::LowRankSegment>& parts = lane.segments;
  parts.clear();
  for (const Segment& s : segs) {
    const Adapter& a = *adapters_.at(s.slot);
    if (!(a.spec.targets & (1u << proj))) continue;
    const Param& V = forward ? a.B[static_cast<size_t>(layer)][proj] : a.A[static_cast<size_t>(layer)][proj];
    cpu::LowRankSegment part;
    part.row0 = s.row0; part.rows = s.rows;
    part.V = V.f32(); part.ldv = V.cols; part.scale = forward ? a.scale : 1.f;
    parts.push_back(part);
  }
  cpu::LowRankUpdate up;
  up.U = U; up.ldu = rmax; up.rank = rmax; up.trans_v = forward;
  up.segments = parts.data(); up.n_segments = static_cast<int>(parts.size());
  return up;
}

Gemm Model::base_gemm(int layer, int proj, const float* x, float* y, int64_t T) {
  Param& W = layers_[static_cast<size_t>(layer)].proj[proj];
  Gemm g;
  g.M = T; g.N = W.rows; g.K = W.cols;
  g.A = x; g.lda = W.cols;
  g.B = W.view(); g.ldb = W.cols; g.trans_b = true;
  g.C = y; g.ldc = W.rows;
  g.packed_b = packed_weight(W, true, T);
  g.coded_b = coded_weight(W, T, g.packed_b);
  return g;
}

const cpu::PackedWeight* Model::packed_weight(Param& W, bool transposed, int64_t rows) {
  // A weight that trains (full fine-tuning gave it a gradient) changes every step: a copy would be
  // freed and made again each step, its fresh pages faulted in; the GEMM packs it per call instead,
  // into scratch it keeps.
  if (W.grad || !backend_->reads_packed_weight(rows, W.dtype, transposed)) return nullptr;
  std::lock_guard<std::mutex> lock(packed_mutex_);  // the two lanes of a split pass may both ask first
  std::unique_ptr<cpu::PackedWeight>& slot = W.packed[transposed ? 1 : 0];
  if (!slot) {
    slot = backend_->pack_weight(W.view(), W.rows, W.cols, transposed);
    if (slot) bytes_ += slot->bytes;
  }
  return slot.get();
}

namespace {
// Param::coded's slot for GEMMs of `rows` rows: the rows for one, the packed strips for 2-16 (the
// CPU's few-rows GEMMs); -1 past that (no coded copy; a batch of 17 must not mark the strips tried).
int coded_slot(int64_t rows) { return rows == 1 ? 0 : rows >= 2 && rows <= 16 ? 1 : -1; }
}  // namespace

const cpu::CodedWeight* Model::coded_weight(Param& W, int64_t rows, const cpu::PackedWeight* packed) {
  // Decoding steps only (a short prompt's prefill would code the strips for one call); as
  // packed_weight, a weight that trains changes every step.
  const int slot = coded_slot(rows);
  if (!decoding_step_ || slot < 0 || W.grad || W.dtype != DType::BF16) return nullptr;
  // Asked once per model (the answer rests on its size and the environment at its first decode);
  // On asks as if the weights were far larger than any cache.
  if (codes_weights_ < 0) {
    const size_t bytes = coded_mode_ == CodedWeights::On ? SIZE_MAX / 4 : streamed_weight_bytes();
    codes_weights_ = coded_mode_ != CodedWeights::Off && backend_->codes_weights(bytes) ? 1 : 0;
  }
  if (!codes_weights_) return nullptr;
  if (!W.coded_tried[slot]) {
    W.coded_tried[slot] = true;
    W.coded[slot] = backend_->code_weight(W.view(), W.rows, W.cols, rows, packed);
    if (W.coded[slot]) bytes_ += W.coded[slot]->bytes;
  }
  return W.coded[slot].get();
}

std::vector<const Param*> Model::decode_weights() const {
  std::vector<const Param*> ws;
  for (const Layer& L : layers_)
    for (const Param& p : L.proj) ws.push_back(&p);
  ws.push_back(config_.tied ? &embed_ : &lm_head_);
  return ws;
}

size_t Model::streamed_weight_bytes() const {
  size_t bytes = 0;
  for (const Param* p : decode_weights())
    if (p->dtype == DType::BF16) bytes += static_cast<size_t>(p->numel()) * 2;
  return bytes;
}

size_t Model::decode_read_bytes(int64_t rows) const {
  const int slot = coded_slot(rows);
  size_t bytes = 0;
  for (const Param* p : decode_weights()) {
    const cpu::CodedWeight* cw = slot >= 0 ? p->coded[slot].get() : nullptr;
    bytes += cw ? cw->bytes : static_cast<size_t>(p->numel()) * dtype_size(p->dtype);
  }
  return bytes;
}

void Model::drop_packed(Param& p) {
  for (std::unique_ptr<cpu::PackedWeight>& slot : p.packed)
    if (slot) {
      bytes_ -= slot->bytes;
      slot.reset();
    }
  for (size_t i = 0; i < 2; ++i) {
    if (p.coded[i]) bytes_ -= p.coded[i]->bytes;
    p.coded[i].reset();
    p.coded_tried[i] = false;
  }
}

namespace {
// xa = x A^T  [rows, r] for rows of x (in wide), ldc rmax.
Gemm adapter_xa_gemm(const Param& A, const float* x, int64_t rows, int64_t in, float* xa, int64_t rmax) {
  Gemm g;
  g.M = rows; g.N = A.rows; g.K = in;
  g.A = x; g.lda = in;
  g.B = A.view(); g.ldb = in; g.trans_b = true;
  g.C = xa; g.ldc = rmax;
  return g;
}

// y += s xa B^T  [rows, out].
Gemm adapter_xb_gemm(const Param& A, const Param& B, const float* xa, int64_t rmax, int64_t rows, int64_t out, float* y,
                     float scale) {
  Gemm g;
  g.M = rows; g.N = out; g.K = A.rows;
  g.A = xa; g.lda = rmax;
  g.B = B.view(); g.ldb = B.cols; g.trans_b = true;
  g.C = y; g.ldc = out;
  g.alpha = scale; g.beta = 1;
  return g;
}

// dx += dxa A  [rows, in] (dxa [rows, r]).
Gemm adapter_dx_gemm(const Param& A, const float* dxa, int64_t rows, int64_t in, float* dx) {
  Gemm g;
  g.M = rows; g.N = in; g.K = A.rows;
  g.A = dxa; g.lda = A.rows;
  g.B = A.view(); g.ldb = in;
  g.C = dx; g.ldc = in; g.beta = 1;
  return g;
}

// dA += dxa^T x  [r, in] over rows of x, into `grad` (A's gradient, or a lane's stand-in).
Gemm adapter_da_gemm(const Param& A, float* grad, const float* dxa, const float* x, int64_t rows, int64_t in) {
  Gemm g;
  g.M = A.rows; g.N = in; g.K = rows;
  g.A = dxa; g.lda = A.rows; g.trans_a = true;
  g.B = WeightView{x, DType::F32}; g.ldb = in;
  g.C = grad; g.ldc = in; g.beta = 1;
  return g;
}
}  // namespace

bool Model::adapter_group(const int* projs, int n, const std::vector<Segment>& segs, int64_t T, bool training) const {
  for (int i = 0; i < n; ++i)
    if (!whole_batch_adapter(projs[i], segs, T)) return false;
  return !(training && adapters_.at(segs[0].slot)->spec.dropout > 0);
}

void Model::adapter_xa_group(int layer, const int* projs, int n, const float* x, int64_t T,
                             const std::vector<Segment>& segs, float* const* xa, int64_t rmax) {
  const Adapter& a = *adapters_.at(segs[0].slot);
  Gemm gs[kAdapterGroupMax];
  for (int i = 0; i < n; ++i)
    gs[i] = adapter_xa_gemm(a.A[static_cast<size_t>(layer)][projs[i]], x, T, in_dim(projs[i]), xa[i], rmax);
  backend_->gemm_group(gs, n);
}

void Model::adapter_da_group(Lane& lane, int layer, const int* projs, int n, const float* x, int64_t T,
                             const std::vector<Segment>& segs, float* const* dxa) {
  Adapter& a = *adapters_.at(segs[0].slot);
  Gemm gs[kAdapterGroupMax];
  for (int i = 0; i < n; ++i) {
    const Param& A = a.A[static_cast<size_t>(layer)][projs[i]];
    gs[i] = adapter_da_gemm(A, lane.grad(A), dxa[i], x, T, in_dim(projs[i]));
  }
  backend_->gemm_group(gs, n);
}

bool Model::linear_forward(Lane& lane, int layer, int proj, const float* x, float* y, int64_t T, const std::vector<Segment>& segs,
                           float* xa, int64_t rmax, bool training, uint64_t seed, bool base_done, bool xa_done,
                           const float* swiglu_gate, float* swiglu_act) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  const Param& W = L.proj[proj];
  const int64_t in = W.cols, out = W.rows;
  const Gemm g = base_gemm(layer, proj, x, y, T);
  const bool bias = proj <= kV && config_.qkv_bias;
  // y's last GEMM, with the update u (if any) on it, and SwiGLU's forward pass where asked.
  const bool swiglu = swiglu_gate && !bias;
  auto last_gemm = [&](const cpu::LowRankUpdate* u) {
    if (swiglu) backend_->gemm_up_swiglu(g, u, swiglu_gate, swiglu_act);
    else if (u) backend_->gemm_with_update(g, *u);
    else backend_->gemm(g);
    return swiglu;
  };
  // One adapter over the whole batch (training, a single sequence's scoring) and no bias to add in
  // between: its y += s xa B^T rides on the base GEMM's tiles (same bits as the separate call).
  const bool fuse = !base_done && !bias && !lane.mixed && whole_batch_adapter(proj, segs, T);
  // A batch mixing adapters (segmented_update has when, and the figures): every sequence's xa first
  // (a chain each), then the base GEMM with each sequence's y += s xa B^T on its own rows, same bits
  // as the per-sequence calls of the chains below, which read and write y's rows once more.
  if (!fuse && !base_done && !bias && segmented_update(proj, segs, rmax, training, T * out)) {
    const cpu::LowRankUpdate up = segmented_parts(lane, layer, proj, segs, xa, rmax, true);
    if (backend_->adds_update_on_tiles(g, up)) {
      std::vector<Gemm>& xas = lane.chains;
      xas.clear();
      for (const Segment& s : segs) {
        Adapter& a = *adapters_.at(s.slot);
        if (!(a.spec.targets & (1u << proj)) || xa_done) continue;
        xas.push_back(adapter_xa_gemm(a.A[static_cast<size_t>(layer)][proj], x + s.row0 * in, s.rows, in,
                                      xa + s.row0 * rmax, rmax));
      }
      run_chains(xas, 1);
      return last_gemm(&up);
    }
  }
  // No adapter on this projection in the batch: its GEMM is all of y.
  if (!fuse && !base_done && swiglu && !any_adapter_on(1u << proj, segs)) return last_gemm(nullptr);
  if (!fuse && !base_done) backend_->gemm(g);
  if (bias) backend_->add_row_bias(y, L.bias[proj].f32(), T, out);
  // A batch that mixes adapters: each sequence's xa and y += s xa B^T form one chain, and the
  // sequences' chains run as one backend call (gemm_chains) rather than two calls per sequence.
  std::vector<Gemm>& chains = lane.chains;
  chains.clear();
  for (const Segment& s : segs) {
    Adapter& a = *adapters_.at(s.slot);
    if (!(a.spec.targets & (1u << proj))) continue;
    const Param& A = a.A[static_cast<size_t>(layer)][proj];
    const Param& B = a.B[static_cast<size_t>(layer)][proj];
    const float* xs = x + s.row0 * in;
    const bool drop = training && a.spec.dropout > 0;
    if (drop) {
      float* tmp = lane.ws->drop_a;
      backend_->dropout(xs, tmp, s.rows, in, s.row0, static_cast<float>(a.spec.dropout), seed);
      xs = tmp;
    }
    float* xas = xa + s.row0 * rmax;
    if (!drop && !fuse && !xa_done) {
      chains.push_back(adapter_xa_gemm(A, xs, s.rows, in, xas, rmax));
      chains.push_back(adapter_xb_gemm(A, B, xas, rmax, s.rows, out, y + s.row0 * out, a.scale));
      continue;
    }
    if (!xa_done) backend_->gemm(adapter_xa_gemm(A, xs, s.rows, in, xas, rmax));  // xa = x A^T
    if (fuse) {  // y = x W^T + s xa B^T
      cpu::LowRankUpdate up;
      up.U = xas; up.ldu = rmax;
      up.V = B.f32(); up.ldv = B.cols; up.trans_v = true;
      up.rank = A.rows; up.scale = a.scale;
      return last_gemm(&up);  // the one segment
    }
    backend_->gemm(adapter_xb_gemm(A, B, xas, rmax, s.rows, out, y + s.row0 * out, a.scale));
  }
  run_chains(chains, 2);
  return false;
}

void Model::run_chains(const std::vector<Gemm>& gs, int chain_len) {
  const int n = static_cast<int>(gs.size()) / chain_len;
  if (n > 1) backend_->gemm_chains(gs.data(), n, chain_len);
  else
    for (const Gemm& g : gs) backend_->gemm(g);
}

bool Model::linear_backward(Lane& lane, int layer, int proj, const float* x, const float* dy, float* dx, bool accumulate, int64_t T,
                            const std::vector<Segment>& segs, const float* xa, int64_t rmax, bool train_full,
                            uint64_t seed, float* dxa, bool defer_da, const cpu::SwigluGrad* swiglu) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  Param& W = L.proj[proj];
  const int64_t in = W.cols, out = W.rows;
  Gemm g;  // dx (+)= dy W
  g.M = T; g.N = in; g.K = out;
  g.A = dy; g.lda = out;
  g.B = W.view(); g.ldb = in;
  g.C = dx; g.ldc = in; g.beta = accumulate ? 1.0f : 0.0f;
  if (dx) g.packed_b = packed_weight(W, false, T);
  // One adapter over the whole batch without dropout: its dx += dxa A rides on this GEMM's tiles
  // (same bits as the separate call), so this GEMM runs after the adapter's other products.
  const bool fuse = dx && !lane.mixed && adapter_group(&proj, 1, segs, T, true);
  // A batch mixing adapters: each sequence's dx += dxa A rides on this GEMM's tiles as one segmented
  // update (its rows, its A), after the chains below have made every dxa.
  cpu::LowRankUpdate seg_update;
  bool segmented = false;
  if (dx && !fuse && !defer_da && segmented_update(proj, segs, rmax, true, T * in)) {
    seg_update = segmented_parts(lane, layer, proj, segs, dxa, rmax, false);
    segmented = backend_->adds_update_on_tiles(g, seg_update);
  }
  // SwiGLU's backward pass rides on dx's GEMM when that GEMM completes dx: it carries the adapters'
  // updates (fuse, segmented), or no adapter adds to dx after it. (It needs dx = dact alone:
  // accumulate off.)
  const bool swiglu_here = swiglu && dx && !accumulate && (fuse || segmented || !any_adapter_on(1u << proj, segs));
  if (dx && !fuse && !segmented) {
    if (swiglu_here) backend_->gemm_swiglu_backward(g, nullptr, *swiglu);
    else backend_->gemm(g);
  }
  if (train_full) {
    Gemm gw;  // dW += dy^T x
    gw.M = out; gw.N = in; gw.K = T;
    gw.A = dy; gw.lda = out; gw.trans_a = true;
    gw.B = WeightView{x, DType::F32}; gw.ldb = in;
    gw.C = W.grad; gw.ldc = in; gw.beta = 1;
    backend_->gemm(gw);
    if (proj <= kV && config_.qkv_bias) backend_->bias_backward(dy, L.bias[proj].grad, T, out);
  }
  // A batch that mixes adapters: each sequence's dB, dxa, dA, dx form one chain (its dxa in its own
  // rows of the scratch), and the chains run as backend gemm_chains calls. Two sequences of one
  // adapter add to the same gradients, so a chain whose adapter already has one in the call waits
  // for the next call (each gradient still receives its sums in sequence order).
  const bool chained = !fuse && !defer_da;
  const int chain_len = dx && !segmented ? 4 : 3;
  std::vector<Gemm>& chains = lane.chains;
  chains.clear();
  std::vector<int>& chain_slots = lane.chain_slots;
  chain_slots.clear();
  for (const Segment& s : segs) {
    Adapter& a = *adapters_.at(s.slot);
    if (!(a.spec.targets & (1u << proj))) continue;
    Param& A = a.A[static_cast<size_t>(layer)][proj];
    Param& B = a.B[static_cast<size_t>(layer)][proj];
    const int64_t r = A.rows;
    const float* dys = dy + s.row0 * out;
    const float* xas = xa + s.row0 * rmax;
    const float* xs = x + s.row0 * in;
    const bool drop = a.spec.dropout > 0;
    if (drop) {  // regenerate the forward pass's dropped input from the same counter-based mask
      backend_->dropout(xs, lane.ws->drop_a, s.rows, in, s.row0, static_cast<float>(a.spec.dropout), seed);
      xs = lane.ws->drop_a;
    }
    Gemm gb;  // dB += s dy^T xa
    gb.M = out; gb.N = r; gb.K = s.rows;
    gb.A = dys; gb.lda = out; gb.trans_a = true;
    gb.B = WeightView{xas, DType::F32}; gb.ldb = rmax;
    gb.C = lane.grad(B); gb.ldc = r; gb.alpha = a.scale; gb.beta = 1;
    Gemm gd;  // dxa = s dy B
    gd.M = s.rows; gd.N = r; gd.K = out;
    gd.A = dys; gd.lda = out;
    gd.B = B.view(); gd.ldb = r;
    gd.C = dxa; gd.ldc = r; gd.alpha = a.scale;
    if (chained && !drop) {
      if (std::find(chain_slots.begin(), chain_slots.end(), s.slot) != chain_slots.end()) {
        run_chains(chains, chain_len);
        chains.clear();
        chain_slots.clear();
      }
      chain_slots.push_back(s.slot);
      gd.C = dxa + s.row0 * rmax;  // rows x r, inside this sequence's rows x rmax of the scratch
      chains.push_back(gb);
      chains.push_back(gd);
      chains.push_back(adapter_da_gemm(A, lane.grad(A), gd.C, xs, s.rows, in));
      if (dx && !segmented) chains.push_back(adapter_dx_gemm(A, gd.C, s.rows, in, dx + s.row0 * in));
      continue;
    }
    backend_->gemm(gb);
    backend_->gemm(gd);
    if (!defer_da) backend_->gemm(adapter_da_gemm(A, lane.grad(A), dxa, xs, s.rows, in));  // dA += dxa^T x
    if (fuse) {  // dx (+)= dy W + dxa A
      cpu::LowRankUpdate up;
      up.U = dxa; up.ldu = r;
      up.V = A.f32(); up.ldv = in;
      up.rank = r; up.scale = 1;
      if (swiglu_here) backend_->gemm_swiglu_backward(g, &up, *swiglu);
      else backend_->gemm_with_update(g, up);
      continue;
    }
    if (!dx) continue;
    if (!drop) {
      backend_->gemm(adapter_dx_gemm(A, dxa, s.rows, in, dx + s.row0 * in));
    } else {  // dx += dxa A through the dropout mask
      Gemm gx = adapter_dx_gemm(A, dxa, s.rows, in, lane.ws->drop_b);
      gx.beta = 0;
      backend_->gemm(gx);
      backend_->dropout(lane.ws->drop_b, lane.ws->drop_b, s.rows, in, s.row0, static_cast<float>(a.spec.dropout), seed);
      backend_->axpy(dx + s.row0 * in, lane.ws->drop_b, s.rows * in, 1.0f);
    }
  }
  run_chains(chains, chain_len);
  if (segmented) {  // dx (+)= dy W + each sequence's dxa A on its rows
    if (swiglu_here) backend_->gemm_swiglu_backward(g, &seg_update, *swiglu);
    else backend_->gemm_with_update(g, seg_update);
  }
  return swiglu_here;
}

// ---- the pass ------------------------------------------------------------------------------------------

ForwardResult Model::forward(const Batch& batch, bool want_logits) {
  validate(batch, false);
  ForwardResult r;
  run(batch, false, false, want_logits, 0, r);
  return r;
}

ForwardResult Model::backward(const Batch& batch, bool train_full, uint64_t dropout_seed) {
  validate(batch, true);
  if (batch.weights.size() != batch.tokens.size()) throw std::invalid_argument("batch: weights must have one entry per token");
  if (batch.cache || !batch.logit_rows.empty()) throw std::invalid_argument("backward: generation batches cannot be trained");
  if (!train_full && segments(batch).empty())
    throw std::invalid_argument("backward: nothing to train (no sequence names an adapter and train_full is off)");
  if (train_full)
    for (Param* p : all_params()) ensure_grads(*p);
  ForwardResult r;
  run(batch, true, train_full, false, dropout_seed, r);
  return r;
}

void Model::run(const Batch& batch, bool backward, bool train_full, bool want_logits, uint64_t dropout_seed,
                ForwardResult& result) {
  // A decoding step (one new token per cached sequence) reads coded weights where the model codes
  // them; a prefill or a scoring pass of as few rows does not make them (coded_weight).
  decoding_step_ =
      batch.cache && std::all_of(batch.seq_len.begin(), batch.seq_len.end(), [](int32_t n) { return n == 1; });
  if (const size_t cut = split_point(batch, backward, train_full)) {
    run_split(batch, cut, dropout_seed, result);
    return;
  }
  Lane& lane = *lanes_[0];
  lane.mixed = false;
  ensure_workspace(lane, batch, backward);
  run_lane(lane, batch, backward, train_full, want_logits, dropout_seed, result);
}

namespace {
// Largest hidden size whose LoRA training passes split into two lanes unless SEALKIT_SPLIT_STEP says
// otherwise (see Model::split_point).
constexpr int64_t kSplitMaxHidden = 256;
// Rows a lane's GEMMs need beyond the few-rows kernels' (cpu gemm.cc: up to 16 rows of a bf16
// weight, 4 of an f32 one).
constexpr int64_t kSplitMinRows = 16;
}  // namespace

// A small model's training pass is a long run of short ops (the tiny preset's 4 x 256 LoRA step:
// ~150 backend calls of 20-100 us), each split across the pool's threads and ended by a barrier,
// where the threads wait on each other's share. Split by sequences instead, each thread runs its
// lane's whole pass, from the embeddings to the adapters' gradients, with no barrier on the way.
// Measured before it was built: two processes of one thread on half the batch each against one of
// two threads on all of it (2-vCPU AMD Zen 5 VM): tiny 4 x 256 1.21-1.26x, 16 adapters x 20 tokens
// on f32 weights (the demo's shape) 1.16-1.25x, 16 x 64 bf16 1.10x. Built, in process against the
// whole pass (SEALKIT_SPLIT_STEP=0): 1.14x, 1.05-1.09x and 1.04-1.06x; SmolLM2-135M's step level,
// hence the size rule (docs/performance-log.md).
//
// The cut rests on the batch and the model only, never on the thread count: on one thread (or in a
// job that runs inline), and on more than two threads, where each lane's ops then take the whole pool,
// the two lanes run one after the other, with the same bits. Every op's rows
// are computed as in the whole batch, and in a batch that mixes adapters the cut falls between
// adapters' runs of sequences and every adapter takes the whole pass's per-sequence paths in its
// lane (Lane::mixed): such a batch gets the whole pass's bits, whatever else it holds. A batch of one
// adapter runs it over each lane's rows at once, as the whole pass does over all of them, and adds
// the second lane's sum to the first's: a different rounding of the same sums. A backend
// that cannot take two callers at once (the profiler, whose records are not shared across threads)
// runs the lanes one after the other, with the same bits. Not split: dropout (its masks are keyed by
// the row in the whole batch), full training (every weight's gradient would need a second copy),
// generation, and the GPU (no pool to wait on).
size_t Model::split_point(const Batch& b, bool backward, bool train_full) const {
  const size_t S = b.seq_len.size();
  if (!backward || train_full || !host_pool_ || b.cache || S < 2) return 0;
  for (size_t s = 0; s < S; ++s)
    if (b.slot[s] >= 0 && adapters_.at(b.slot[s])->spec.dropout > 0) return 0;
  // SEALKIT_SPLIT_STEP (read per call): 0 never, 1 at any size (tests), unset by the model's width.
  if (!switch_on_or("SEALKIT_SPLIT_STEP", config_.hidden <= kSplitMaxHidden)) return 0;
  // The cut between sequences that evens the lanes' tokens most (the first such). In a batch that
  // mixes adapters, not inside an adapter's run of sequences: the whole pass sums its gradients over
  // that run at once (one segment), and so must the lane that holds it.
  const int64_t T = static_cast<int64_t>(b.tokens.size());
  const bool one_adapter = one_segment(segments(b), T);
  // And none of a lane's GEMMs (the projections over its rows, the LM head over its rows with a loss
  // or all of them, in chunks of kLogitChunk) may be short enough for the few-rows kernels, whose
  // sums run in another order: the rows must take the whole pass's path. A pass whose own GEMMs are
  // that short is not split at all (its lanes' could not match them).
  const auto packed_rows = [](int64_t rows) {
    const int64_t tail = rows % kLogitChunk;
    return rows > kSplitMinRows && (tail == 0 || tail > kSplitMinRows);
  };
  // A lane of `rows` rows, `live` of them with a loss (the LM head's rows when it runs compact).
  const auto lane_ok = [&](int64_t rows, int64_t live) {
    return packed_rows(rows) && (live == 0 || packed_rows(live));
  };
  // Rows with a loss before each sequence's end, counted once.
  std::vector<int64_t> live_before(S + 1, 0);
  for (size_t s = 0, t = 0; s < S; ++s) {
    int64_t n = live_before[s];
    for (int32_t i = 0; i < b.seq_len[s]; ++i, ++t) n += row_has_loss(b, t, true);
    live_before[s + 1] = n;
  }
  const int64_t live = live_before[S];
  if (!lane_ok(T, live)) return 0;
  int64_t before = 0, best = -1;
  size_t cut = 0;
  for (size_t s = 0; s + 1 < S; ++s) {
    before += b.seq_len[s];
    if (!one_adapter && b.slot[s] >= 0 && b.slot[s + 1] == b.slot[s]) continue;
    const int64_t gap = std::abs(2 * before - T);
    if ((best < 0 || gap < best) && lane_ok(before, live_before[s + 1]) && lane_ok(T - before, live - live_before[s + 1])) {
      best = gap;
      cut = s + 1;
    }
  }
  return cut;
}

void Model::run_split(const Batch& batch, size_t cut, uint64_t dropout_seed, ForwardResult& result) {
  const size_t S = batch.seq_len.size();
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  int64_t rows0 = 0;
  for (size_t s = 0; s < cut; ++s) rows0 += batch.seq_len[s];
  // Each lane's sequences as a batch of their own (kept in the lane: no allocation once grown).
  auto slice = [&](Batch& out, size_t s0, size_t s1, int64_t r0, int64_t r1) {
    out.tokens.assign(batch.tokens.begin() + r0, batch.tokens.begin() + r1);
    out.seq_len.assign(batch.seq_len.begin() + static_cast<int64_t>(s0), batch.seq_len.begin() + static_cast<int64_t>(s1));
    out.slot.assign(batch.slot.begin() + static_cast<int64_t>(s0), batch.slot.begin() + static_cast<int64_t>(s1));
    if (batch.targets.empty()) out.targets.clear();
    else out.targets.assign(batch.targets.begin() + r0, batch.targets.begin() + r1);
    out.weights.assign(batch.weights.begin() + r0, batch.weights.begin() + r1);
  };
  Lane& first = *lanes_[0];
  Lane& second = *lanes_[1];
  slice(first.batch, 0, cut, 0, rows0);
  slice(second.batch, cut, S, rows0, T);
  first.mixed = second.mixed = !one_segment(segments(batch), T);
  // Adapters with sequences in both lanes: the second lane sums their gradients into its own
  // zeroed buffers, added to theirs once both lanes are done.
  const std::vector<int32_t>& slots = first.batch.slot;
  std::vector<int32_t> both;
  for (const int32_t slot : second.batch.slot)
    if (slot >= 0 && std::find(slots.begin(), slots.end(), slot) != slots.end() &&
        std::find(both.begin(), both.end(), slot) == both.end())
      both.push_back(slot);
  std::vector<Param*> shared;
  size_t floats = 0;
  for (const int32_t slot : both) {
    Adapter& a = *adapters_.at(slot);
    for (auto* side : {&a.A, &a.B})
      for (auto& layer : *side)
        for (Param& p : layer)
          if (p.data) {
            shared.push_back(&p);
            floats += static_cast<size_t>(p.numel());
          }
  }
  if (second.grad_store.size() < floats) {
    bytes_ += (floats - second.grad_store.size()) * sizeof(float);
    second.grad_store.resize(floats);
  }
  std::fill_n(second.grad_store.begin(), floats, 0.0f);
  second.grads.clear();
  size_t at = 0;
  for (Param* p : shared) {
    second.grads[p] = second.grad_store.data() + at;
    at += static_cast<size_t>(p->numel());
  }
  ensure_workspace(first, first.batch, true);
  ensure_workspace(second, second.batch, true);
  auto run_one = [&](Lane& lane) {
    lane.result.loss.clear();
    run_lane(lane, lane.batch, true, false, false, dropout_seed, lane.result);
  };
  // On a pool of exactly two threads, one lane per thread, its kernels inline (a pool run from
  // inside a task would wait for the run that holds the pool). Elsewhere the lanes run one after the
  // other, each op on the whole pool: on more threads two lanes of one thread each would leave the
  // rest idle (the pool does not nest); on one thread (or inside an inline job) there is no other.
  // The lane done first lends its thread to the other (LaneHelp: same bits). SEALKIT_LANE_HELP (read
  // per call): 0 turns that off, for benchmarks; "wait" has the first lane start only once the
  // second has finished and serves it (up to a second), so tests can run a whole pass helped.
  if (backend_->concurrent_calls() && global_pool().threads() == 2) {
    LaneHelp help;
    const char* mode = std::getenv("SEALKIT_LANE_HELP");  // read once: unset, "0", "wait" or on
    const bool lend = switch_value_on(mode), wait = mode && std::strcmp(mode, "wait") == 0;
    global_pool().run(2, [&](int64_t i, int) {
      InlineRuns on_this_thread(true);
      if (!lend) {
        run_one(*lanes_[i]);
        return;
      }
      help.lane_started();
      if (wait && i == 0) help.wait_for_helper(1.0);
      try {
        LaneHelpScope helped(&help);
        run_one(*lanes_[i]);
      } catch (...) {
        help.lane_done(true);
        throw;
      }
      help.lane_done(false);
    });
  } else {
    run_one(first);
    run_one(second);
  }
  for (Param* p : shared) backend_->axpy(p->grad, second.grads.at(p), p->numel(), 1.0f);
  second.grads.clear();
  result.loss = first.result.loss;
  result.loss.insert(result.loss.end(), second.result.loss.begin(), second.result.loss.end());
}

void Model::ensure_workspace(Lane& lane, const Batch& batch, bool backward) {
  const auto& c = config_;
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  const int64_t H = c.hidden, I = c.intermediate, V = c.vocab, hd = c.head_dim;
  const int64_t Dq = c.heads * hd, Dkv = c.kv_heads * hd;
  const int64_t rmax = std::max<int64_t>(max_rank(segments(batch)), 1);
  const int64_t kept = backward ? c.layers : 1;
  std::unique_ptr<Workspace>& ws = lane.ws;
  // (Re)build the workspace when this batch needs more than the last one.
  if (!ws || ws->T < T || ws->kept < kept || ws->rmax < rmax) {
    int64_t newT = std::max<int64_t>(T, ws ? ws->T : 0), newKept = std::max<int64_t>(kept, ws ? ws->kept : 0);
    int64_t newR = std::max<int64_t>(rmax, ws ? ws->rmax : 0);
    if (ws) bytes_ -= ws->bytes;
    ws = std::make_unique<Workspace>(*backend_, host_pool_);
    Workspace& w = *ws;
    w.T = newT; w.kept = newKept; w.rmax = newR;
    const int64_t t = newT, ch = std::min<int64_t>(newT, kLogitChunk);
    const auto layout = [&] {
      w.resid.clear();
      for (int64_t i = 0; i <= newKept; ++i) w.resid.push_back(w.get<float>(t * H));
      w.acts.resize(static_cast<size_t>(newKept));
      for (auto& a : w.acts) {
        a.xn1 = w.get<float>(t * H); a.rstd1 = w.get<float>(t);
        a.q = w.get<float>(t * Dq); a.k = w.get<float>(t * Dkv); a.v = w.get<float>(t * Dkv);
        a.ao = w.get<float>(t * Dq); a.lse = w.get<float>(t * c.heads);
        a.xmid = w.get<float>(t * H); a.xn2 = w.get<float>(t * H); a.rstd2 = w.get<float>(t);
        a.gate = w.get<float>(t * I); a.up = w.get<float>(t * I); a.act = w.get<float>(t * I);
        for (int p = 0; p < kNumProj; ++p) a.xa[p] = w.get<float>(t * newR);
      }
      w.xf = w.get<float>(t * H); w.rstdf = w.get<float>(t); w.logits = w.get<float>(ch * V);
      w.tokens = w.get<int32_t>(t); w.positions = w.get<int32_t>(t); w.targets = w.get<int32_t>(t);
      w.seq_start = w.get<int32_t>(t); w.seq_len = w.get<int32_t>(t);
      w.cache_rows = w.get<int32_t>(t); w.kv_start = w.get<int32_t>(t); w.kv_len = w.get<int32_t>(t);
      w.sel_rows = w.get<int32_t>(t);
      w.weights = w.get<float>(t); w.loss = w.get<float>(t);
      w.live_rows = w.get<int32_t>(t); w.live_targets = w.get<int32_t>(t); w.live_weights = w.get<float>(t);
      w.dx = w.get<float>(t * H); w.dxn = w.get<float>(t * H); w.dxf = w.get<float>(t * H);
      w.dq = w.get<float>(t * Dq); w.dk = w.get<float>(t * Dkv); w.dv = w.get<float>(t * Dkv); w.dao = w.get<float>(t * Dq);
      w.dgate = w.get<float>(t * I); w.dup = w.get<float>(t * I); w.dact = w.get<float>(t * I);
      w.dxa = w.get<float>(kAdapterGroupMax * t * newR);
      w.drop_a = w.get<float>(t * std::max({H, I, Dq})); w.drop_b = w.get<float>(t * std::max({H, I, Dq}));
    };
    layout();  // measures
    w.allocate();
    layout();  // hands out the block's slices
    bytes_ += w.bytes;
  }
}

void Model::run_lane(Lane& lane, const Batch& batch, bool backward, bool train_full, bool want_logits,
                     uint64_t dropout_seed, ForwardResult& result) {
  const auto& c = config_;
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  const int64_t H = c.hidden, I = c.intermediate, V = c.vocab, hd = c.head_dim;
  const int64_t Dq = c.heads * hd, Dkv = c.kv_heads * hd;
  const std::vector<Segment> segs = segments(batch);
  const int64_t rmax = std::max<int64_t>(max_rank(segs), 1);
  const bool has_targets = !batch.targets.empty();
  const int64_t chunk = std::min<int64_t>(T, kLogitChunk);
  Workspace& w = *lane.ws;

  // Host-side index arrays -> device.
  const size_t S = batch.seq_len.size();
  std::vector<int32_t> positions(static_cast<size_t>(T)), starts(S);
  std::vector<int32_t> cache_rows, kv_len;
  int32_t max_len = 0, max_kv = 0;
  bool continues = false;  // some sequence attends to keys cached by earlier calls
  {
    int64_t row = 0;
    if (batch.cache) cache_rows.resize(static_cast<size_t>(T)), kv_len.resize(S);
    for (size_t s = 0; s < S; ++s) {
      starts[s] = static_cast<int32_t>(row);
      max_len = std::max(max_len, batch.seq_len[s]);
      const int32_t past = batch.cache ? batch.past[s] : 0;
      continues |= past > 0;
      for (int32_t i = 0; i < batch.seq_len[s]; ++i) {
        positions[static_cast<size_t>(row + i)] = past + i;
        if (batch.cache) cache_rows[static_cast<size_t>(row + i)] = batch.cache_start[s] + past + i;
      }
      if (batch.cache) {
        kv_len[s] = past + batch.seq_len[s];
        max_kv = std::max(max_kv, kv_len[s]);
      }
      row += batch.seq_len[s];
    }
  }
  backend_->upload(w.tokens, batch.tokens.data(), static_cast<size_t>(T) * 4);
  backend_->upload(w.positions, positions.data(), static_cast<size_t>(T) * 4);
  backend_->upload(w.seq_start, starts.data(), starts.size() * 4);
  backend_->upload(w.seq_len, batch.seq_len.data(), batch.seq_len.size() * 4);
  if (has_targets) backend_->upload(w.targets, batch.targets.data(), static_cast<size_t>(T) * 4);
  if (backward) backend_->upload(w.weights, batch.weights.data(), static_cast<size_t>(T) * 4);
  if (batch.cache) {
    backend_->upload(w.cache_rows, cache_rows.data(), cache_rows.size() * 4);
    backend_->upload(w.kv_start, batch.cache_start.data(), S * 4);
    backend_->upload(w.kv_len, kv_len.data(), S * 4);
  }
  const int64_t n_sel = static_cast<int64_t>(batch.logit_rows.size());
  if (n_sel > 0) backend_->upload(w.sel_rows, batch.logit_rows.data(), static_cast<size_t>(n_sel) * 4);
  CachedAttentionShape cs;
  cs.heads = c.heads; cs.kv_heads = c.kv_heads; cs.head_dim = hd;
  cs.q_stride = Dq; cs.kv_stride = Dkv; cs.scale = 1.0 / std::sqrt(static_cast<double>(hd));
  cs.q_start = w.seq_start; cs.q_len = w.seq_len; cs.kv_start = w.kv_start; cs.kv_len = w.kv_len;
  cs.n_seqs = static_cast<int64_t>(S); cs.max_kv_len = max_kv;
  if (batch.cache) cs.kv_dtype = batch.cache->dtype;

  AttentionShape as;
  as.heads = c.heads; as.kv_heads = c.kv_heads; as.head_dim = hd;
  as.q_stride = Dq; as.kv_stride = Dkv; as.scale = 1.0 / std::sqrt(static_cast<double>(hd));
  as.seq_start = w.seq_start; as.seq_len = w.seq_len;
  as.n_seqs = static_cast<int64_t>(batch.seq_len.size()); as.max_seq_len = max_len;
  // bf16 weights: attention's products in bf16 too, as torch.autocast runs them.
  as.bf16_products = storage_ == DType::BF16;

  auto seed_for = [&](int64_t l, int p) { return mix_seed(dropout_seed, static_cast<uint64_t>(l), static_cast<uint64_t>(p)); };
  Param& head_weight = c.tied ? embed_ : lm_head_;
  const WeightView head = head_weight.view();

  // ---- forward ----
  // Decoding steps (a few rows, no backward): the projections that read the same input go to the
  // backend as one group (q, k, v; gate, up), which the CPU runs as one dispatch over their weights.
  const bool group = !backward && T <= kGroupRows;
  // One adapter without dropout over the whole batch (training, one sequence's scoring): the
  // adapters of the projections that read one input compute their xa (and in the backward pass their
  // dA) as one group, which the CPU runs as one pass over that input.
  const bool qkv_adapters = !lane.mixed && adapter_group(kQkv, 3, segs, T, backward);
  const bool gate_up_adapters = !lane.mixed && adapter_group(kGateUp, 2, segs, T, backward);
  // Scoring and prefill with no adapter on q, k, v: their base GEMMs go to the backend as one group
  // too (the CPU runs them as one GEMM across their weights, packing x once). With no adapter on gate
  // or up: the two projections and SwiGLU go as one call (the CPU then computes act from both
  // products' tiles and stores neither).
  const bool qkv_group = group || (!backward && !any_adapter_on((1u << kQ) | (1u << kK) | (1u << kV), segs));
  const bool gate_up_swiglu = !backward && !group && !any_adapter_on((1u << kGate) | (1u << kUp), segs);
  // Scoring and prefill where the projections round their input to bf16 anyway and read bf16 rows
  // as they are (Backend::takes_bf16_rows: bf16 weights under AVX512-BF16): the norms and SwiGLU
  // write bf16 rows (Gemm::A_bf16) for the projections that are their only readers (no adapter
  // there), into the first half of their f32 buffers. Those GEMMs then pack no A and the producers
  // write half the bytes, with the f32 path's bits. SmolLM2-135M scoring: see docs/performance-log.md.
  const bool rows16 = !backward && !group && H % 2 == 0 && I % 2 == 0 && backend_->takes_bf16_rows(storage_);
  const bool xn1_rows16 = rows16 && qkv_group;  // q, k, v carry no adapter
  const bool xn2_rows16 = rows16 && gate_up_swiglu;
  const bool act_rows16 = xn2_rows16 && !any_adapter_on(1u << kDown, segs);
  const bool xf_rows16 = rows16 && n_sel == 0 && backend_->takes_bf16_rows(head_weight.dtype);
  auto as_rows16 = [](float* buf) { return reinterpret_cast<uint16_t*>(buf); };
  auto on_rows16 = [](Gemm g, const uint16_t* a) {
    g.A = nullptr;
    g.A_bf16 = a;
    return g;
  };
  // norm(x) into y, or its bf16 rows (residual: x += r first).
  auto norm = [&](float* x, const float* r, const Param& weight, float* y, float* rstd, bool bf16_rows) {
    if (bf16_rows && r) backend_->residual_rmsnorm_forward_bf16(x, r, weight.f32(), as_rows16(y), rstd, T, H, c.rms_eps);
    else if (bf16_rows) backend_->rmsnorm_forward_bf16(x, weight.f32(), as_rows16(y), rstd, T, H, c.rms_eps);
    else if (r) backend_->residual_rmsnorm_forward(x, r, weight.f32(), y, rstd, T, H, c.rms_eps);
    else backend_->rmsnorm_forward(x, weight.f32(), y, rstd, T, H, c.rms_eps);
  };
  backend_->embedding_forward(w.tokens, T, embed_.view(), H, w.resid[0]);
  // Each residual add runs with the norm that follows it (residual_rmsnorm_forward): the first
  // layer's input norm here, every other norm at the end of the block before it.
  if (c.layers > 0)
    norm(w.resid[0], nullptr, layers_[0].norm1, w.acts[0].xn1, w.acts[0].rstd1, xn1_rows16);
  else
    norm(w.resid[0], nullptr, final_norm_, w.xf, w.rstdf, xf_rows16);
  for (int64_t l = 0; l < c.layers; ++l) {
    auto& a = w.acts[static_cast<size_t>(backward ? l : 0)];
    float* x = w.resid[static_cast<size_t>(backward ? l : (l % 2))];
    float* xnext = w.resid[static_cast<size_t>(backward ? l + 1 : ((l + 1) % 2))];
    Layer& L = layers_[static_cast<size_t>(l)];
    if (qkv_group) {
      const int li = static_cast<int>(l);
      Gemm qkv[3] = {base_gemm(li, kQ, a.xn1, a.q, T), base_gemm(li, kK, a.xn1, a.k, T),
                     base_gemm(li, kV, a.xn1, a.v, T)};
      if (xn1_rows16)
        for (Gemm& g : qkv) g = on_rows16(g, as_rows16(a.xn1));
      backend_->gemm_group(qkv, 3);
    }
    if (qkv_adapters) {
      float* const xa[3] = {a.xa[kQ], a.xa[kK], a.xa[kV]};
      adapter_xa_group(static_cast<int>(l), kQkv, 3, a.xn1, T, segs, xa, rmax);
    }
    linear_forward(lane, static_cast<int>(l), kQ, a.xn1, a.q, T, segs, a.xa[kQ], rmax, backward, seed_for(l, kQ), qkv_group,
                   qkv_adapters);
    linear_forward(lane, static_cast<int>(l), kK, a.xn1, a.k, T, segs, a.xa[kK], rmax, backward, seed_for(l, kK), qkv_group,
                   qkv_adapters);
    linear_forward(lane, static_cast<int>(l), kV, a.xn1, a.v, T, segs, a.xa[kV], rmax, backward, seed_for(l, kV), qkv_group,
                   qkv_adapters);
    backend_->rope_forward(a.q, T, Dq, c.heads, hd, w.positions, inv_freq_);
    backend_->rope_forward(a.k, T, Dkv, c.kv_heads, hd, w.positions, inv_freq_);
    if (batch.cache) {
      void* kc = batch.cache->k[static_cast<size_t>(l)];
      void* vc = batch.cache->v[static_cast<size_t>(l)];
      backend_->store_cache_rows(a.k, Dkv, w.cache_rows, T, Dkv, kc, batch.cache->dtype, Dkv);
      backend_->store_cache_rows(a.v, Dkv, w.cache_rows, T, Dkv, vc, batch.cache->dtype, Dkv);
      if (continues) backend_->attention_cached_forward(cs, a.q, kc, vc, a.ao);
      else backend_->attention_forward(as, a.q, a.k, a.v, a.ao, a.lse);
    } else {
      backend_->attention_forward(as, a.q, a.k, a.v, a.ao, a.lse);
    }
    linear_forward(lane, static_cast<int>(l), kO, a.ao, a.xmid, T, segs, a.xa[kO], rmax, backward, seed_for(l, kO));
    norm(a.xmid, x, L.norm2, a.xn2, a.rstd2, xn2_rows16);
    if (group) {
      const int li = static_cast<int>(l);
      const Gemm gate_up[2] = {base_gemm(li, kGate, a.xn2, a.gate, T), base_gemm(li, kUp, a.xn2, a.up, T)};
      backend_->gemm_group(gate_up, 2);
    }
    if (gate_up_swiglu) {
      const int li = static_cast<int>(l);
      Gemm gate = base_gemm(li, kGate, a.xn2, a.gate, T), up = base_gemm(li, kUp, a.xn2, a.up, T);
      if (xn2_rows16) {
        gate = on_rows16(gate, as_rows16(a.xn2));
        up = on_rows16(up, as_rows16(a.xn2));
      }
      if (act_rows16) backend_->gate_up_swiglu_bf16(gate, up, as_rows16(a.act));
      else backend_->gate_up_swiglu(gate, up, a.act);
    } else {
      if (gate_up_adapters) {
        float* const xa[2] = {a.xa[kGate], a.xa[kUp]};
        adapter_xa_group(static_cast<int>(l), kGateUp, 2, a.xn2, T, segs, xa, rmax);
      }
      linear_forward(lane, static_cast<int>(l), kGate, a.xn2, a.gate, T, segs, a.xa[kGate], rmax, backward,
                     seed_for(l, kGate), group, gate_up_adapters);
      // Scoring and prefill: SwiGLU rides on up's GEMM where up's updates do (act = silu(gate) * up
      // is then stored from each tile, up never: the swiglu_forward pass and up's trip through
      // memory go). Training keeps up for the backward pass.
      const bool act_done =
          linear_forward(lane, static_cast<int>(l), kUp, a.xn2, a.up, T, segs, a.xa[kUp], rmax, backward, seed_for(l, kUp),
                         group, gate_up_adapters, backward || group ? nullptr : a.gate, a.act);
      if (!act_done) backend_->swiglu_forward(a.gate, a.up, a.act, T * I);
    }
    if (act_rows16)  // no adapter on down: its GEMM is all of xnext
      backend_->gemm(on_rows16(base_gemm(static_cast<int>(l), kDown, nullptr, xnext, T), as_rows16(a.act)));
    else
      linear_forward(lane, static_cast<int>(l), kDown, a.act, xnext, T, segs, a.xa[kDown], rmax, backward, seed_for(l, kDown));
    // The residual, and the next layer's input norm (the final norm after the last layer).
    if (l + 1 < c.layers) {
      auto& next = w.acts[static_cast<size_t>(backward ? l + 1 : 0)];
      norm(xnext, a.xmid, layers_[static_cast<size_t>(l + 1)].norm1, next.xn1, next.rstd1, xn1_rows16);
    } else {
      norm(xnext, a.xmid, final_norm_, w.xf, w.rstdf, xf_rows16);
    }
  }
  float* xlast = w.resid[static_cast<size_t>(backward ? c.layers : (c.layers % 2))];  // the final norm's input

  // Only some rows' logits wanted (generation): gather those rows of the final hidden state.
  if (n_sel > 0) {
    backend_->gather_rows(w.xf, H, w.sel_rows, n_sel, H, w.dxf, H);
    result.logits.resize(static_cast<size_t>(n_sel * V));
    for (int64_t r0 = 0; r0 < n_sel; r0 += chunk) {
      const int64_t rows = std::min(chunk, n_sel - r0);
      Gemm g;
      g.M = rows; g.N = V; g.K = H;
      g.A = w.dxf + r0 * H; g.lda = H;
      g.B = head; g.ldb = H; g.trans_b = true;
      g.C = w.logits; g.ldc = V;
      g.packed_b = packed_weight(head_weight, true, rows);
      g.coded_b = coded_weight(head_weight, rows, g.packed_b);
      backend_->gemm(g);
      backend_->download(result.logits.data() + r0 * V, w.logits, static_cast<size_t>(rows * V) * 4);
    }
    return;
  }

  // ---- LM head + loss, chunked over rows so only chunk x vocab logits exist at once ----
  if (want_logits) result.logits.resize(static_cast<size_t>(T * V));
  if (has_targets) result.loss.resize(static_cast<size_t>(T));
  if (backward) backend_->zero(w.dxf, static_cast<size_t>(T * H) * 4);
  // Rows whose loss nobody reads (no target; in training, a zero weight such as a masked prompt)
  // leave the LM head: the rows that remain are gathered into a compact block, so the head's
  // GEMMs, the cross-entropy and dlogits run on those rows only. The head is about a fifth of a
  // small model's FLOPs, and SEAL's completion-only SFT masks most of each sequence.
  const HeadRows live = want_logits ? HeadRows{} : head_rows(batch, backward);
  const bool compact = live.compact;
  const int64_t n_head = compact ? static_cast<int64_t>(live.rows.size()) : T;
  const float* xh = w.xf;    // the head's input rows
  float* dxh = w.dxf;        // their gradient
  const int32_t* th = w.targets;
  const float* wh = w.weights;
  // The compact block and its gradient borrow two backward buffers that are free until the
  // backward pass begins (dxn; dx, zeroed after the head).
  float* const xlive = w.dxn;
  float* const dlive = w.dx;
  if (compact && n_head > 0) {
    backend_->upload(w.live_rows, live.rows.data(), live.rows.size() * 4);
    backend_->upload(w.live_targets, live.targets.data(), live.targets.size() * 4);
    // (bf16 rows travel as H / 2 words: the gather copies bytes.)
    const int64_t words = xf_rows16 ? H / 2 : H;
    backend_->gather_rows(w.xf, words, w.live_rows, n_head, words, xlive, words);
    xh = xlive; th = w.live_targets;
    if (backward) {
      backend_->upload(w.live_weights, live.weights.data(), live.weights.size() * 4);
      wh = w.live_weights; dxh = dlive;
    }
  }
  for (int64_t r0 = 0; r0 < n_head; r0 += chunk) {
    const int64_t rows = std::min(chunk, n_head - r0);
    Gemm g;  // logits = xf head^T
    g.M = rows; g.N = V; g.K = H;
    g.A = xh + r0 * H; g.lda = H;
    if (xf_rows16) g = on_rows16(g, reinterpret_cast<const uint16_t*>(xh) + r0 * H);
    g.B = head; g.ldb = H; g.trans_b = true;
    g.C = w.logits; g.ldc = V;
    g.packed_b = packed_weight(head_weight, true, rows);
    backend_->gemm(g);
    if (want_logits) backend_->download(result.logits.data() + r0 * V, w.logits, static_cast<size_t>(rows * V) * 4);
    if (!has_targets) continue;
    backend_->cross_entropy(w.logits, th + r0, rows, V, w.loss + r0, backward ? wh + r0 : nullptr);
    if (!backward) continue;
    Gemm gx;  // dxf = dlogits head
    gx.M = rows; gx.N = H; gx.K = V;
    gx.A = w.logits; gx.lda = V;
    gx.B = head; gx.ldb = H;
    gx.C = dxh + r0 * H; gx.ldc = H;
    gx.packed_b = packed_weight(head_weight, false, rows);
    backend_->gemm(gx);
    if (train_full) {
      Gemm gw;  // dHead += dlogits^T xf
      gw.M = V; gw.N = H; gw.K = rows;
      gw.A = w.logits; gw.lda = V; gw.trans_a = true;
      gw.B = WeightView{xh + r0 * H, DType::F32}; gw.ldb = H;
      gw.C = head_weight.grad; gw.ldc = H; gw.beta = 1;
      backend_->gemm(gw);
    }
  }
  if (has_targets && compact) {
    // Loss rows come back in compact order; the rows left out carry no loss.
    std::vector<float> compact_loss(static_cast<size_t>(n_head));
    if (n_head > 0) backend_->download(compact_loss.data(), w.loss, compact_loss.size() * 4);
    std::fill(result.loss.begin(), result.loss.end(), 0.0f);
    for (size_t i = 0; i < compact_loss.size(); ++i) result.loss[static_cast<size_t>(live.rows[i])] = compact_loss[i];
  } else if (has_targets) {
    backend_->download(result.loss.data(), w.loss, static_cast<size_t>(T) * 4);
  }
  if (backward && compact && n_head > 0) backend_->scatter_rows(dlive, H, w.live_rows, n_head, H, w.dxf, H);
  if (!backward) return;

  // ---- backward ----
  float* dx = w.dx;
  backend_->zero(dx, static_cast<size_t>(T * H) * 4);
  backend_->rmsnorm_backward(xlast, final_norm_.f32(), w.rstdf, w.dxf, dx, train_full ? final_norm_.grad : nullptr, T, H);
  for (int64_t l = c.layers - 1; l >= 0; --l) {
    auto& a = w.acts[static_cast<size_t>(l)];
    Layer& L = layers_[static_cast<size_t>(l)];
    const int li = static_cast<int>(l);
    // MLP block: x_next = xmid + down(swiglu(gate(xn2), up(xn2)))
    const cpu::SwigluGrad swiglu{a.gate, a.up, w.dgate, w.dup};
    if (!linear_backward(lane, li, kDown, a.act, dx, w.dact, false, T, segs, a.xa[kDown], rmax, train_full,
                         seed_for(l, kDown), w.dxa_slot(0), false, &swiglu))
      backend_->swiglu_backward(a.gate, a.up, w.dact, w.dgate, w.dup, T * I);
    linear_backward(lane, li, kGate, a.xn2, w.dgate, w.dxn, false, T, segs, a.xa[kGate], rmax, train_full, seed_for(l, kGate),
                    w.dxa_slot(0), gate_up_adapters);
    linear_backward(lane, li, kUp, a.xn2, w.dup, w.dxn, true, T, segs, a.xa[kUp], rmax, train_full, seed_for(l, kUp),
                    w.dxa_slot(1), gate_up_adapters);
    if (gate_up_adapters) {
      float* const dxa[2] = {w.dxa_slot(0), w.dxa_slot(1)};
      adapter_da_group(lane, li, kGateUp, 2, a.xn2, T, segs, dxa);
    }
    backend_->rmsnorm_backward(a.xmid, L.norm2.f32(), a.rstd2, w.dxn, dx, train_full ? L.norm2.grad : nullptr, T, H);
    // Attention block: xmid = x + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1)))
    linear_backward(lane, li, kO, a.ao, dx, w.dao, false, T, segs, a.xa[kO], rmax, train_full, seed_for(l, kO),
                    w.dxa_slot(0), false);
    backend_->attention_backward(as, a.q, a.k, a.v, a.ao, a.lse, w.dao, w.dq, w.dk, w.dv);
    backend_->rope_backward(w.dq, T, Dq, c.heads, hd, w.positions, inv_freq_);
    backend_->rope_backward(w.dk, T, Dkv, c.kv_heads, hd, w.positions, inv_freq_);
    // Below the first layer's q, k, v lie only its input norm and the embeddings: unless those
    // train, the gradient of the projections' input is never read, so it is not formed (LoRA steps
    // skip three input-gradient GEMMs, their adapters' dx and a norm backward).
    const bool input_grad = l > 0 || train_full;
    float* dxn = input_grad ? w.dxn : nullptr;
    linear_backward(lane, li, kQ, a.xn1, w.dq, dxn, false, T, segs, a.xa[kQ], rmax, train_full, seed_for(l, kQ),
                    w.dxa_slot(0), qkv_adapters);
    linear_backward(lane, li, kK, a.xn1, w.dk, dxn, true, T, segs, a.xa[kK], rmax, train_full, seed_for(l, kK),
                    w.dxa_slot(1), qkv_adapters);
    linear_backward(lane, li, kV, a.xn1, w.dv, dxn, true, T, segs, a.xa[kV], rmax, train_full, seed_for(l, kV),
                    w.dxa_slot(2), qkv_adapters);
    if (qkv_adapters) {
      float* const dxa[3] = {w.dxa_slot(0), w.dxa_slot(1), w.dxa_slot(2)};
      adapter_da_group(lane, li, kQkv, 3, a.xn1, T, segs, dxa);
    }
    if (input_grad) {
      float* x = w.resid[static_cast<size_t>(l)];
      backend_->rmsnorm_backward(x, L.norm1.f32(), a.rstd1, w.dxn, dx, train_full ? L.norm1.grad : nullptr, T, H);
    }
  }
  if (train_full) backend_->embedding_backward(w.tokens, T, dx, H, embed_.grad);
}

// ---- KV cache -------------------------------------------------------------------------------------------

size_t Model::kv_row_bytes(DType dtype) const {
  return static_cast<size_t>(config_.kv_heads * config_.head_dim) * dtype_size(dtype);
}

namespace {
// A KV cache layer's bytes rounded up to the next of four steps per power of two (4 KiB at least).
size_t kv_size_class(size_t bytes) {
  if (bytes <= 4096) return 4096;
  size_t pow2 = 1;
  while (pow2 * 2 < bytes) pow2 *= 2;  // pow2 < bytes <= 2 * pow2
  const size_t step = pow2 / 4;
  return (bytes + step - 1) / step * step;
}
}  // namespace

size_t Model::kv_cache_bytes(int64_t rows, DType dtype) const {
  return kv_size_class(static_cast<size_t>(rows) * kv_row_bytes(dtype)) * 2 * static_cast<size_t>(config_.layers);
}

DType Model::default_kv_dtype() const {
  return storage_ == DType::BF16 && backend_->supports_kv_cache(DType::BF16) ? DType::BF16 : DType::F32;
}

std::unique_ptr<KvCache> Model::create_cache(int64_t rows, DType dtype) {
  if (rows <= 0) throw std::invalid_argument("KV cache needs at least one row");
  if (!backend_->supports_kv_cache(dtype))
    throw std::invalid_argument(std::string("the ") + backend_->name() + " backend cannot keep a KV cache in " +
                                dtype_name(dtype) + " (use f32, which is also what 'auto' picks there)");
  auto cache = std::make_unique<KvCache>();
  cache->capacity = rows;
  cache->dtype = dtype;
  cache->row_bytes = kv_row_bytes(dtype);
  // Buffers from kv_buffers_, their sizes rounded up to a class (at most a quarter more) so that
  // generations of nearby lengths reuse each other's.
  const size_t layer_bytes = kv_size_class(static_cast<size_t>(rows) * cache->row_bytes);
  const auto fresh = [&](size_t b) { return alloc(b); };
  for (int64_t l = 0; l < config_.layers; ++l) {
    cache->k.push_back(kv_buffers_.take(*backend_, layer_bytes, fresh));
    cache->v.push_back(kv_buffers_.take(*backend_, layer_bytes, fresh));
    cache->bytes += 2 * layer_bytes;
  }
  return cache;
}

void Model::release_cache(KvCache& cache) {
  if (cache.k.empty()) return;  // released already
  const size_t layer_bytes = cache.bytes / (2 * cache.k.size());
  for (auto* side : {&cache.k, &cache.v})
    for (void* p : *side) bytes_ -= kv_buffers_.give(*backend_, p, layer_bytes);
  cache.k.clear();
  cache.v.clear();
  cache.bytes = 0;
}

// ---- optimiser -----------------------------------------------------------------------------------------

std::vector<double> Model::step(const StepSpec& spec) {
  std::vector<std::pair<std::vector<Param*>, int64_t*>> groups;
  if (spec.full) {
    std::vector<Param*> ps;
    for (Param* p : all_params()) {
      if (!p->grad) throw std::runtime_error("step: no gradients for the base model (run a full-training backward first)");
      ps.push_back(p);
    }
    groups.push_back({ps, &full_step_});
  }
  for (int slot : spec.slots) {
    Adapter& a = adapter(slot);
    std::vector<Param*> ps;
    for (auto* side : {&a.A, &a.B})
      for (auto& layer : *side)
        for (Param& p : layer)
          if (p.data) ps.push_back(&p);
    groups.push_back({ps, &a.step});
  }
  if (!spec.lrs.empty() && spec.lrs.size() != spec.slots.size())
    throw std::invalid_argument("step: lrs must have one learning rate per slot");
  // Every group's tensors go to the backend together (per group its norm, the clip, AdamW: two
  // launches, or one task of a launch for them all where the backend runs many groups so).
  std::vector<std::vector<OptimTensor>> tensors(groups.size());
  std::vector<OptimGroup> optim(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    auto& [params, counter] = groups[g];
    const bool is_slot = !(spec.full && g == 0);
    const size_t slot_index = g - (spec.full ? 1 : 0);
    std::vector<OptimTensor>& ts = tensors[g];
    ts.reserve(params.size());
    for (Param* p : params) {
      ensure_moments(*p, is_slot);
      drop_packed(*p);  // the step changes it in place (full training): its packed copies would be stale
      ts.push_back({p->f32(), p->grad, p->m, p->v, p->numel()});
    }
    AdamWParams hp = spec.adam;
    if (is_slot && !spec.lrs.empty()) hp.lr = spec.lrs[slot_index];
    hp.step = ++*counter;
    optim[g] = {ts.data(), static_cast<int>(ts.size()), hp};
  }
  std::vector<double> norms(groups.size(), 0.0);
  backend_->optimizer_step_groups(optim.data(), static_cast<int>(optim.size()), spec.max_grad_norm, norms.data());
  return norms;
}

void Model::zero_grad() {
  for (Param* p : all_params())
    if (p->grad) backend_->zero(p->grad, static_cast<size_t>(p->numel()) * 4);
  for (auto& kv : adapters_)
    for (auto* side : {&kv.second->A, &kv.second->B})
      for (auto& layer : *side)
        for (Param& p : layer)
          if (p.grad) backend_->zero(p.grad, static_cast<size_t>(p.numel()) * 4);
}

}  // namespace sealkit
