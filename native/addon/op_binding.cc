// opRun(name, dtype, args): runs one CPU kernel directly (or the thread pool's scheduler, or the
// sampler's choice of tokens), for tests and benchmarks.
//
// Inputs are typed arrays matching dtype ('f32' -> Float32Array, 'f64' -> Float64Array), Int32Array
// for ids/targets/positions/sequence tables, Float32Array for inv_freq (the kernel takes f32), and
// Uint16Array for bf16 weights. Every output comes back as a new typed array (inputs are never
// modified); "+=" outputs start from an optional initial array of the same name. Every argument is
// checked (type, integer-ness, range, array length against the shape) and a bad one throws a
// TypeError/RangeError naming the op and the argument: the kernels themselves assume valid shapes.
#include <napi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../core/huge_pages.h"
#include "../core/threadpool.h"
#include "../cpu/coded_weight.h"
#include "../cpu/kernels.h"
#include "../cpu/logit_kernels.h"
#include "../engine/job_threading.h"
#include "../engine/sampler.h"
#include "bindings.h"

namespace sealkit::addon {
namespace {

template <typename T>
struct JsArray;
template <>
struct JsArray<float> {
  static constexpr napi_typedarray_type type = napi_float32_array;
  static constexpr const char* name = "Float32Array";
  static constexpr const char* article = "a";
};
template <>
struct JsArray<double> {
  static constexpr napi_typedarray_type type = napi_float64_array;
  static constexpr const char* name = "Float64Array";
  static constexpr const char* article = "a";
};
template <>
struct JsArray<int32_t> {
  static constexpr napi_typedarray_type type = napi_int32_array;
  static constexpr const char* name = "Int32Array";
  static constexpr const char* article = "an";
};
template <>
struct JsArray<uint16_t> {
  static constexpr napi_typedarray_type type = napi_uint16_array;
  static constexpr const char* name = "Uint16Array";
  static constexpr const char* article = "a";
};

template <typename T>
struct View {
  const T* data = nullptr;
  int64_t len = 0;
};

// Shape parameters are capped so products of two of them cannot overflow int64.
constexpr int64_t kMaxDim = 2147483647;

// The args object of one opRun call, with checked accessors that name the op in every error.
class Args {
 public:
  Args(Napi::Env env, std::string op, Napi::Object obj) : env_(env), op_(std::move(op)), obj_(obj) {}

  Napi::Env env() const { return env_; }

  [[noreturn]] void type_error(const std::string& key, const std::string& msg) const {
    throw Napi::TypeError::New(env_, "opRun('" + op_ + "'): '" + key + "' " + msg);
  }
  [[noreturn]] void range_error(const std::string& key, const std::string& msg) const {
    throw Napi::RangeError::New(env_, "opRun('" + op_ + "'): '" + key + "' " + msg);
  }

  bool has(const char* key) const { return obj_.Has(key) && !obj_.Get(key).IsUndefined(); }
  Napi::Value value(const char* key) const { return obj_.Get(key); }
  const std::string& op() const { return op_; }

