// backendOp(device, name, args) -> {outputs}: runs ONE Backend method on 'cpu' or 'cuda' with
// inputs uploaded from TypedArrays and outputs downloaded into new ones. Backend-agnostic, so the
// same call on both devices is an op-level parity check (test/backend-parity.test.ts). Synchronous
// and meant for tests and microbenchmarks, not for the engine's hot path.
//
// Argument names follow native/engine/backend.h in camelCase. Arrays: Float32Array for f32 data,
// Int32Array for ids/targets/positions/seqLens, Uint16Array for bf16 bit patterns (weights with
// dtype 'bf16'), Uint8Array for raw host bytes (uploadConverted). "+=" outputs start from the array
// passed under their name (zeros when absent). Sizes are checked against the array lengths before
// anything touches device memory.
#include <napi.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../engine/backend.h"
#include "bindings.h"

namespace sealkit::addon {
namespace {

[[noreturn]] void fail(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, "backendOp: " + msg); }

// One backend per device for the life of the process. Deliberately never destroyed: a CUDA backend
// torn down by static destructors at exit would race the CUDA runtime's own teardown.
Backend& backend_for(Napi::Env env, const std::string& device) {
  static std::mutex mu;
  static std::map<std::string, Backend*> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(device);
  if (it != cache.end()) return *it->second;
  std::unique_ptr<Backend> b;
  if (device == "cpu") {
    b = make_cpu_backend();
#ifdef SEALKIT_WITH_CUDA
  } else if (device == "cuda") {
    try {
      b = make_cuda_backend(0);
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
#endif
  } else {
    throw Napi::RangeError::New(env, "backendOp: device '" + device + "' is not available in this build (have: cpu" +
#ifdef SEALKIT_WITH_CUDA
                                         std::string(", cuda") +
#endif
                                         ")");
  }
  Backend* raw = b.release();
  cache[device] = raw;
  return *raw;
}

// Device buffers of one call, released on every exit path.
class Call {
 public:
  Call(Napi::Env env, Backend& be, Napi::Object args) : env_(env), be_(be), args_(args) {}
  ~Call() {
    for (void* p : owned_) {
      try {
        be_.release(p);
      } catch (...) {
      }
    }
  }

  bool has(const char* key) const { return args_.Has(key) && !args_.Get(key).IsUndefined() && !args_.Get(key).IsNull(); }
  double num(const char* key) const {
    if (!has(key) || !args_.Get(key).IsNumber()) fail(env_, std::string("'") + key + "' must be a number");
    return args_.Get(key).As<Napi::Number>().DoubleValue();
  }
  double num_or(const char* key, double def) const { return has(key) ? num(key) : def; }
  int64_t integer(const char* key) const {
    double d = num(key);
    if (d != static_cast<double>(static_cast<int64_t>(d))) fail(env_, std::string("'") + key + "' must be an integer");
    return static_cast<int64_t>(d);
  }
  int64_t count(const char* key) const {
    int64_t v = integer(key);
    if (v < 0) fail(env_, std::string("'") + key + "' must be >= 0");
    return v;
  }
  bool flag(const char* key) const { return has(key) && args_.Get(key).ToBoolean().Value(); }
  std::string str(const char* key) const {
    if (!has(key) || !args_.Get(key).IsString()) fail(env_, std::string("'") + key + "' must be a string");
    return args_.Get(key).As<Napi::String>().Utf8Value();
  }
  uint64_t seed(const char* key) const {
    if (!has(key)) fail(env_, std::string("'") + key + "' is required");
    Napi::Value v = args_.Get(key);
    if (v.IsBigInt()) {
      bool lossless;
      return v.As<Napi::BigInt>().Uint64Value(&lossless);
    }
    double d = num(key);
    if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d))) fail(env_, std::string("'") + key + "' must be a non-negative integer");
    return static_cast<uint64_t>(d);
  }

  Napi::TypedArray typed(const char* key, napi_typedarray_type type, const char* type_name) const {
    if (!has(key) || !args_.Get(key).IsTypedArray()) fail(env_, std::string("'") + key + "' must be a " + type_name);
    auto a = args_.Get(key).As<Napi::TypedArray>();
    if (a.TypedArrayType() != type) fail(env_, std::string("'") + key + "' must be a " + type_name);
    return a;
  }
  static void* data_of(const Napi::TypedArray& a) {
    return static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  }

  void* alloc(size_t bytes) {
    void* p = be_.alloc(bytes);
    owned_.push_back(p);
    return p;
  }
  // Uploads a typed array (checking it holds at least `need` elements) and returns the device copy.
  void* upload(const char* key, napi_typedarray_type type, const char* type_name, size_t elem, int64_t need) {
    auto a = typed(key, type, type_name);
    if (static_cast<int64_t>(a.ElementLength()) < need)
      fail(env_, std::string("'") + key + "' has " + std::to_string(a.ElementLength()) + " elements, needs " + std::to_string(need));
    size_t n = std::max<size_t>(a.ElementLength(), 1);
    void* d = alloc(n * elem);
    if (a.ElementLength()) be_.upload(d, data_of(a), a.ElementLength() * elem);
    return d;
  }
  const float* in_f32(const char* key, int64_t need) {
    return static_cast<const float*>(upload(key, napi_float32_array, "Float32Array", 4, need));
  }
  const int32_t* in_i32(const char* key, int64_t need) {
    return static_cast<const int32_t*>(upload(key, napi_int32_array, "Int32Array", 4, need));
  }
  // An output of n floats: initialised from args[key] when present ("+=" semantics), else zeros.
  float* out_f32(const char* key, int64_t n) {
    if (has(key)) {
      auto a = typed(key, napi_float32_array, "Float32Array");
      if (static_cast<int64_t>(a.ElementLength()) != n)
        fail(env_, std::string("'") + key + "' has " + std::to_string(a.ElementLength()) + " elements, expected " + std::to_string(n));
      return static_cast<float*>(upload(key, napi_float32_array, "Float32Array", 4, n));
    }
    return static_cast<float*>(alloc(static_cast<size_t>(std::max<int64_t>(n, 1)) * 4));
  }
  // A weight (f32 or bf16 by args[dtype_key]) of at least `need` elements.
  WeightView weight(const char* key, const char* dtype_key, int64_t need) {
    std::string dt = has(dtype_key) ? str(dtype_key) : "f32";
    if (dt == "f32") return WeightView{in_f32(key, need), DType::F32};
    if (dt == "bf16") return WeightView{upload(key, napi_uint16_array, "Uint16Array (bf16 bits)", 2, need), DType::BF16};
    fail(env_, std::string("'") + dtype_key + "' must be 'f32' or 'bf16'");
  }

  void result(const char* key, const void* dev, int64_t n) {
    auto arr = Napi::Float32Array::New(env_, static_cast<size_t>(n));
    if (n) be_.download(arr.Data(), dev, static_cast<size_t>(n) * 4);
    out_.Set(key, arr);
  }
  Napi::Object out() {
    if (out_.IsEmpty()) out_ = Napi::Object::New(env_);
    return out_;
  }
  Napi::Env env() const { return env_; }
  Backend& be() { return be_; }
  void begin() { out_ = Napi::Object::New(env_); }

 private:
  Napi::Env env_;
  Backend& be_;
  Napi::Object args_;
  Napi::Object out_;
  std::vector<void*> owned_;
};

