// Module entry: engine-wide information and settings, then the per-area bindings.
#include <napi.h>

#include <initializer_list>
#include <string>

#include "../core/cpu_features.h"
#include "../core/env_switch.h"
#include "../core/lane_help.h"
#include "../core/rng.h"
#include "../core/threadpool.h"
#include "../cpu/attention_bf16.h"
#include "../cpu/coded_weight.h"
#include "../cpu/kernels.h"
#include "../cpu/peak.h"
#include "bindings.h"
#ifdef SEALKIT_WITH_CUDA
#include "../engine/gpu_info.h"
#endif

namespace sealkit::addon {
namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("isa", isa_name(active_isa()));
  out.Set("isaDetected", isa_name(detect_isa()));
  out.Set("threads", global_pool().size());
  // Pool runs of split training passes that the lane done first helped with (lane_help.h).
  out.Set("laneHelpRuns", Napi::Number::New(env, static_cast<double>(lane_help_runs())));
  const CpuModel& cpu = cpu_model();
  Napi::Object model = Napi::Object::New(env);
  model.Set("vendor", cpu.amd ? "amd" : cpu.intel ? "intel" : "other");
  model.Set("family", cpu.family);
  model.Set("model", cpu.model);
  out.Set("cpu", model);
  out.Set("decodePrefetch", cpu::few_rows_prefetch_nta() ? "nta" : "l2");
  out.Set("amx", cpu::amx_tiles_on());
  out.Set("decodeRowsOnAmx", cpu::few_rows_amx_on());
  out.Set("decodeRowsPacked", cpu::few_rows_packed_on());
  out.Set("codedWeights", cpu::coded_weights_supported() && cpu::coded_weights_on());
  out.Set("attentionBf16", cpu::attention_bf16_supported() && switch_on("SEALKIT_ATTENTION_BF16"));
  Napi::Array backends = Napi::Array::New(env);
  backends.Set(uint32_t(0), "cpu");
#ifdef SEALKIT_WITH_CUDA
  backends.Set(uint32_t(1), "cuda");
  out.Set("cuda", true);
  std::vector<GpuInfo> gpus;
  std::string why = list_gpus(gpus);
  Napi::Array list = Napi::Array::New(env, gpus.size());
  for (size_t i = 0; i < gpus.size(); ++i) {
    Napi::Object g = Napi::Object::New(env);
    g.Set("index", gpus[i].index);
    g.Set("name", gpus[i].name);
    g.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(gpus[i].memory_bytes)));
    g.Set("computeCapability", std::to_string(gpus[i].major) + "." + std::to_string(gpus[i].minor));
    list.Set(static_cast<uint32_t>(i), g);
  }
  out.Set("gpus", list);
  if (!why.empty()) out.Set("gpuError", why);
#else
  out.Set("cuda", false);
#endif
  out.Set("backends", backends);
#ifdef __SANITIZE_ADDRESS__
  out.Set("sanitized", true);
#else
  out.Set("sanitized", false);
#endif
  return out;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "setThreads(n): n must be a number");
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 0 || n > 1024) throw Napi::RangeError::New(env, "setThreads(n): n must be in [0, 1024] (0 = all cores)");
  set_global_threads(n);
  return Napi::Number::New(env, global_pool().size());
}

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "setIsa(name): name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  for (Isa cand : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16}) {
    if (name == isa_name(cand)) {
      set_active_isa(cand);
      return Napi::String::New(env, isa_name(active_isa()));
    }
  }
  throw Napi::RangeError::New(env, "setIsa: unknown ISA '" + name + "' (scalar|avx2|avx512|avx512bf16)");
}

// measurePeak(kind, {trialMs, trials}): the throughput of the instruction `kind` names on every
// pool thread (cpu/peak.h), for MFU. Blocks the caller for about trials x trialMs.
Napi::Value MeasurePeak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString())
    throw Napi::TypeError::New(env, "measurePeak(kind, options?): kind must be a string (fp32_fma|bf16_dot|amx_bf16)");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  cpu::PeakKind kind = cpu::PeakKind::Fp32Fma;
  if (!cpu::parse_peak_kind(name, kind))
    throw Napi::RangeError::New(env, "measurePeak: unknown kind '" + name + "' (fp32_fma|bf16_dot|amx_bf16)");
  double trial_ms = 20;
  int trials = 3;
  if (info.Length() >= 2 && !info[1].IsUndefined()) {
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, "measurePeak: options must be an object");
    const Napi::Object o = info[1].As<Napi::Object>();
    const auto number = [&](const char* key, double lo, double hi, double fallback, bool integer) {
      const Napi::Value v = o.Get(key);
      if (v.IsUndefined()) return fallback;
      const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(x >= lo && x <= hi) || (integer && x != static_cast<double>(static_cast<int64_t>(x))))
        throw Napi::RangeError::New(env, std::string("measurePeak: options.") + key + " must be " +
                                             (integer ? "an integer" : "a number") + " in [" +
                                             std::to_string(static_cast<int>(lo)) + ", " +
                                             std::to_string(static_cast<int>(hi)) + "]");
      return x;
    };
    trial_ms = number("trialMs", 1, 10000, trial_ms, false);
    trials = static_cast<int>(number("trials", 1, 100, trials, true));
  }
  const std::string why = cpu::peak_unsupported(kind);
  if (!why.empty()) throw Napi::Error::New(env, "measurePeak(" + name + "): " + why);
  cpu::PeakMeasurement m;
  try {
    m = cpu::measure_peak(kind, trial_ms / 1000, trials);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("kind", name);
  out.Set("gflops", m.gflops);
  out.Set("threads", m.threads);
  out.Set("trials", m.trials);
  return out;
}

// rngU32(seed, counter): the engine's random stream, so tests can check the TypeScript twin.
Napi::Value RngU32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "rngU32(seed, counter): numbers expected");
  uint64_t seed = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
  uint64_t counter = static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue());
  return Napi::Number::New(env, rng_u32(seed, counter));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("rngU32", Napi::Function::New(env, RngU32, "rngU32"));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa, "setIsa"));
  exports.Set("measurePeak", Napi::Function::New(env, MeasurePeak, "measurePeak"));
  register_op_binding(env, exports);
  register_model_binding(env, exports);
  register_backend_binding(env, exports);
  return exports;
}

}  // namespace
}  // namespace sealkit::addon

static Napi::Object InitSealkit(Napi::Env env, Napi::Object exports) { return sealkit::addon::Init(env, exports); }

NODE_API_MODULE(sealkit, InitSealkit)