  double number(const char* key) const {
    if (!has(key)) type_error(key, "is required (a number)");
    Napi::Value v = obj_.Get(key);
    if (!v.IsNumber()) type_error(key, "must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) range_error(key, "must be finite");
    return d;
  }
  double number_or(const char* key, double def) const { return has(key) ? number(key) : def; }

  // An integer in [lo, kMaxDim].
  int64_t integer(const char* key, int64_t lo = 0) const {
    const double d = number(key);
    if (d != std::floor(d)) type_error(key, "must be an integer");
    if (d < static_cast<double>(lo) || d > static_cast<double>(kMaxDim))
      range_error(key, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(kMaxDim) + "]");
    return static_cast<int64_t>(d);
  }
  int64_t integer_or(const char* key, int64_t def, int64_t lo = 0) const { return has(key) ? integer(key, lo) : def; }

  bool boolean_or(const char* key, bool def) const {
    if (!has(key)) return def;
    Napi::Value v = obj_.Get(key);
    if (!v.IsBoolean()) type_error(key, "must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }

  std::string string_or(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    Napi::Value v = obj_.Get(key);
    if (!v.IsString()) type_error(key, "must be a string");
    return v.As<Napi::String>().Utf8Value();
  }

  // A typed array of element type T; len < 0 accepts any length, otherwise it must be exactly len
  // (or at least len when at_least).
  template <typename T>
  View<T> array(const char* key, int64_t len = -1, bool at_least = false) const {
    const std::string kind = std::string(JsArray<T>::article) + " " + JsArray<T>::name;
    if (!has(key)) type_error(key, "is required (" + kind + ")");
    Napi::Value v = obj_.Get(key);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != JsArray<T>::type)
      type_error(key, "must be " + kind);
    auto a = v.As<Napi::TypedArrayOf<T>>();
    const int64_t n = static_cast<int64_t>(a.ElementLength());
    if (len >= 0 && (at_least ? n < len : n != len))
      range_error(key, "has length " + std::to_string(n) + ", expected " + (at_least ? "at least " : "") +
                           std::to_string(len));
    return {a.Data(), n};
  }
  // Ids must index a table of `limit` rows (negative allowed only when allow_negative).
  void check_ids(const char* key, View<int32_t> ids, int64_t limit, bool allow_negative) const {
    for (int64_t i = 0; i < ids.len; ++i) {
      const int32_t id = ids.data[i];
      if (id >= limit || (id < 0 && !allow_negative))
        range_error(std::string(key) + "[" + std::to_string(i) + "]",
                    "is " + std::to_string(id) + ", expected " + (allow_negative ? "< " : "in [0, ") +
                        std::to_string(limit) + (allow_negative ? "" : ")"));
    }
  }

 private:
  Napi::Env env_;
  std::string op_;
  Napi::Object obj_;
};

// A new typed array of n elements, zero or copied from the optional initial array `key` (which must
// then have exactly n elements).
template <typename T>
Napi::TypedArrayOf<T> output(const Args& a, const char* key, int64_t n) {
  auto out = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(n));
  if (a.has(key)) {
    View<T> init = a.array<T>(key, n);
    if (n) std::memcpy(out.Data(), init.data, n * sizeof(T));
  } else if (n) {
    std::memset(out.Data(), 0, n * sizeof(T));
  }
  return out;
}

template <typename T>
Napi::TypedArrayOf<T> zeros(const Args& a, int64_t n) {
  auto out = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(n));
  if (n) std::memset(out.Data(), 0, n * sizeof(T));
  return out;
}

// A new typed array holding a copy of the required input `key` (for kernels that work in place).
template <typename T>
Napi::TypedArrayOf<T> copy_of(const Args& a, const char* key, int64_t n) {
  View<T> in = a.array<T>(key, n);
  auto out = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(n));
  if (n) std::memcpy(out.Data(), in.data, n * sizeof(T));
  return out;
}

// Elements spanned by `rows` rows of `cols` values with row stride ld.
int64_t extent(int64_t rows, int64_t cols, int64_t ld) { return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols; }

int64_t product(const Args& a, const char* what, int64_t x, int64_t y) {
  if (x != 0 && y > (int64_t(1) << 53) / x) a.range_error(what, "is too large");
  return x * y;
}

// ---- gemm ----------------------------------------------------------------------------------------

template <typename T>
struct GemmCall {
  cpu::GemmArgs<T> g;
  Napi::TypedArrayOf<T> c;
};

template <typename T>
GemmCall<T> gemm_args(const Args& a) {
  GemmCall<T> call;
  cpu::GemmArgs<T>& g = call.g;
  g.M = a.integer("M");
  g.N = a.integer("N");
  g.K = a.integer("K");
  g.trans_a = a.boolean_or("transA", false);
  g.trans_b = a.boolean_or("transB", false);
  const int64_t a_rows = g.trans_a ? g.K : g.M, a_cols = g.trans_a ? g.M : g.K;
  const int64_t b_rows = g.trans_b ? g.N : g.K, b_cols = g.trans_b ? g.K : g.N;
  g.lda = a.integer_or("lda", std::max<int64_t>(a_cols, 1), 1);
  g.ldb = a.integer_or("ldb", std::max<int64_t>(b_cols, 1), 1);
  g.ldc = a.integer_or("ldc", std::max<int64_t>(g.N, 1), 1);
  if (g.lda < a_cols) a.range_error("lda", "must be >= " + std::to_string(a_cols));
  if (g.ldb < b_cols) a.range_error("ldb", "must be >= " + std::to_string(b_cols));
  if (g.ldc < g.N) a.range_error("ldc", "must be >= N");
  // aDtype 'bf16': A as bf16 rows (a Uint16Array; GemmArgs::A_bf16), f32 calls with op(A) = A only.
  const std::string adt = a.string_or("aDtype", std::is_same_v<T, float> ? "f32" : "f64");
  if (std::is_same_v<T, float> && adt == "bf16") {
    if (g.trans_a) a.range_error("aDtype", "'bf16' is for op(A) = A (transA false)");
    if constexpr (std::is_same_v<T, float>) g.A_bf16 = a.array<uint16_t>("A", extent(a_rows, a_cols, g.lda), true).data;
  } else if (adt == (std::is_same_v<T, float> ? "f32" : "f64")) {
    g.A = a.array<T>("A", extent(a_rows, a_cols, g.lda), true).data;
  } else {
    a.range_error("aDtype", std::is_same_v<T, float> ? "must be 'f32' or 'bf16'" : "must be 'f64' for dtype f64");
  }
  const std::string bdt = a.string_or("bDtype", std::is_same_v<T, float> ? "f32" : "f64");
  const int64_t b_len = extent(b_rows, b_cols, g.ldb);
  if (std::is_same_v<T, float> && bdt == "bf16") {
    g.B = {a.array<uint16_t>("B", b_len, true).data, DType::BF16};
  } else if (bdt == (std::is_same_v<T, float> ? "f32" : "f64")) {
    g.B = {a.array<T>("B", b_len, true).data, std::is_same_v<T, float> ? DType::F32 : DType::F64};
  } else {
    a.range_error("bDtype", std::is_same_v<T, float> ? "must be 'f32' or 'bf16'" : "must be 'f64' for dtype f64");
  }
  g.alpha = static_cast<T>(a.number_or("alpha", 1));
  g.beta = static_cast<T>(a.number_or("beta", 0));
  call.c = output<T>(a, "C", product(a, "C", g.M, g.ldc));
  g.C = call.c.Data();
  return call;
}

// The optional low-rank update of gemm (C += updateScale * U op(V), U [M, rank], op(V) [rank, N]):
// present when the arguments carry U. With `segments` ([{row0, rows, V, ldv?, scale?}, ...]: a
// batch mixing adapters) each segment's rows take its own V and scale, and V and updateScale are
// not read.
struct UpdateArgs {
  cpu::LowRankUpdate base;
  std::vector<cpu::LowRankSegment> segments;
  cpu::LowRankUpdate update() const {
    cpu::LowRankUpdate u = base;
    if (!segments.empty()) {
      u.segments = segments.data();
      u.n_segments = static_cast<int>(segments.size());
    }
    return u;
  }
};

UpdateArgs update_args(const Args& a, const cpu::GemmArgs<float>& g) {
  UpdateArgs r;
  cpu::LowRankUpdate& u = r.base;
  u.rank = a.integer("rank", 1);
  u.trans_v = a.boolean_or("transV", false);
  u.ldu = a.integer_or("ldu", u.rank, 1);
  if (u.ldu < u.rank) a.range_error("ldu", "must be >= rank");
  const int64_t v_cols = u.trans_v ? u.rank : g.N;
  u.U = a.array<float>("U", extent(g.M, u.rank, u.ldu), true).data;
  auto v_len = [&](int64_t ldv) { return u.trans_v ? extent(g.N, u.rank, ldv) : extent(u.rank, g.N, ldv); };
  if (!a.has("segments")) {
    u.ldv = a.integer_or("ldv", v_cols, 1);
    if (u.ldv < v_cols) a.range_error("ldv", "must be >= " + std::to_string(v_cols));
    u.V = a.array<float>("V", v_len(u.ldv), true).data;
    u.scale = static_cast<float>(a.number_or("updateScale", 1));
    return r;
  }
  const Napi::Value list = a.value("segments");
  if (!list.IsArray()) a.type_error("segments", "must be an array of {row0, rows, V, ldv?, scale?}");
  const Napi::Array arr = list.As<Napi::Array>();
  if (arr.Length() == 0) a.range_error("segments", "must not be empty");
  int64_t next_row = 0;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    const std::string name = "segments[" + std::to_string(i) + "]";
    if (!arr.Get(i).IsObject()) a.type_error(name, "must be an object");
    const Args s(a.env(), a.op() + " " + name, arr.Get(i).As<Napi::Object>());
    cpu::LowRankSegment sg;
    sg.row0 = s.integer("row0");
    sg.rows = s.integer("rows");
    if (sg.row0 < next_row || sg.row0 + sg.rows > g.M)
      a.range_error(name, "rows must lie in C's rows, ascending and not overlapping");
    next_row = sg.row0 + sg.rows;
    sg.ldv = s.integer_or("ldv", v_cols, 1);
    if (sg.ldv < v_cols) s.range_error("ldv", "must be >= " + std::to_string(v_cols));
    sg.V = s.array<float>("V", v_len(sg.ldv), true).data;
    sg.scale = static_cast<float>(s.number_or("scale", 1));
    r.segments.push_back(sg);
  }
  return r;
}

// The update the arguments carry, if any (f32 only), checked once: op_gemm and op_gemm_bench then
// run run_gemm with it.
template <typename T>
std::optional<UpdateArgs> gemm_update(const Args& a, const cpu::GemmArgs<T>& g) {
  if (!a.has("U")) return std::nullopt;
  if constexpr (std::is_same_v<T, float>) return update_args(a, g);
  else a.range_error("U", "(a low-rank update) is for dtype f32 only");
}

// `packedB`: B packed ahead of the call (cpu::pack_weight from B as a [rows, ldb] weight), as the
// model packs its bf16 weights; null (and the result's packedB false) where no kernel reads one.
template <typename T>
std::unique_ptr<cpu::PackedWeight> packed_b(const Args& a, cpu::GemmArgs<T>& g) {
  if (!a.boolean_or("packedB", false)) return nullptr;
  if constexpr (std::is_same_v<T, float>) {
    const int64_t rows = g.trans_b ? g.N : g.K, cols = g.trans_b ? g.K : g.N;
    if (g.ldb != cols) a.range_error("ldb", "must be op(B)'s row length (the default) with packedB");
    std::unique_ptr<cpu::PackedWeight> pw = cpu::pack_weight(g.B, rows, cols, g.trans_b);
    g.packed_b = pw.get();
    return pw;
  } else {
    a.range_error("packedB", "is for dtype f32 only");
  }
}

// `codedB`: B coded in 12 bits ahead of the call (y = x W^T with bf16 B), as the model codes its
// weights for decoding: with packedB, the packed copy's strips (cpu::code_packed_strips, batched
// decoding), else B's rows (cpu::code_weight); null (and the result's codedB false) where the CPU
// lacks the kernel or B has too many escapes.
template <typename T>
std::unique_ptr<cpu::CodedWeight> coded_b(const Args& a, cpu::GemmArgs<T>& g) {
  if (!a.boolean_or("codedB", false)) return nullptr;
  if constexpr (std::is_same_v<T, float>) {
    if (!g.trans_b || g.B.dtype != DType::BF16) a.range_error("codedB", "is for y = x W^T (transB) with a bf16 B");
    if (g.ldb != g.K) a.range_error("ldb", "must be K (the default) with codedB");
    std::unique_ptr<cpu::CodedWeight> cw = g.packed_b ? cpu::code_packed_strips(*g.packed_b) : cpu::code_weight(g.B, g.N, g.K);
    g.coded_b = cw.get();
    return cw;
  } else {
    a.range_error("codedB", "is for dtype f32 only");
  }
}

template <typename T>
void run_gemm(const cpu::GemmArgs<T>& g, const std::optional<UpdateArgs>& update) {
  if constexpr (std::is_same_v<T, float>) {
    if (update) return cpu::gemm_with_update(g, update->update());
  }
  cpu::gemm(g);
}