// Elements an op(X) [rows x cols] view with leading dimension ld spans (X stored row-major).
int64_t span(int64_t rows, int64_t cols, int64_t ld, bool trans) {
  if (rows == 0 || cols == 0) return 0;
  return trans ? (cols - 1) * ld + rows : (rows - 1) * ld + cols;
}

Napi::Value BackendOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsObject())
    throw Napi::TypeError::New(env, "backendOp(device, name, args): device and name must be strings, args an object");
  const std::string device = info[0].As<Napi::String>().Utf8Value();
  const std::string name = info[1].As<Napi::String>().Utf8Value();
  Backend& be = backend_for(env, device);
  Call c(env, be, info[2].As<Napi::Object>());
  c.begin();
  try {
    if (name == "gemm") {
      Gemm g;
      g.M = c.count("M"); g.N = c.count("N"); g.K = c.count("K");
      g.trans_a = c.flag("transA"); g.trans_b = c.flag("transB");
      g.lda = c.count("lda"); g.ldb = c.count("ldb"); g.ldc = c.count("ldc");
      if (g.lda < (g.trans_a ? g.M : g.K) || g.ldb < (g.trans_b ? g.K : g.N) || g.ldc < g.N) fail(env, "gemm: leading dimension too small");
      g.alpha = static_cast<float>(c.num_or("alpha", 1));
      g.beta = static_cast<float>(c.num_or("beta", 0));
      g.A = c.in_f32("A", span(g.M, g.K, g.lda, g.trans_a));
      g.B = c.weight("B", "bDtype", span(g.K, g.N, g.ldb, g.trans_b));
      const int64_t nc = g.M == 0 ? 0 : (g.M - 1) * g.ldc + g.N;
      g.C = c.out_f32("C", nc);
      be.gemm(g);
      c.result("C", g.C, nc);
    } else if (name == "embedding_forward") {
      const int64_t dim = c.count("dim"), vocab = c.count("vocab");
      auto ids = c.typed("ids", napi_int32_array, "Int32Array");
      const int64_t n = static_cast<int64_t>(ids.ElementLength());
      for (int64_t i = 0; i < n; ++i) {
        int32_t id = static_cast<const int32_t*>(Call::data_of(ids))[i];
        if (id < 0 || id >= vocab) fail(env, "embedding_forward: id out of range");
      }
      WeightView table = c.weight("table", "tableDtype", vocab * dim);
      float* out = c.out_f32("out", n * dim);
      be.embedding_forward(c.in_i32("ids", n), n, table, dim, out);
      c.result("out", out, n * dim);
    } else if (name == "embedding_backward") {
      const int64_t dim = c.count("dim"), vocab = c.count("vocab");
      auto ids = c.typed("ids", napi_int32_array, "Int32Array");
      const int64_t n = static_cast<int64_t>(ids.ElementLength());
      for (int64_t i = 0; i < n; ++i) {
        int32_t id = static_cast<const int32_t*>(Call::data_of(ids))[i];
        if (id < 0 || id >= vocab) fail(env, "embedding_backward: id out of range");
      }
      float* dtable = c.out_f32("dtable", vocab * dim);
      be.embedding_backward(c.in_i32("ids", n), n, c.in_f32("dout", n * dim), dim, dtable);
      c.result("dtable", dtable, vocab * dim);
    } else if (name == "rmsnorm_forward") {
      const int64_t rows = c.count("rows"), dim = c.count("dim");
      float* y = c.out_f32("y", rows * dim);
      float* rstd = c.out_f32("rstd", rows);
      be.rmsnorm_forward(c.in_f32("x", rows * dim), c.in_f32("w", dim), y, rstd, rows, dim, c.num("eps"));
      c.result("y", y, rows * dim);
      c.result("rstd", rstd, rows);
    } else if (name == "rmsnorm_backward") {
      const int64_t rows = c.count("rows"), dim = c.count("dim");
      float* dx = c.out_f32("dx", rows * dim);
      float* dw = c.flag("withDw") || c.has("dw") ? c.out_f32("dw", dim) : nullptr;
      be.rmsnorm_backward(c.in_f32("x", rows * dim), c.in_f32("w", dim), c.in_f32("rstd", rows),
                          c.in_f32("dy", rows * dim), dx, dw, rows, dim);
      c.result("dx", dx, rows * dim);
      if (dw) c.result("dw", dw, dim);
    } else if (name == "rope_forward" || name == "rope_backward") {
      const int64_t rows = c.count("rows"), stride = c.count("rowStride"), heads = c.count("heads"),
                    hd = c.count("headDim");
      if (hd % 2 != 0 || heads * hd > stride) fail(env, "rope: headDim must be even and heads*headDim <= rowStride");
      const int64_t n = rows * stride;
      float* x = c.out_f32("x", n);
      const int32_t* pos = c.in_i32("positions", rows);
      const float* inv = c.in_f32("invFreq", hd / 2);
      if (name == "rope_forward") be.rope_forward(x, rows, stride, heads, hd, pos, inv);
      else be.rope_backward(x, rows, stride, heads, hd, pos, inv);
      c.result("x", x, n);
    } else if (name == "attention_forward" || name == "attention_backward") {
      AttentionShape s;
      s.heads = c.count("heads"); s.kv_heads = c.count("kvHeads"); s.head_dim = c.count("headDim");
      s.q_stride = c.count("qStride"); s.kv_stride = c.count("kvStride");
      s.scale = c.num("scale");
      if (s.heads == 0 || s.kv_heads == 0 || s.heads % s.kv_heads) fail(env, "attention: heads must be a multiple of kvHeads");
      if (s.heads * s.head_dim > s.q_stride || s.kv_heads * s.head_dim > s.kv_stride) fail(env, "attention: strides too small");
      auto lens = c.typed("seqLens", napi_int32_array, "Int32Array");
      const int32_t* l = static_cast<const int32_t*>(Call::data_of(lens));
      std::vector<int32_t> starts(lens.ElementLength());
      int64_t rows = 0, maxlen = 0;
      for (size_t i = 0; i < lens.ElementLength(); ++i) {
        if (l[i] < 1) fail(env, "attention: every seqLens entry must be >= 1");
        starts[i] = static_cast<int32_t>(rows);
        rows += l[i];
        maxlen = std::max<int64_t>(maxlen, l[i]);
      }
      s.n_seqs = static_cast<int64_t>(lens.ElementLength());
      s.max_seq_len = maxlen;
      auto* d_start = static_cast<int32_t*>(c.alloc(std::max<size_t>(starts.size(), 1) * 4));
      if (!starts.empty()) be.upload(d_start, starts.data(), starts.size() * 4);
      s.seq_start = d_start;
      s.seq_len = c.in_i32("seqLens", s.n_seqs);
      const int64_t nq = rows * s.q_stride, nkv = rows * s.kv_stride, no = rows * s.heads * s.head_dim;
      const float* q = c.in_f32("q", nq);
      const float* k = c.in_f32("k", nkv);
      const float* v = c.in_f32("v", nkv);
      if (name == "attention_forward") {
        float* out = c.out_f32("out", no);
        float* lse = c.out_f32("lse", rows * s.heads);
        be.attention_forward(s, q, k, v, out, lse);
        c.result("out", out, no);
        c.result("lse", lse, rows * s.heads);
      } else {
        const float* out = c.in_f32("out", no);
        const float* lse = c.in_f32("lse", rows * s.heads);
        const float* dout = c.in_f32("dout", no);
        float* dq = c.out_f32("dq", nq);
        float* dk = c.out_f32("dk", nkv);
        float* dv = c.out_f32("dv", nkv);
        be.attention_backward(s, q, k, v, out, lse, dout, dq, dk, dv);
        c.result("dq", dq, nq);
        c.result("dk", dk, nkv);
        c.result("dv", dv, nkv);
      }
    } else if (name == "attention_cached_forward") {
      // qLens: new query rows per sequence (packed from row 0 of q/out); kvStarts/kvLens: each
      // sequence's rows in a cache of cacheRows rows, the new tokens stored last.
      CachedAttentionShape s;
      s.heads = c.count("heads"); s.kv_heads = c.count("kvHeads"); s.head_dim = c.count("headDim");
      s.q_stride = c.count("qStride"); s.kv_stride = c.count("kvStride");
      s.scale = c.num("scale");
      if (s.heads == 0 || s.kv_heads == 0 || s.heads % s.kv_heads) fail(env, "attention: heads must be a multiple of kvHeads");
      if (s.heads * s.head_dim > s.q_stride || s.kv_heads * s.head_dim > s.kv_stride) fail(env, "attention: strides too small");
      const int64_t cache_rows = c.count("cacheRows");
      auto ql = c.typed("qLens", napi_int32_array, "Int32Array");
      auto ks = c.typed("kvStarts", napi_int32_array, "Int32Array");
      auto kl = c.typed("kvLens", napi_int32_array, "Int32Array");
      const size_t ns = ql.ElementLength();
      if (ks.ElementLength() != ns || kl.ElementLength() != ns) fail(env, "attention_cached_forward: qLens, kvStarts and kvLens differ in length");
      const int32_t* qlp = static_cast<const int32_t*>(Call::data_of(ql));
      const int32_t* ksp = static_cast<const int32_t*>(Call::data_of(ks));
      const int32_t* klp = static_cast<const int32_t*>(Call::data_of(kl));
      std::vector<int32_t> qstart(ns);
      int64_t rows = 0, maxkv = 0;
      for (size_t i = 0; i < ns; ++i) {
        if (qlp[i] < 0 || qlp[i] > klp[i] || ksp[i] < 0 || int64_t(ksp[i]) + klp[i] > cache_rows)
          fail(env, "attention_cached_forward: sequence " + std::to_string(i) + " has an invalid q/kv range");
        qstart[i] = static_cast<int32_t>(rows);
        rows += qlp[i];
        maxkv = std::max<int64_t>(maxkv, klp[i]);
      }
      s.n_seqs = static_cast<int64_t>(ns);
      s.max_kv_len = maxkv;
      auto* d_qstart = static_cast<int32_t*>(c.alloc(std::max<size_t>(ns, 1) * 4));
      if (ns) be.upload(d_qstart, qstart.data(), ns * 4);
      s.q_start = d_qstart;
      s.q_len = c.in_i32("qLens", s.n_seqs);
      s.kv_start = c.in_i32("kvStarts", s.n_seqs);
      s.kv_len = c.in_i32("kvLens", s.n_seqs);
      const int64_t no = rows * s.heads * s.head_dim;
      float* out = c.out_f32("out", no);
      // kvDtype 'f32' (default) or 'bf16': kCache and vCache are then Uint16Arrays of bf16 bits.
      const WeightView kc = c.weight("kCache", "kvDtype", cache_rows * s.kv_stride);
      const WeightView vc = c.weight("vCache", "kvDtype", cache_rows * s.kv_stride);
      s.kv_dtype = kc.dtype;
      be.attention_cached_forward(s, c.in_f32("q", rows * s.q_stride), kc.data, vc.data, out);
      c.result("out", out, no);
    } else if (name == "gather_rows" || name == "scatter_rows") {
      // gather: dst row i = src row rows[i] (src has srcRows rows); scatter: dst row rows[i] = src
      // row i (dst has dstRows rows).
      const bool gather = name == "gather_rows";
      const int64_t cols = c.count("cols"), ss = c.count("srcStride"), ds = c.count("dstStride");
      if (cols > ss || cols > ds) fail(env, name + ": cols exceeds a stride");
      auto idx = c.typed("rows", napi_int32_array, "Int32Array");
      const int64_t n = static_cast<int64_t>(idx.ElementLength());
      const int64_t limit = gather ? c.count("srcRows") : c.count("dstRows");
      for (int64_t i = 0; i < n; ++i) {
        int32_t r = static_cast<const int32_t*>(Call::data_of(idx))[i];
        if (r < 0 || r >= limit) fail(env, name + ": rows[" + std::to_string(i) + "] out of range");
      }
      const int64_t src_n = (gather ? limit : n) * ss, dst_n = (gather ? n : limit) * ds;
      float* dst = c.out_f32("dst", dst_n);
      const float* src = c.in_f32("src", src_n);
      const int32_t* rows = c.in_i32("rows", n);
      if (gather) be.gather_rows(src, ss, rows, n, cols, dst, ds);
      else be.scatter_rows(src, ss, rows, n, cols, dst, ds);
      c.result("dst", dst, dst_n);
    } else if (name == "swiglu_forward") {
      const int64_t n = c.count("n");
      float* out = c.out_f32("out", n);
      be.swiglu_forward(c.in_f32("gate", n), c.in_f32("up", n), out, n);
      c.result("out", out, n);
    } else if (name == "swiglu_backward") {
      const int64_t n = c.count("n");
      float* dgate = c.out_f32("dgate", n);
      float* dup = c.out_f32("dup", n);
      be.swiglu_backward(c.in_f32("gate", n), c.in_f32("up", n), c.in_f32("dout", n), dgate, dup, n);
      c.result("dgate", dgate, n);
      c.result("dup", dup, n);
    } else if (name == "cross_entropy") {
      const int64_t rows = c.count("rows"), vocab = c.count("vocab");
      auto t = c.typed("targets", napi_int32_array, "Int32Array");
      for (int64_t i = 0; i < std::min<int64_t>(rows, static_cast<int64_t>(t.ElementLength())); ++i)
        if (static_cast<const int32_t*>(Call::data_of(t))[i] >= vocab) fail(env, "cross_entropy: target >= vocab");
      float* logits = c.out_f32("logits", rows * vocab);
      float* loss = c.out_f32("loss", rows);
      const float* gs = c.has("gradScale") ? c.in_f32("gradScale", rows) : nullptr;
      be.cross_entropy(logits, c.in_i32("targets", rows), rows, vocab, loss, gs);
      c.result("logits", logits, rows * vocab);
      c.result("loss", loss, rows);
    } else if (name == "adamw_step") {
      const int64_t n = c.count("n");
      AdamWParams p;
      p.lr = c.num("lr");
      p.beta1 = c.num_or("beta1", 0.9);
      p.beta2 = c.num_or("beta2", 0.999);
      p.eps = c.num_or("eps", 1e-8);
      p.weight_decay = c.num_or("weightDecay", 0);
      p.step = c.count("step");
      float* param = c.out_f32("param", n);
      float* m = c.out_f32("m", n);
      float* v = c.out_f32("v", n);
      be.adamw_step(param, c.in_f32("grad", n), m, v, n, p);
      c.result("param", param, n);
      c.result("m", m, n);
      c.result("v", v, n);
    } else if (name == "sum_squares") {
      auto x = c.typed("x", napi_float32_array, "Float32Array");
      const int64_t n = static_cast<int64_t>(x.ElementLength());
      double r = be.sum_squares(c.in_f32("x", n), n);
      c.out().Set("value", Napi::Number::New(env, r));
    } else if (name == "scale_inplace") {
      const int64_t n = c.count("n");
      float* x = c.out_f32("x", n);
      be.scale_inplace(x, n, static_cast<float>(c.num("s")));
      c.result("x", x, n);
    } else if (name == "axpy") {
      const int64_t n = c.count("n");
      float* y = c.out_f32("y", n);
      be.axpy(y, c.in_f32("x", n), n, static_cast<float>(c.num("a")));
      c.result("y", y, n);
    } else if (name == "add_row_bias") {
      const int64_t rows = c.count("rows"), cols = c.count("cols");
      float* out = c.out_f32("out", rows * cols);
      be.add_row_bias(out, c.in_f32("bias", cols), rows, cols);
      c.result("out", out, rows * cols);
    } else if (name == "bias_backward") {
      const int64_t rows = c.count("rows"), cols = c.count("cols");
      float* db = c.out_f32("dbias", cols);
      be.bias_backward(c.in_f32("dy", rows * cols), db, rows, cols);
      c.result("dbias", db, cols);
    } else if (name == "dropout") {
      const int64_t rows = c.count("rows"), cols = c.count("cols");
      const float p = static_cast<float>(c.num("p"));
      if (!(p >= 0 && p < 1)) fail(env, "dropout: p must be in [0, 1)");
      float* out = c.out_f32("out", rows * cols);
      be.dropout(c.in_f32("x", rows * cols), out, rows, cols, c.integer("rowOffset"), p, c.seed("seed"));
      c.result("out", out, rows * cols);
    } else if (name == "fill_normal") {
      const int64_t n = c.count("n");
      float* x = c.out_f32("x", n);
      be.fill_normal(x, n, c.seed("seed"), static_cast<float>(c.num("std")), static_cast<float>(c.num_or("value", 0)));
      c.result("x", x, n);
    } else if (name == "fill_uniform") {
      const int64_t n = c.count("n");
      float* x = c.out_f32("x", n);
      be.fill_uniform(x, n, c.seed("seed"), static_cast<float>(c.num("bound")));
      c.result("x", x, n);
    } else if (name == "upload_converted") {
      const std::string src_dtype = c.str("srcDtype"), to = c.str("to");
      const int64_t n = c.count("n");
      size_t src_size = src_dtype == "F32" ? 4 : (src_dtype == "BF16" || src_dtype == "F16") ? 2 : 0;
      if (!src_size) fail(env, "upload_converted: srcDtype must be F32, BF16 or F16");
      if (to != "f32" && to != "bf16") fail(env, "upload_converted: to must be 'f32' or 'bf16'");
      auto src = c.typed("src", napi_uint8_array, "Uint8Array");
      if (src.ElementLength() < static_cast<size_t>(n) * src_size) fail(env, "upload_converted: src is too short");
      const size_t dst_size = to == "f32" ? 4 : 2;
      void* dst = c.alloc(std::max<size_t>(static_cast<size_t>(n) * dst_size, 1));
      be.upload_converted(dst, to == "f32" ? DType::F32 : DType::BF16, Call::data_of(src), src_dtype.c_str(), n);
      if (to == "f32") {
        c.result("dst", dst, n);
      } else {
        auto arr = Napi::Uint16Array::New(env, static_cast<size_t>(n));
        if (n) be.download(arr.Data(), dst, static_cast<size_t>(n) * 2);
        c.out().Set("dst", arr);
      }
    } else {
      throw Napi::RangeError::New(env, "backendOp: unknown op '" + name + "'");
    }
    be.synchronize();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("backendOp ") + device + " " + name + ": " + e.what());
  }
  return c.out();
}

}  // namespace

void register_backend_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("backendOp", Napi::Function::New(env, BackendOp, "backendOp"));
}

}  // namespace sealkit::addon