template <typename T>
Napi::Object op_gemm(const Args& a) {
  GemmCall<T> call = gemm_args<T>(a);
  const std::unique_ptr<cpu::PackedWeight> packed = packed_b(a, call.g);
  const std::unique_ptr<cpu::CodedWeight> coded = coded_b(a, call.g);
  run_gemm(call.g, gemm_update(a, call.g));
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("C", call.c);
  r.Set("packedB", Napi::Boolean::New(a.env(), packed != nullptr));
  r.Set("codedB", Napi::Boolean::New(a.env(), coded != nullptr));
  return r;
}

// The MLP's fused gate/up/SwiGLU (cpu::gemm_gate_up_swiglu), f32 only: `gate` and `up`, each an
// object of gemm's arguments (packedB included), `ldAct` (default N) and `actBf16` (act as bf16 rows:
// a Uint16Array). Returns act [M, ldAct], each GEMM's C as the call left it (gateC, upC: their
// initial values where it fused) and `fused`.
template <typename T>
Napi::Object op_gemm_gate_up_swiglu(const Args& a) {
  if constexpr (!std::is_same_v<T, float>) {
    a.range_error("dtype", "must be 'f32' for gemm_gate_up_swiglu");
  } else {
    auto call = [&](const char* name) {
      const Napi::Value v = a.value(name);
      if (!v.IsObject()) a.type_error(name, "must be an object of gemm arguments");
      return Args(a.env(), a.op() + " " + name, v.As<Napi::Object>());
    };
    const Args gate_args = call("gate"), up_args = call("up");
    GemmCall<float> gate = gemm_args<float>(gate_args), up = gemm_args<float>(up_args);
    const std::unique_ptr<cpu::PackedWeight> gate_packed = packed_b(gate_args, gate.g);
    const std::unique_ptr<cpu::PackedWeight> up_packed = packed_b(up_args, up.g);
    if (gate.g.M != up.g.M || gate.g.N != up.g.N) a.range_error("up", "must have gate's M and N");
    const int64_t ld_act = a.integer_or("ldAct", std::max<int64_t>(up.g.N, 1), 1);
    if (ld_act < up.g.N) a.range_error("ldAct", "must be >= N");
    const int64_t act_len = product(a, "act", up.g.M, ld_act);
    Napi::Object r = Napi::Object::New(a.env());
    bool fused = false;
    if (a.boolean_or("actBf16", false)) {
      Napi::Uint16Array act = zeros<uint16_t>(a, act_len);
      fused = cpu::gemm_gate_up_swiglu(gate.g, up.g, nullptr, ld_act, act.Data());
      r.Set("act", act);
    } else {
      Napi::Float32Array act = zeros<float>(a, act_len);
      fused = cpu::gemm_gate_up_swiglu(gate.g, up.g, act.Data(), ld_act);
      r.Set("act", act);
    }
    r.Set("gateC", gate.c);
    r.Set("upC", up.c);
    r.Set("fused", Napi::Boolean::New(a.env(), fused));
    return r;
  }
}

// What the fused SwiGLU ops share: gemm's call (packedB and a low-rank update included; C is its
// scratch) and the length of their arrays strided like C ([M, ldc]).
struct SwigluCall {
  GemmCall<float> call;
  std::unique_ptr<cpu::PackedWeight> packed;
  std::optional<UpdateArgs> carried;
  cpu::LowRankUpdate update;
  int64_t len = 0;
  // The carried update as the fused calls take it (null: none); its segments point into `carried`.
  const cpu::LowRankUpdate* update_or_null() {
    if (!carried) return nullptr;
    update = carried->update();
    return &update;
  }
};
SwigluCall swiglu_call(const Args& a, const char* strided) {
  SwigluCall c{gemm_args<float>(a), nullptr, std::nullopt, {}, 0};
  c.packed = packed_b(a, c.call.g);
  c.carried = gemm_update(a, c.call.g);
  c.len = product(a, strided, c.call.g.M, c.call.g.ldc);
  return c;
}

// SwiGLU's backward pass on a GEMM's result (cpu::gemm_swiglu_backward), f32 only: gemm's arguments
// (packedB and a low-rank update included; C is its scratch) and `gate`, `up` ([M, ldc], like C).
// Returns dgate and dup ([M, ldc]; padding zero), C as the call left it and `fused`.
template <typename T>
Napi::Object op_gemm_swiglu_backward(const Args& a) {
  if constexpr (!std::is_same_v<T, float>) {
    a.range_error("dtype", "must be 'f32' for gemm_swiglu_backward");
  } else {
    SwigluCall c = swiglu_call(a, "gate");
    cpu::SwigluGrad s;
    s.gate = a.array<float>("gate", c.len).data;
    s.up = a.array<float>("up", c.len).data;
    Napi::Float32Array dgate = zeros<float>(a, c.len), dup = zeros<float>(a, c.len);
    s.dgate = dgate.Data();
    s.dup = dup.Data();
    const bool fused = cpu::gemm_swiglu_backward(c.call.g, c.update_or_null(), s);
    Napi::Object r = Napi::Object::New(a.env());
    r.Set("dgate", dgate);
    r.Set("dup", dup);
    r.Set("C", c.call.c);
    r.Set("fused", Napi::Boolean::New(a.env(), fused));
    return r;
  }
}

// SwiGLU's forward pass on the up projection's GEMM (cpu::gemm_up_swiglu), f32 only: gemm's
// arguments for up (packedB and a low-rank update included; C is its scratch) and `gate` ([M, ldc],
// like C). Returns act ([M, ldc]; padding zero), C as the call left it and `fused`.
template <typename T>
Napi::Object op_gemm_up_swiglu(const Args& a) {
  if constexpr (!std::is_same_v<T, float>) {
    a.range_error("dtype", "must be 'f32' for gemm_up_swiglu");
  } else {
    SwigluCall c = swiglu_call(a, "gate");
    const float* gate = a.array<float>("gate", c.len).data;
    Napi::Float32Array act = zeros<float>(a, c.len);
    const bool fused = cpu::gemm_up_swiglu(c.call.g, c.update_or_null(), gate, act.Data());
    Napi::Object r = Napi::Object::New(a.env());
    r.Set("act", act);
    r.Set("C", c.call.c);
    r.Set("fused", Napi::Boolean::New(a.env(), fused));
    return r;
  }
}
// `calls`: an array of 1 to `max` gemm argument objects (each parsed and checked as op gemm's).
std::vector<GemmCall<float>> gemm_calls(const Args& a, uint32_t max) {
  const Napi::Value v = a.value("calls");
  if (!v.IsArray()) a.type_error("calls", "must be an array of gemm arguments");
  const Napi::Array calls = v.As<Napi::Array>();
  if (calls.Length() < 1 || calls.Length() > max) a.range_error("calls", "must hold 1 to " + std::to_string(max) + " GEMMs");
  std::vector<GemmCall<float>> parsed;
  for (uint32_t i = 0; i < calls.Length(); ++i) {
    const Napi::Value c = calls.Get(i);
    if (!c.IsObject()) a.type_error("calls", "must be an array of objects");
    parsed.push_back(gemm_args<float>(Args(a.env(), a.op() + " calls[" + std::to_string(i) + "]", c.As<Napi::Object>())));
  }
  return parsed;
}

std::vector<cpu::GemmArgs<float>> gemm_args_of(const std::vector<GemmCall<float>>& calls) {
  std::vector<cpu::GemmArgs<float>> gs;
  for (const GemmCall<float>& c : calls) gs.push_back(c.g);
  return gs;
}

// The calls' results as C0, C1, ...
Napi::Object results_of(const Args& a, const std::vector<GemmCall<float>>& calls) {
  Napi::Object r = Napi::Object::New(a.env());
  for (size_t i = 0; i < calls.size(); ++i) r.Set("C" + std::to_string(i), calls[i].c);
  return r;
}

// Up to four GEMMs run as one group (cpu::gemm_group). Either `calls`, an array of gemm's arguments
// (any orientations, strides, alpha, beta, initial C), or GEMMs sharing x: C_i = x W_i^T (W_i
// [N_i, K] as B0..B3 with N0..N3, f32 or bf16 per bDtype; x f32 or bf16 rows per aDtype; `packedB`:
// each packed ahead, as the model's weights; `codedB`: each coded, as gemm's). Results as C0..C3, and codedB: all were coded.
template <typename T>
Napi::Object op_gemm_group(const Args& a) {
  if constexpr (!std::is_same_v<T, float>) {
    a.range_error("dtype", "must be 'f32' for gemm_group");
  } else if (a.has("calls")) {
    std::vector<GemmCall<float>> calls = gemm_calls(a, 4);
    std::vector<cpu::GemmArgs<float>> gs = gemm_args_of(calls);
    cpu::gemm_group(gs.data(), static_cast<int>(gs.size()));
    return results_of(a, calls);
  } else {
    const int64_t M = a.integer("M", 1), K = a.integer("K", 1), n = a.integer("n", 1);
    if (n > 4) a.range_error("n", "must be at most 4");
    const int64_t lda = a.integer_or("lda", K, 1);
    if (lda < K) a.range_error("lda", "must be >= K");
    // aDtype 'bf16': x as bf16 rows (a Uint16Array; GemmArgs::A_bf16).
    const bool a16 = a.string_or("aDtype", "f32") == "bf16";
    const float* A = a16 ? nullptr : a.array<float>("A", extent(M, K, lda), true).data;
    const uint16_t* A16 = a16 ? a.array<uint16_t>("A", extent(M, K, lda), true).data : nullptr;
    const bool bf16 = a.string_or("bDtype", "f32") == "bf16";
    cpu::GemmArgs<float> gs[4];
    std::unique_ptr<cpu::PackedWeight> packed[4];  // `packedB`: each W_i packed ahead, as the model's
    std::unique_ptr<cpu::CodedWeight> coded[4];
    bool all_coded = true;
    Napi::Object r = Napi::Object::New(a.env());
    for (int64_t i = 0; i < n; ++i) {
      const std::string b = "B" + std::to_string(i), nk = "N" + std::to_string(i), c = "C" + std::to_string(i);
      cpu::GemmArgs<float>& g = gs[i];
      g.M = M; g.K = K; g.A = A; g.A_bf16 = A16; g.lda = lda; g.trans_b = true;
      g.N = a.integer(nk.c_str(), 1);
      g.ldb = K;
      if (bf16) g.B = {a.array<uint16_t>(b.c_str(), product(a, b.c_str(), g.N, K)).data, DType::BF16};
      else g.B = {a.array<float>(b.c_str(), product(a, b.c_str(), g.N, K)).data, DType::F32};
      auto out = output<float>(a, c.c_str(), product(a, c.c_str(), M, g.N));
      g.C = out.Data(); g.ldc = g.N;
      r.Set(c, out);
      packed[i] = packed_b(a, g);
      if (bf16) coded[i] = coded_b(a, g);
      all_coded = all_coded && coded[i] != nullptr;
    }
    cpu::gemm_group(gs, static_cast<int>(n));
    r.Set("codedB", all_coded);
    return r;
  }
}

// Independent chains of GEMMs (cpu::gemm_chains): `calls`, gemm's arguments chain by chain (each
// call its own C), `chainLen` calls per chain. Results as C0..C(n-1), and `chained`: whether the
// chains ran one per task.
template <typename T>
Napi::Object op_gemm_chains(const Args& a) {
  if constexpr (!std::is_same_v<T, float>) {
    a.range_error("dtype", "must be 'f32' for gemm_chains");
  } else {
    const int64_t chain_len = a.integer("chainLen", 1);
    std::vector<GemmCall<float>> calls = gemm_calls(a, 1024);
    if (static_cast<int64_t>(calls.size()) % chain_len != 0) a.range_error("chainLen", "must divide the number of calls");
    std::vector<cpu::GemmArgs<float>> gs = gemm_args_of(calls);
    const bool chained = cpu::gemm_chains(gs.data(), static_cast<int>(gs.size() / chain_len), static_cast<int>(chain_len));
    Napi::Object r = results_of(a, calls);
    r.Set("chained", chained);
    return r;
  }
}

// A 64-byte-aligned copy of `bytes` bytes at src, freed with its owner.
std::unique_ptr<void, void (*)(void*)> aligned_copy(const void* src, size_t bytes) {
  const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  std::unique_ptr<void, void (*)(void*)> p(std::aligned_alloc(64, rounded), std::free);
  if (!p) throw std::bad_alloc();
  if (bytes) std::memcpy(p.get(), src, bytes);
  return p;
}

// Times `iters` calls natively (after one warm-up) and returns each call's seconds, so benchmarks
// measure the kernel rather than the JS boundary. The operands are copied into 64-byte-aligned
// buffers first, as the CPU backend allocates every tensor: a typed array's data need not be
// aligned to a cache line, and then most of a kernel's vector loads of A split across two lines
// (bench/gemv.ts's 8-row GEMMs ran at 110-120 GFLOP/s on unaligned rows, 184-197 aligned). Returns
// the times and C as the last call left it (with beta != 0 every call adds onto C).
template <typename T>
Napi::Object op_gemm_bench(const Args& a) {
  GemmCall<T> call = gemm_args<T>(a);
  const int64_t iters = a.integer_or("iters", 10, 1);
  cpu::GemmArgs<T>& g = call.g;
  const size_t a_len = extent(g.trans_a ? g.K : g.M, g.trans_a ? g.M : g.K, g.lda);
  const size_t b_len = extent(g.trans_b ? g.N : g.K, g.trans_b ? g.K : g.N, g.ldb);
  // (A as bf16 rows, aDtype 'bf16': two bytes an element.)
  const void* a_src = g.A_bf16 ? static_cast<const void*>(g.A_bf16) : static_cast<const void*>(g.A);
  const auto a_copy = aligned_copy(a_src, a_len * (g.A_bf16 ? sizeof(uint16_t) : sizeof(T)));
  const auto b_copy = aligned_copy(g.B.data, b_len * dtype_size(g.B.dtype));
  const auto c_copy = aligned_copy(g.C, static_cast<size_t>(g.M * g.ldc) * sizeof(T));
  if (g.A_bf16) g.A_bf16 = static_cast<const uint16_t*>(a_copy.get());
  else g.A = static_cast<const T*>(a_copy.get());
  g.B.data = b_copy.get();
  T* const c_out = g.C;
  g.C = static_cast<T*>(c_copy.get());
  const std::unique_ptr<cpu::PackedWeight> packed = packed_b(a, g);  // from the aligned copy of B
  const std::unique_ptr<cpu::CodedWeight> coded = coded_b(a, g);
  // With U (and V, rank...), gemm's low-rank update rides along, as in op_gemm.
  const std::optional<UpdateArgs> update = gemm_update(a, g);
  run_gemm(g, update);
  auto times = Napi::Float64Array::New(a.env(), static_cast<size_t>(iters));
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run_gemm(g, update);
    times[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::memcpy(c_out, g.C, static_cast<size_t>(g.M * g.ldc) * sizeof(T));
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("times", times);
  r.Set("C", call.c);
  return r;
}

// ---- the streaming scheduler (parallel_streams) ---------------------------------------------------
// Records every chunk it hands out: begin, end, run_end, continues and the thread that ran it (in
// the order each thread saw them). `slowItem`: the chunk holding that item sleeps `slowMicros`
// first, so other threads run out of their own ranges and must take its range's tail.
template <typename T>
Napi::Object op_stream_chunks(const Args& a) {
  const int64_t n = a.integer("n", 0), grain = a.integer("grain", 1);
  const int64_t slow_item = a.integer_or("slowItem", -1, -1), slow_us = a.integer_or("slowMicros", 0, 0);
  if (slow_us > 1000000) a.range_error("slowMicros", "must be at most 1000000");
  struct Record {
    StreamChunk chunk;
    int thread;
  };
  std::mutex mutex;
  std::vector<Record> records;
  std::map<std::thread::id, int> thread_index;
  parallel_streams(n, grain, [&](const StreamChunk& c) {
    if (c.begin <= slow_item && slow_item < c.end) std::this_thread::sleep_for(std::chrono::microseconds(slow_us));
    std::lock_guard<std::mutex> lock(mutex);
    auto it = thread_index.emplace(std::this_thread::get_id(), static_cast<int>(thread_index.size())).first;
    records.push_back({c, it->second});
  });
  const size_t k = records.size();
  auto begin = Napi::Float64Array::New(a.env(), k), end = Napi::Float64Array::New(a.env(), k);
  auto run_end = Napi::Float64Array::New(a.env(), k);
  auto continues = Napi::Int32Array::New(a.env(), k), thread = Napi::Int32Array::New(a.env(), k);
  for (size_t i = 0; i < k; ++i) {
    begin[i] = static_cast<double>(records[i].chunk.begin);
    end[i] = static_cast<double>(records[i].chunk.end);
    run_end[i] = static_cast<double>(records[i].chunk.run_end);
    continues[i] = records[i].chunk.continues ? 1 : 0;
    thread[i] = records[i].thread;
  }
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("begin", begin);
  r.Set("end", end);
  r.Set("runEnd", run_end);
  r.Set("continues", continues);
  r.Set("thread", thread);
  return r;
}

// ---- the pool itself (ThreadPool::run) -------------------------------------------------------------
// `runs` runs of `tasks` tasks back to back, `gapMicros` apart (past the pool's spin time, workers
// go to sleep between runs and must be woken). Counts how often each task ran and on how many
// threads; in run `throwRun`, task `throwTask` throws, and the error each run rethrows is counted
// and its message kept.
template <typename T>
Napi::Object op_pool_runs(const Args& a) {
  const int64_t runs = a.integer("runs", 1), tasks = a.integer("tasks", 1);
  const int64_t gap_us = a.integer_or("gapMicros", 0, 0);
  const int64_t throw_run = a.integer_or("throwRun", -1, -1), throw_task = a.integer_or("throwTask", -1, -1);
  if (runs > 1000000) a.range_error("runs", "must be at most 1000000");
  if (tasks > 1000000) a.range_error("tasks", "must be at most 1000000");
  if (gap_us > 100000) a.range_error("gapMicros", "must be at most 100000");
  std::vector<std::atomic<int64_t>> counts(static_cast<size_t>(tasks));
  std::atomic<uint64_t> threads_seen{0};
  int64_t errors = 0;
  std::string message;
  for (int64_t r = 0; r < runs; ++r) {
    if (gap_us > 0 && r > 0) std::this_thread::sleep_for(std::chrono::microseconds(gap_us));
    try {
      global_pool().run(tasks, [&](int64_t t, int thread) {
        counts[static_cast<size_t>(t)].fetch_add(1, std::memory_order_relaxed);
        if (thread < 64) threads_seen.fetch_or(uint64_t(1) << thread, std::memory_order_relaxed);
        if (r == throw_run && t == throw_task) throw std::runtime_error("task " + std::to_string(t) + " failed");
      });
    } catch (const std::exception& e) {
      ++errors;
      message = e.what();
    }
  }
  auto count = Napi::Float64Array::New(a.env(), static_cast<size_t>(tasks));
  for (int64_t t = 0; t < tasks; ++t) count[static_cast<size_t>(t)] = static_cast<double>(counts[static_cast<size_t>(t)].load());
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("counts", count);
  r.Set("threads", Napi::Number::New(a.env(), static_cast<double>(__builtin_popcountll(threads_seen.load()))));
  r.Set("errors", Napi::Number::New(a.env(), static_cast<double>(errors)));
  r.Set("message", Napi::String::New(a.env(), message));
  return r;
}

// ---- weights' blocks on shared huge-page slabs (native/core/huge_pages.h) -------------------------
// Allocates blocks of `sizes` bytes (weight_block_alloc), fills each with its own byte, checks every
// byte of every block afterwards (an overlap would have overwritten some), then frees them in
// `freeOrder` (a permutation). Returns the slab statistics before, after the allocations and after
// the frees, and whether every block was 64-byte aligned and every large one huge-page aligned.
template <typename T>
Napi::Object op_weight_blocks(const Args& a) {
  View<int32_t> sizes = a.array<int32_t>("sizes");
  View<int32_t> order = a.array<int32_t>("freeOrder", sizes.len);
  const size_t n = static_cast<size_t>(sizes.len);
  std::vector<bool> seen(n, false);
  for (size_t i = 0; i < n; ++i) {
    if (sizes.data[i] < 1) a.range_error("sizes", "every size must be at least 1");
    const int32_t j = order.data[i];
    if (j < 0 || static_cast<size_t>(j) >= n || seen[static_cast<size_t>(j)])
      a.range_error("freeOrder", "must be a permutation of 0 .. sizes.length - 1");
    seen[static_cast<size_t>(j)] = true;
  }
  const WeightSlabStats before = weight_slab_stats();
  std::vector<uint8_t*> blocks(n, nullptr);
  bool aligned = true, large_aligned = true;
  for (size_t i = 0; i < n; ++i) {
    const size_t bytes = static_cast<size_t>(sizes.data[i]);
    blocks[i] = static_cast<uint8_t*>(weight_block_alloc(bytes));
    const uintptr_t at = reinterpret_cast<uintptr_t>(blocks[i]);
    aligned = aligned && at % 64 == 0;
    if (bytes >= kWeightSlabBlockMax && huge_pages_wanted()) large_aligned = large_aligned && at % kHugePageBytes == 0;
    std::memset(blocks[i], static_cast<int>(i % 251 + 1), bytes);
  }
  const WeightSlabStats allocated = weight_slab_stats();
  bool intact = true;
  for (size_t i = 0; i < n && intact; ++i)
    for (size_t k = 0; k < static_cast<size_t>(sizes.data[i]); ++k)
      if (blocks[i][k] != static_cast<uint8_t>(i % 251 + 1)) {
        intact = false;
        break;
      }
  for (size_t i = 0; i < n; ++i) weight_block_free(blocks[static_cast<size_t>(order.data[i])]);
  const WeightSlabStats freed = weight_slab_stats();
  Napi::Object r = Napi::Object::New(a.env());
  auto stats = [&](const WeightSlabStats& st) {
    Napi::Object o = Napi::Object::New(a.env());
    o.Set("slabs", Napi::Number::New(a.env(), static_cast<double>(st.slabs)));
    o.Set("bytes", Napi::Number::New(a.env(), static_cast<double>(st.bytes)));
    o.Set("blocks", Napi::Number::New(a.env(), static_cast<double>(st.blocks)));
    return o;
  };
  r.Set("before", stats(before));
  r.Set("allocated", stats(allocated));
  r.Set("freed", stats(freed));
  r.Set("aligned", Napi::Boolean::New(a.env(), aligned));
  r.Set("largeAligned", Napi::Boolean::New(a.env(), large_aligned));
  r.Set("intact", Napi::Boolean::New(a.env(), intact));
  r.Set("hugePages", Napi::Boolean::New(a.env(), huge_pages_wanted()));
  r.Set("slabBytes", Napi::Number::New(a.env(), static_cast<double>(kWeightSlabBytes)));
  r.Set("blockMax", Napi::Number::New(a.env(), static_cast<double>(kWeightSlabBlockMax)));
  return r;
}

// ---- which jobs run inline (native/engine/job_threading.h) ----------------------------------------
// The policy fed job after job of `tokens` tokens: job i takes inlineMs[i] if the policy runs it
// inline, else pooledMs[i]. Returns each job's way (1 = inline) and where the policy ended.
template <typename T>
Napi::Object op_job_threading_policy(const Args& a) {
  View<float> pooled = a.array<float>("pooledMs");
  View<float> inlined = a.array<float>("inlineMs", pooled.len);
  const int64_t tokens = a.integer("tokens", 1);
  JobThreading policy;
  auto ways = Napi::Int32Array::New(a.env(), static_cast<size_t>(pooled.len));
  for (int64_t i = 0; i < pooled.len; ++i) {
    const bool on = policy.decide(JobKind::TrainStep, tokens);
    ways[static_cast<size_t>(i)] = on ? 1 : 0;
    policy.record(JobKind::TrainStep, tokens, on, on ? inlined.data[i] : pooled.data[i]);
  }
  const std::vector<JobThreading::Report> rows = policy.report();
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("inline", ways);
  r.Set("inlineNow", rows.empty() ? false : rows[0].inline_now);
  r.Set("inlineJobs", rows.empty() ? 0.0 : static_cast<double>(rows[0].inline_jobs));
  return r;
}

// ---- sampling (native/engine/sampler.h) ---------------------------------------------------------
// The tokens temperature / top-k / top-p sampling keeps for one row of logits, and their weights,
// in the order the sampler walks them.
template <typename T>
Napi::Object op_sampling_distribution(const Args& a) {
  View<float> logits = a.array<float>("logits");
  if (logits.len < 1) a.range_error("logits", "must not be empty");
  SamplingParams p;
  p.temperature = a.number("temperature");
  if (!(p.temperature > 0)) a.range_error("temperature", "must be > 0 (0 is greedy: nothing to weigh)");
  p.top_k = a.integer_or("topK", 0, 0);
  p.top_p = a.number_or("topP", 1);
  if (!(p.top_p > 0 && p.top_p <= 1)) a.range_error("topP", "must be in (0, 1]");
  SamplerScratch scratch;
  std::vector<int32_t> ids;
  std::vector<double> weights;
  sampling_distribution(logits.data, logits.len, p, scratch, ids, weights);
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("ids", to_js(a.env(), ids));
  r.Set("weights", to_js(a.env(), weights));
  return r;
}

// Greedy decoding's pick: the lowest index of the largest logit, NaN counting as -inf.
template <typename T>
Napi::Object op_argmax(const Args& a) {
  View<float> logits = a.array<float>("logits");
  if (logits.len < 1) a.range_error("logits", "must not be empty");
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("index", Napi::Number::New(a.env(), static_cast<double>(cpu::argmax(logits.data, logits.len))));
  return r;
}

// ---- embedding -----------------------------------------------------------------------------------

template <typename T>
Napi::Object op_embedding_forward(const Args& a) {
  const int64_t vocab = a.integer("vocab", 1), dim = a.integer("dim", 1);
  View<int32_t> ids = a.array<int32_t>("ids");
  a.check_ids("ids", ids, vocab, false);
  const int64_t table_len = product(a, "table", vocab, dim);
  WeightView table;
  const std::string tdt = a.string_or("tableDtype", std::is_same_v<T, float> ? "f32" : "f64");
  if (std::is_same_v<T, float> && tdt == "bf16") {
    table = {a.array<uint16_t>("table", table_len).data, DType::BF16};
  } else if (tdt == (std::is_same_v<T, float> ? "f32" : "f64")) {
    table = {a.array<T>("table", table_len).data, std::is_same_v<T, float> ? DType::F32 : DType::F64};
  } else {
    a.range_error("tableDtype", std::is_same_v<T, float> ? "must be 'f32' or 'bf16'" : "must be 'f64' for dtype f64");
  }
  auto out = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(product(a, "ids", ids.len, dim)));
  cpu::embedding_forward<T>(ids.data, ids.len, table, dim, out.Data());
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("out", out);
  return r;
}

template <typename T>
Napi::Object op_embedding_backward(const Args& a) {
  const int64_t vocab = a.integer("vocab", 1), dim = a.integer("dim", 1);
  View<int32_t> ids = a.array<int32_t>("ids");
  a.check_ids("ids", ids, vocab, false);
  View<T> dout = a.array<T>("dout", product(a, "dout", ids.len, dim));
  auto dtable = output<T>(a, "dtable", product(a, "dtable", vocab, dim));
  cpu::embedding_backward<T>(ids.data, ids.len, dout.data, dim, dtable.Data());
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("dtable", dtable);
  return r;
}

// ---- RMSNorm -------------------------------------------------------------------------------------

// RMSNorm of x; with `r`, x += r first (cpu::residual_rmsnorm_forward), and the updated x is
// returned too.
template <typename T>
Napi::Object op_rmsnorm_forward(const Args& a) {
  const int64_t rows = a.integer("rows"), dim = a.integer("dim", 1);
  const double eps = a.number("eps");
  if (eps < 0) a.range_error("eps", "must be >= 0");
  const int64_t n = product(a, "x", rows, dim);
  View<T> x = a.array<T>("x", n), w = a.array<T>("w", dim);
  auto y = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(n));
  auto rstd = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(rows));
  Napi::Object r = Napi::Object::New(a.env());
  if (a.has("r")) {
    auto sum = copy_of<T>(a, "x", n);
    cpu::residual_rmsnorm_forward<T>(sum.Data(), a.array<T>("r", n).data, w.data, y.Data(), rstd.Data(), rows, dim, eps);
    r.Set("x", sum);
  } else {
    cpu::rmsnorm_forward<T>(x.data, w.data, y.Data(), rstd.Data(), rows, dim, eps);
  }
  r.Set("y", y);
  r.Set("rstd", rstd);
  return r;
}

template <typename T>
Napi::Object op_rmsnorm_backward(const Args& a) {
  const int64_t rows = a.integer("rows"), dim = a.integer("dim", 1);
  const int64_t n = product(a, "x", rows, dim);
  View<T> x = a.array<T>("x", n), w = a.array<T>("w", dim), rstd = a.array<T>("rstd", rows), dy = a.array<T>("dy", n);
  const bool with_dw = a.boolean_or("computeDw", true);
  auto dx = output<T>(a, "dx", n);
  Napi::Object r = Napi::Object::New(a.env());
  if (with_dw) {
    auto dw = output<T>(a, "dw", dim);
    cpu::rmsnorm_backward<T>(x.data, w.data, rstd.data, dy.data, dx.Data(), dw.Data(), rows, dim);
    r.Set("dw", dw);
  } else {
    cpu::rmsnorm_backward<T>(x.data, w.data, rstd.data, dy.data, dx.Data(), nullptr, rows, dim);
  }
  r.Set("dx", dx);
  return r;
}

// ---- RoPE ----------------------------------------------------------------------------------------

template <typename T, bool Backward>
Napi::Object op_rope(const Args& a) {
  const int64_t rows = a.integer("rows"), heads = a.integer("heads", 1), head_dim = a.integer("headDim", 2);
  if (head_dim % 2) a.range_error("headDim", "must be even");
  const int64_t row_stride = a.integer_or("rowStride", product(a, "heads", heads, head_dim), 1);
  if (row_stride < heads * head_dim) a.range_error("rowStride", "must be >= heads * headDim");
  View<int32_t> positions = a.array<int32_t>("positions", rows);
  View<float> inv_freq = a.array<float>("invFreq", head_dim / 2);
  const char* key = Backward ? "dx" : "x";
  auto x = copy_of<T>(a, key, product(a, key, rows, row_stride));
  if (Backward)
    cpu::rope_backward<T>(x.Data(), rows, row_stride, heads, head_dim, positions.data, inv_freq.data);
  else
    cpu::rope_forward<T>(x.Data(), rows, row_stride, heads, head_dim, positions.data, inv_freq.data);
  Napi::Object r = Napi::Object::New(a.env());
  r.Set(key, x);
  return r;
}

// ---- attention -----------------------------------------------------------------------------------

struct AttnCall {
  cpu::AttentionShape s;
  int64_t rows = 0;
  View<int32_t> seq_start, seq_len;
};

AttnCall attention_args(const Args& a) {
  AttnCall c;
  cpu::AttentionShape& s = c.s;
  c.rows = a.integer("rows");
  s.heads = a.integer("heads", 1);
  s.kv_heads = a.integer("kvHeads", 1);
  s.head_dim = a.integer("headDim", 1);
  if (s.heads % s.kv_heads) a.range_error("kvHeads", "must divide heads");
  s.q_stride = a.integer_or("qStride", product(a, "heads", s.heads, s.head_dim), 1);
  s.kv_stride = a.integer_or("kvStride", product(a, "kvHeads", s.kv_heads, s.head_dim), 1);
  if (s.q_stride < s.heads * s.head_dim) a.range_error("qStride", "must be >= heads * headDim");
  if (s.kv_stride < s.kv_heads * s.head_dim) a.range_error("kvStride", "must be >= kvHeads * headDim");
  s.scale = a.number_or("scale", 1.0 / std::sqrt(static_cast<double>(s.head_dim)));
  s.bf16_products = a.boolean_or("bf16Products", false);
  c.seq_start = a.array<int32_t>("seqStart");
  c.seq_len = a.array<int32_t>("seqLen", c.seq_start.len);
  // Sequences must lie inside the rows and not overlap (the backward pass gives each sequence's
  // dk/dv rows to one task).
  std::vector<std::pair<int64_t, int64_t>> spans;  // (start, end) of the non-empty sequences
  for (int64_t i = 0; i < c.seq_start.len; ++i) {
    const int64_t st = c.seq_start.data[i], len = c.seq_len.data[i];
    const std::string at = "[" + std::to_string(i) + "]";
    if (st < 0 || st > c.rows) a.range_error("seqStart" + at, "is " + std::to_string(st) + ", outside [0, rows]");
    if (len < 0 || st + len > c.rows) a.range_error("seqLen" + at, "is " + std::to_string(len) + ", runs past rows");
    if (len > 0) spans.emplace_back(st, st + len);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second)
      a.range_error("seqStart", "sequences overlap at row " + std::to_string(spans[i].first));
  s.seq_start = c.seq_start.data;
  s.seq_len = c.seq_len.data;
  s.n_seqs = c.seq_start.len;
  return c;
}

template <typename T>
Napi::Object op_attention_forward(const Args& a) {
  AttnCall c = attention_args(a);
  const cpu::AttentionShape& s = c.s;
  View<T> q = a.array<T>("q", product(a, "q", c.rows, s.q_stride));
  View<T> k = a.array<T>("k", product(a, "k", c.rows, s.kv_stride));
  View<T> v = a.array<T>("v", product(a, "v", c.rows, s.kv_stride));
  auto out = zeros<T>(a, product(a, "out", c.rows, s.heads * s.head_dim));
  auto lse = zeros<T>(a, product(a, "lse", c.rows, s.heads));
  cpu::attention_forward<T>(s, q.data, k.data, v.data, out.Data(), lse.Data());
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("out", out);
  r.Set("lse", lse);
  return r;
}

template <typename T>
Napi::Object op_attention_backward(const Args& a) {
  AttnCall c = attention_args(a);
  const cpu::AttentionShape& s = c.s;
  const int64_t q_len = product(a, "q", c.rows, s.q_stride), kv_len = product(a, "k", c.rows, s.kv_stride);
  const int64_t o_len = product(a, "out", c.rows, s.heads * s.head_dim);
  View<T> q = a.array<T>("q", q_len), k = a.array<T>("k", kv_len), v = a.array<T>("v", kv_len);
  View<T> out = a.array<T>("out", o_len), lse = a.array<T>("lse", product(a, "lse", c.rows, s.heads));
  View<T> dout = a.array<T>("dout", o_len);
  auto dq = output<T>(a, "dq", q_len);
  auto dk = output<T>(a, "dk", kv_len);
  auto dv = output<T>(a, "dv", kv_len);
  cpu::attention_backward<T>(s, q.data, k.data, v.data, out.data, lse.data, dout.data, dq.Data(), dk.Data(),
                             dv.Data());
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("dq", dq);
  r.Set("dk", dk);
  r.Set("dv", dv);
  return r;
}

// Times `iters` forward and `iters` backward calls natively (after one warm-up of each) on the given
// q, k, v and dout, into scratch of its own: the kernels' time without the per-call marshalling and
// output allocation of the ops above (bench/ab.ts's ATTN shapes). Returns the times and the last
// call's out, dq, dk and dv.
template <typename T>
Napi::Object op_attention_bench(const Args& a) {
  AttnCall c = attention_args(a);
  const cpu::AttentionShape& s = c.s;
  const int64_t iters = a.integer_or("iters", 10, 1);
  const int64_t q_len = product(a, "q", c.rows, s.q_stride), kv_len = product(a, "k", c.rows, s.kv_stride);
  const int64_t o_len = product(a, "out", c.rows, s.heads * s.head_dim);
  View<T> q = a.array<T>("q", q_len), k = a.array<T>("k", kv_len), v = a.array<T>("v", kv_len);
  View<T> dout = a.array<T>("dout", o_len);
  std::vector<T> out(static_cast<size_t>(o_len)), lse(static_cast<size_t>(product(a, "lse", c.rows, s.heads)));
  std::vector<T> dq(static_cast<size_t>(q_len)), dk(static_cast<size_t>(kv_len)), dv(static_cast<size_t>(kv_len));
  auto forward = [&] { cpu::attention_forward<T>(s, q.data, k.data, v.data, out.data(), lse.data()); };
  auto backward = [&] {
    cpu::attention_backward<T>(s, q.data, k.data, v.data, out.data(), lse.data(), dout.data, dq.data(), dk.data(),
                               dv.data());
  };
  auto timed = [&](auto&& run) {
    run();
    auto times = Napi::Float64Array::New(a.env(), static_cast<size_t>(iters));
    for (int64_t i = 0; i < iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      run();
      times[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    return times;
  };
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("forward", timed(forward));
  r.Set("backward", timed(backward));
  // The last call's results, so a test can check that the timed calls are the kernels' own.
  auto copy = [&](const std::vector<T>& x) {
    auto t = Napi::TypedArrayOf<T>::New(a.env(), x.size());
    if (!x.empty()) std::memcpy(t.Data(), x.data(), x.size() * sizeof(T));
    return t;
  };
  r.Set("out", copy(out));
  r.Set("dq", copy(dq));
  r.Set("dk", copy(dk));
  r.Set("dv", copy(dv));
  return r;
}

// ---- SwiGLU --------------------------------------------------------------------------------------

template <typename T>
Napi::Object op_swiglu_forward(const Args& a) {
  View<T> gate = a.array<T>("gate");
  View<T> up = a.array<T>("up", gate.len);
  auto out = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(gate.len));
  cpu::swiglu_forward<T>(gate.data, up.data, out.Data(), gate.len);
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("out", out);
  return r;
}

template <typename T>
Napi::Object op_swiglu_backward(const Args& a) {
  View<T> gate = a.array<T>("gate");
  View<T> up = a.array<T>("up", gate.len), dout = a.array<T>("dout", gate.len);
  auto dgate = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(gate.len));
  auto dup = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(gate.len));
  cpu::swiglu_backward<T>(gate.data, up.data, dout.data, dgate.Data(), dup.Data(), gate.len);
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("dgate", dgate);
  r.Set("dup", dup);
  return r;
}

// ---- cross-entropy -------------------------------------------------------------------------------

// Returns loss, and grad (the logits overwritten by their gradient) when gradScale is given.
template <typename T>
Napi::Object op_cross_entropy(const Args& a) {
  const int64_t rows = a.integer("rows"), vocab = a.integer("vocab", 1);
  View<int32_t> targets = a.array<int32_t>("targets", rows);
  a.check_ids("targets", targets, vocab, true);
  auto logits = copy_of<T>(a, "logits", product(a, "logits", rows, vocab));
  const T* grad_scale = a.has("gradScale") ? a.array<T>("gradScale", rows).data : nullptr;
  auto loss = Napi::TypedArrayOf<T>::New(a.env(), static_cast<size_t>(rows));
  cpu::cross_entropy<T>(logits.Data(), targets.data, rows, vocab, loss.Data(), grad_scale);
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("loss", loss);
  if (grad_scale) r.Set("grad", logits);
  return r;
}

// ---- optimiser and reductions --------------------------------------------------------------------

// lr, beta1, beta2, eps, weightDecay and step, checked.
cpu::AdamWParams adamw_params(const Args& a) {
  cpu::AdamWParams p;
  p.lr = a.number("lr");
  p.beta1 = a.number_or("beta1", p.beta1);
  p.beta2 = a.number_or("beta2", p.beta2);
  p.eps = a.number_or("eps", p.eps);
  p.weight_decay = a.number_or("weightDecay", p.weight_decay);
  p.step = a.integer("step", 1);
  if (p.beta1 < 0 || p.beta1 >= 1) a.range_error("beta1", "must be in [0, 1)");
  if (p.beta2 < 0 || p.beta2 >= 1) a.range_error("beta2", "must be in [0, 1)");
  if (p.eps <= 0) a.range_error("eps", "must be > 0");
  return p;
}

template <typename T>
Napi::Object op_adamw(const Args& a) {
  View<T> grad = a.array<T>("grad");
  const int64_t n = grad.len;
  const cpu::AdamWParams p = adamw_params(a);
  auto param = copy_of<T>(a, "param", n);
  auto m = copy_of<T>(a, "m", n);
  auto v = copy_of<T>(a, "v", n);
  cpu::adamw_step<T>(param.Data(), grad.data, m.Data(), v.Data(), n, p);
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("param", param);
  r.Set("m", m);
  r.Set("v", v);
  return r;
}

// A whole optimiser step's tensors at once (f32 only): param, grad, m and v hold the tensors back
// to back, `sizes` their lengths. Returns the gradients' sum of squares (sum_squares_many, before
// scaling), then param, m and v after adamw_many with gradScale, and the zeroed grad.
template <typename T>
Napi::Object op_optimizer_many(const Args& a) {
  if constexpr (!std::is_same_v<T, float>) {
    a.type_error("dtype", "optimizer_many is f32 only");
  } else {
    View<int32_t> sizes = a.array<int32_t>("sizes");
    int64_t total = 0;
    for (int64_t i = 0; i < sizes.len; ++i) {
      if (sizes.data[i] < 0) a.range_error("sizes[" + std::to_string(i) + "]", "must be >= 0");
      total += sizes.data[i];
    }
    auto grad = copy_of<float>(a, "grad", total);
    const cpu::AdamWParams p = adamw_params(a);
    const float grad_scale = static_cast<float>(a.number_or("gradScale", 1.0));
    auto param = copy_of<float>(a, "param", total);
    auto m = copy_of<float>(a, "m", total);
    auto v = copy_of<float>(a, "v", total);
    std::vector<cpu::OptimTensor> ts;
    int64_t off = 0;
    for (int64_t i = 0; i < sizes.len; ++i) {
      ts.push_back({param.Data() + off, grad.Data() + off, m.Data() + off, v.Data() + off, sizes.data[i]});
      off += sizes.data[i];
    }
    Napi::Object r = Napi::Object::New(a.env());
    r.Set("sumSquares", cpu::sum_squares_many(ts.data(), static_cast<int>(ts.size())));
    cpu::adamw_many(ts.data(), static_cast<int>(ts.size()), p, grad_scale);
    r.Set("param", param);
    r.Set("m", m);
    r.Set("v", v);
    r.Set("grad", grad);
    return r;
  }
}

template <typename T>
Napi::Object op_sum_squares(const Args& a) {
  View<T> x = a.array<T>("x");
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("value", cpu::sum_squares<T>(x.data, x.len));
  return r;
}

template <typename T>
Napi::Object op_scale_inplace(const Args& a) {
  const T s = static_cast<T>(a.number("s"));
  auto x = copy_of<T>(a, "x", a.array<T>("x").len);
  cpu::scale_inplace<T>(x.Data(), static_cast<int64_t>(x.ElementLength()), s);
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("x", x);
  return r;
}

template <typename T>
Napi::Object op_axpy(const Args& a) {
  View<T> x = a.array<T>("x");
  const T alpha = static_cast<T>(a.number("a"));
  auto y = copy_of<T>(a, "y", x.len);
  cpu::axpy<T>(y.Data(), x.data, x.len, alpha);
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("y", y);
  return r;
}

// x rounded to bf16 as the bf16-product kernels round A (cpu::round_to_bf16), f32 only: `x`.
// Returns out (a Uint16Array). Throws where the CPU lacks AVX512-BF16.
template <typename T>
Napi::Object op_round_to_bf16(const Args& a) {
  if constexpr (!std::is_same_v<T, float>) {
    a.range_error("dtype", "must be 'f32' for round_to_bf16");
  } else {
    View<float> x = a.array<float>("x");
    Napi::Uint16Array out = zeros<uint16_t>(a, x.len);
    cpu::round_to_bf16(x.data, out.Data(), x.len);
    Napi::Object r = Napi::Object::New(a.env());
    r.Set("out", out);
    return r;
  }
}

// ---- dispatch ------------------------------------------------------------------------------------

using OpFn = Napi::Object (*)(const Args&);
struct OpEntry {
  OpFn f32, f64;
};

const std::map<std::string, OpEntry>& op_table() {
  static const std::map<std::string, OpEntry> table = {
      {"gemm", {op_gemm<float>, op_gemm<double>}},
      {"gemm_bench", {op_gemm_bench<float>, op_gemm_bench<double>}},
      {"gemm_group", {op_gemm_group<float>, op_gemm_group<double>}},
      {"gemm_chains", {op_gemm_chains<float>, op_gemm_chains<double>}},
      {"gemm_gate_up_swiglu", {op_gemm_gate_up_swiglu<float>, op_gemm_gate_up_swiglu<double>}},
      {"gemm_swiglu_backward", {op_gemm_swiglu_backward<float>, op_gemm_swiglu_backward<double>}},
      {"gemm_up_swiglu", {op_gemm_up_swiglu<float>, op_gemm_up_swiglu<double>}},
      {"stream_chunks", {op_stream_chunks<float>, op_stream_chunks<double>}},
      {"pool_runs", {op_pool_runs<float>, op_pool_runs<double>}},
      {"weight_blocks", {op_weight_blocks<float>, op_weight_blocks<double>}},
      {"job_threading_policy", {op_job_threading_policy<float>, op_job_threading_policy<double>}},
      {"sampling_distribution", {op_sampling_distribution<float>, op_sampling_distribution<double>}},
      {"argmax", {op_argmax<float>, op_argmax<double>}},
      {"embedding_forward", {op_embedding_forward<float>, op_embedding_forward<double>}},
      {"embedding_backward", {op_embedding_backward<float>, op_embedding_backward<double>}},
      {"rmsnorm_forward", {op_rmsnorm_forward<float>, op_rmsnorm_forward<double>}},
      {"rmsnorm_backward", {op_rmsnorm_backward<float>, op_rmsnorm_backward<double>}},
      {"rope_forward", {op_rope<float, false>, op_rope<double, false>}},
      {"rope_backward", {op_rope<float, true>, op_rope<double, true>}},
      {"attention_forward", {op_attention_forward<float>, op_attention_forward<double>}},
      {"attention_backward", {op_attention_backward<float>, op_attention_backward<double>}},
      {"attention_bench", {op_attention_bench<float>, op_attention_bench<double>}},
      {"swiglu_forward", {op_swiglu_forward<float>, op_swiglu_forward<double>}},
      {"round_to_bf16", {op_round_to_bf16<float>, op_round_to_bf16<double>}},
      {"swiglu_backward", {op_swiglu_backward<float>, op_swiglu_backward<double>}},
      {"cross_entropy", {op_cross_entropy<float>, op_cross_entropy<double>}},
      {"adamw", {op_adamw<float>, op_adamw<double>}},
      {"sum_squares", {op_sum_squares<float>, op_sum_squares<double>}},
      {"optimizer_many", {op_optimizer_many<float>, op_optimizer_many<double>}},
      {"scale_inplace", {op_scale_inplace<float>, op_scale_inplace<double>}},
      {"axpy", {op_axpy<float>, op_axpy<double>}},
  };
  return table;
}

Napi::Value OpRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsObject() || info[2].IsArray())
    throw Napi::TypeError::New(env, "opRun(name, dtype, args): expected a string, 'f32' | 'f64' and an object");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const std::string dtype = info[1].As<Napi::String>().Utf8Value();
  auto it = op_table().find(name);
  if (it == op_table().end()) {
    std::string known;
    for (const auto& kv : op_table()) known += (known.empty() ? "" : ", ") + kv.first;
    throw Napi::RangeError::New(env, "opRun: unknown op '" + name + "' (known: " + known + ")");
  }
  if (dtype != "f32" && dtype != "f64")
    throw Napi::RangeError::New(env, "opRun('" + name + "'): dtype must be 'f32' or 'f64', got '" + dtype + "'");
  Args args(env, name, info[2].As<Napi::Object>());
  return dtype == "f32" ? it->second.f32(args) : it->second.f64(args);
}

}  // namespace

void register_op_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("opRun", Napi::Function::New(env, OpRun, "opRun"));
}

}  // namespace sealkit::addon
