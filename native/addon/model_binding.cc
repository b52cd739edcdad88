// JS class `Model` over sealkit::Model: argument checking and conversion only. Heavy calls return
// Promises (AsyncJob); one heavy call at a time per model (lib/model queues them; a second
// concurrent call is rejected here rather than racing).
#include <napi.h>

#include <atomic>
#include <cmath>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/mapped_file.h"
#include "../engine/generation.h"
#include "../engine/model.h"
#include "../engine/profiling_backend.h"
#include "async_job.h"
#include "bindings.h"

namespace sealkit::addon {
namespace {

[[noreturn]] void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

Napi::Value field(Napi::Env env, const Napi::Object& o, const char* key, const char* where) {
  if (!o.Has(key)) type_error(env, std::string(where) + ": missing '" + key + "'");
  return o.Get(key);
}
double num(Napi::Env env, const Napi::Object& o, const char* key, const char* where) {
  Napi::Value v = field(env, o, key, where);
  if (!v.IsNumber()) type_error(env, std::string(where) + ": '" + key + "' must be a number");
  return v.As<Napi::Number>().DoubleValue();
}
double num_or(Napi::Env env, const Napi::Object& o, const char* key, double def, const char* where) {
  if (!o.Has(key) || o.Get(key).IsUndefined()) return def;
  return num(env, o, key, where);
}
int64_t int_field(Napi::Env env, const Napi::Object& o, const char* key, const char* where) {
  double d = num(env, o, key, where);
  if (d != static_cast<double>(static_cast<int64_t>(d))) type_error(env, std::string(where) + ": '" + key + "' must be an integer");
  return static_cast<int64_t>(d);
}
bool flag(const Napi::Object& o, const char* key) { return o.Has(key) && o.Get(key).ToBoolean().Value(); }
std::string str(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsString()) type_error(env, std::string(what) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}
uint64_t seed_of(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  if (!v.IsNumber()) type_error(env, std::string(what) + " must be a number or bigint");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d))) type_error(env, std::string(what) + " must be a non-negative integer");
  return static_cast<uint64_t>(d);
}
std::vector<int32_t> int32s(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    type_error(env, std::string(what) + " must be an Int32Array");
  auto a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}
std::vector<float> float32s(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    type_error(env, std::string(what) + " must be a Float32Array");
  auto a = v.As<Napi::Float32Array>();
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

Batch read_batch(Napi::Env env, const Napi::Value& v, bool training) {
  if (!v.IsObject()) type_error(env, "batch must be an object");
  auto o = v.As<Napi::Object>();
  Batch b;
  b.tokens = int32s(env, field(env, o, "tokens", "batch"), "batch.tokens");
  b.seq_len = int32s(env, field(env, o, "seqLens", "batch"), "batch.seqLens");
  b.slot = int32s(env, field(env, o, "slots", "batch"), "batch.slots");
  if (o.Has("targets") && !o.Get("targets").IsUndefined()) b.targets = int32s(env, o.Get("targets"), "batch.targets");
  if (training) b.weights = float32s(env, field(env, o, "weights", "batch"), "batch.weights");
  return b;
}

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Model",
                       {
                           InstanceMethod<&ModelWrap::ParamNames>("paramNames"),
                           InstanceMethod<&ModelWrap::ParamShape>("paramShape"),
                           InstanceMethod<&ModelWrap::LoadTensors>("loadTensors"),
                           InstanceMethod<&ModelWrap::InitRandom>("initRandom"),
                           InstanceMethod<&ModelWrap::GetParam>("getParam"),
                           InstanceMethod<&ModelWrap::SetParam>("setParam"),
                           InstanceMethod<&ModelWrap::CreateAdapter>("createAdapter"),
                           InstanceMethod<&ModelWrap::DropAdapter>("dropAdapter"),
                           InstanceMethod<&ModelWrap::AdapterInfo>("adapterInfo"),
                           InstanceMethod<&ModelWrap::MergeAdapter>("mergeAdapter"),
                           InstanceMethod<&ModelWrap::GetAdapterTensor>("getAdapterTensor"),
                           InstanceMethod<&ModelWrap::SetAdapterTensor>("setAdapterTensor"),
                           InstanceMethod<&ModelWrap::Forward>("forward"),
                           InstanceMethod<&ModelWrap::Backward>("backward"),
                           InstanceMethod<&ModelWrap::Step>("step"),
                           InstanceMethod<&ModelWrap::TrainStep>("trainStep"),
                           InstanceMethod<&ModelWrap::TrainSteps>("trainSteps"),
                           InstanceMethod<&ModelWrap::ZeroGrad>("zeroGrad"),
                           InstanceMethod<&ModelWrap::MemoryBytes>("memoryBytes"),
                           InstanceMethod<&ModelWrap::DecodeReadBytes>("decodeReadBytes"),
                           InstanceMethod<&ModelWrap::DefaultKvCache>("defaultKvCache"),
                           InstanceMethod<&ModelWrap::TakeProfile>("takeProfile"),
                           InstanceMethod<&ModelWrap::JobThreadingReport>("jobThreading"),
                           InstanceMethod<&ModelWrap::GenerateBegin>("generateBegin"),
                           InstanceMethod<&ModelWrap::GenerateStep>("generateStep"),
                           InstanceMethod<&ModelWrap::GenerateRewind>("generateRewind"),
                           InstanceMethod<&ModelWrap::GenerateEnd>("generateEnd"),
                           InstanceMethod<&ModelWrap::Dispose>("dispose"),
                       });
  }

  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) type_error(env, "new Model(config, options): config must be an object");
    auto c = info[0].As<Napi::Object>();
    ModelConfig cfg;
    cfg.vocab = int_field(env, c, "vocabSize", "config");
    cfg.hidden = int_field(env, c, "hiddenSize", "config");
    cfg.intermediate = int_field(env, c, "intermediateSize", "config");
    cfg.layers = int_field(env, c, "numLayers", "config");
    cfg.heads = int_field(env, c, "numHeads", "config");
    cfg.kv_heads = int_field(env, c, "numKvHeads", "config");
    cfg.head_dim = int_field(env, c, "headDim", "config");
    cfg.rms_eps = num(env, c, "rmsNormEps", "config");
    cfg.tied = flag(c, "tieWordEmbeddings");
    cfg.qkv_bias = flag(c, "qkvBias");
    cfg.inv_freq = float32s(env, field(env, c, "invFreq", "config"), "config.invFreq");
    DType storage = DType::F32;
    std::string device = "cpu";
    bool profile = false;
    Model::CodedWeights coded = Model::CodedWeights::Auto;
    if (info.Length() > 1 && info[1].IsObject()) {
      auto o = info[1].As<Napi::Object>();
      if (o.Has("storage") && !o.Get("storage").IsUndefined()) {
        std::string s = str(env, o.Get("storage"), "options.storage");
        if (s == "bf16") storage = DType::BF16;
        else if (s != "f32") throw Napi::RangeError::New(env, "options.storage must be 'f32' or 'bf16'");
      }
      if (o.Has("device") && !o.Get("device").IsUndefined()) device = str(env, o.Get("device"), "options.device");
      profile = flag(o, "profile");
      if (o.Has("codedWeights") && !o.Get("codedWeights").IsUndefined()) {
        const Napi::Value v = o.Get("codedWeights");
        if (v.IsBoolean()) coded = v.As<Napi::Boolean>().Value() ? Model::CodedWeights::On : Model::CodedWeights::Off;
        else if (!v.IsString() || v.As<Napi::String>().Utf8Value() != "auto")
          throw Napi::RangeError::New(env, "options.codedWeights must be true, false or 'auto'");
      }
    }
    std::unique_ptr<Backend> backend;
    if (device == "cpu") {
      backend = make_cpu_backend();
#ifdef SEALKIT_WITH_CUDA
    } else if (device == "cuda") {
      backend = make_cuda_backend(0);
#endif
    } else {
      throw Napi::RangeError::New(env, "options.device '" + device + "' is not available in this build (have: cpu" +
#ifdef SEALKIT_WITH_CUDA
                                           std::string(", cuda") +
#endif
                                           ")");
    }
    if (profile) {
      auto wrapped = std::make_unique<ProfilingBackend>(std::move(backend));
      profiler_ = wrapped.get();
      backend = std::move(wrapped);
    }
    try {
      model_ = std::make_shared<Model>(std::move(cfg), std::move(backend), storage);
      model_->set_coded_weights(coded);
    } catch (const std::bad_alloc&) {
      throw Napi::Error::New(env, "not enough memory to allocate the model's weights");
    }
  }

 private:
  std::shared_ptr<Model> model_;
  ProfilingBackend* profiler_ = nullptr;  // the model's backend when created with { profile: true }
  std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
  std::map<int, std::shared_ptr<Generation>> generations_;
  int next_generation_ = 1;

  Model& live(Napi::Env env) {
    if (!model_) throw Napi::Error::New(env, "model was disposed");
    if (busy_->load()) throw Napi::Error::New(env, "model is busy with another call (await it first)");
    return *model_;
  }
  // Marks the model busy for the duration of an async job; the job clears it on the JS thread.
  std::function<void()> claim(Napi::Env env) {
    live(env);
    busy_->store(true);
    auto busy = busy_;
    return [busy] { busy->store(false); };
  }

  Napi::Value ParamNames(const Napi::CallbackInfo& info) {
    Model& m = live(info.Env());
    auto arr = Napi::Array::New(info.Env(), m.param_names().size());
    for (size_t i = 0; i < m.param_names().size(); ++i) arr.Set(static_cast<uint32_t>(i), m.param_names()[i]);
    return arr;
  }

  Napi::Value ParamShape(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    try {
      Param& p = m.param(str(env, info[0], "name"));
      auto o = Napi::Object::New(env);
      auto shape = Napi::Array::New(env);
      shape.Set(uint32_t(0), Napi::Number::New(env, static_cast<double>(p.rows)));
      if (p.cols != 1) shape.Set(uint32_t(1), Napi::Number::New(env, static_cast<double>(p.cols)));
      o.Set("shape", shape);
      o.Set("dtype", dtype_name(p.dtype));
      return o;
    } catch (const std::invalid_argument& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  // loadTensors([{name, file, begin, end, dtype: 'F32'|'BF16'|'F16'}]) -> Promise<void>
  Napi::Value LoadTensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) type_error(env, "loadTensors(list): list must be an array");
    struct Item { std::string name, file, dtype; uint64_t begin, end; };
    std::vector<Item> items;
    auto arr = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      if (!arr.Get(i).IsObject()) type_error(env, "loadTensors: entry " + std::to_string(i) + " must be an object");
      auto o = arr.Get(i).As<Napi::Object>();
      Item it;
      it.name = str(env, field(env, o, "name", "loadTensors entry"), "name");
      it.file = str(env, field(env, o, "file", "loadTensors entry"), "file");
      it.dtype = str(env, field(env, o, "dtype", "loadTensors entry"), "dtype");
      int64_t b = int_field(env, o, "begin", "loadTensors entry"), e = int_field(env, o, "end", "loadTensors entry");
      if (b < 0 || e < b) type_error(env, "loadTensors: '" + it.name + "' has an invalid byte range");
      it.begin = static_cast<uint64_t>(b);
      it.end = static_cast<uint64_t>(e);
      if (it.dtype != "F32" && it.dtype != "BF16" && it.dtype != "F16")
        type_error(env, "loadTensors: '" + it.name + "' has dtype " + it.dtype + " (F32, BF16, F16 supported)");
      items.push_back(std::move(it));
    }
    auto model = model_;
    auto done = claim(env);
    return AsyncJob<bool>::Start(
        env, "sealkit.loadTensors",
        [model, items] {
          std::map<std::string, std::unique_ptr<MappedFile>> files;
          for (const Item& it : items) {
            auto& f = files[it.file];
            if (!f) f = std::make_unique<MappedFile>(it.file);
            const uint8_t* bytes = f->range(it.begin, it.end);
            uint64_t item = it.dtype == "F32" ? 4 : 2;
            if ((it.end - it.begin) % item != 0)
              throw std::runtime_error(it.file + ": tensor '" + it.name + "' byte length is not a multiple of its element size");
            model->set_param(it.name, bytes, it.dtype.c_str(), static_cast<int64_t>((it.end - it.begin) / item));
          }
          return true;
        },
        [](Napi::Env e, bool&) { return e.Undefined(); }, done);
  }

  Napi::Value InitRandom(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t seed = seed_of(env, info[0], "initRandom(seed, std): seed");
    if (info.Length() < 2 || !info[1].IsNumber()) type_error(env, "initRandom(seed, std): std must be a number");
    float sd = info[1].As<Napi::Number>().FloatValue();
    auto model = model_;
    auto done = claim(env);
    return AsyncJob<bool>::Start(
        env, "sealkit.initRandom", [model, seed, sd] { model->init_random(seed, sd); return true; },
        [](Napi::Env e, bool&) { return e.Undefined(); }, done);
  }

  // getParam(name, grad?) -> Float32Array (a copy, f32 whatever the storage)
  Napi::Value GetParam(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    std::string name = str(env, info[0], "getParam(name): name");
    bool grad = info.Length() > 1 && info[1].ToBoolean().Value();
    try {
      return to_js(env, grad ? m.get_param_grad(name) : m.get_param(name));
    } catch (const std::invalid_argument& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  // setParam(name, Float32Array) (converted to the model's storage type)
  Napi::Value SetParam(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    std::string name = str(env, info[0], "setParam(name, data): name");
    auto data = float32s(env, info.Length() > 1 ? info[1] : env.Undefined(), "setParam(name, data): data");
    try {
      m.set_param(name, data.data(), "F32", static_cast<int64_t>(data.size()));
    } catch (const std::invalid_argument& e) {
      throw Napi::Error::New(env, e.what());
    }
    return env.Undefined();
  }

  // createAdapter(slot, {rank, alpha, rslora, dropout, targets: string[], seed})
  Napi::Value CreateAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsObject())
      type_error(env, "createAdapter(slot, spec): slot must be a number and spec an object");
    int slot = info[0].As<Napi::Number>().Int32Value();
    auto o = info[1].As<Napi::Object>();
    AdapterSpec spec;
    spec.rank = int_field(env, o, "rank", "adapter spec");
    spec.alpha = num(env, o, "alpha", "adapter spec");
    spec.rslora = flag(o, "rslora");
    spec.dropout = num_or(env, o, "dropout", 0, "adapter spec");
    Napi::Value t = field(env, o, "targets", "adapter spec");
    if (!t.IsArray()) type_error(env, "adapter spec: 'targets' must be an array of projection names");
    auto ta = t.As<Napi::Array>();
    for (uint32_t i = 0; i < ta.Length(); ++i) {
      std::string name = str(env, ta.Get(i), "adapter spec: targets entry");
      int p = proj_from_name(name);
      if (p < 0) throw Napi::RangeError::New(env, "adapter spec: unknown target '" + name + "' (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
      spec.targets |= 1u << p;
    }
    uint64_t seed = o.Has("seed") ? seed_of(env, o.Get("seed"), "adapter spec: seed") : 0;
    try {
      m.create_adapter(slot, spec, seed);
    } catch (const std::invalid_argument& e) {
      throw Napi::RangeError::New(env, e.what());
    }
    return env.Undefined();
  }

  Napi::Value DropAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    if (info.Length() < 1 || !info[0].IsNumber()) type_error(env, "dropAdapter(slot): slot must be a number");
    m.drop_adapter(info[0].As<Napi::Number>().Int32Value());
    return env.Undefined();
  }

  // mergeAdapter(slot): folds the adapter into the base weights (f32 storage).
  Napi::Value MergeAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    if (info.Length() < 1 || !info[0].IsNumber()) type_error(env, "mergeAdapter(slot): slot must be a number");
    try {
      m.merge_adapter(info[0].As<Napi::Number>().Int32Value());
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
    return env.Undefined();
  }

  // adapterInfo(slot) -> {rank, alpha, scale, rslora, dropout, targets, step} | null
  Napi::Value AdapterInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    if (info.Length() < 1 || !info[0].IsNumber()) type_error(env, "adapterInfo(slot): slot must be a number");
    int slot = info[0].As<Napi::Number>().Int32Value();
    if (!m.has_adapter(slot)) return env.Null();
    Adapter& a = m.adapter(slot);
    auto o = Napi::Object::New(env);
    o.Set("rank", Napi::Number::New(env, static_cast<double>(a.spec.rank)));
    o.Set("alpha", a.spec.alpha);
    o.Set("scale", a.scale);
    o.Set("rslora", a.spec.rslora);
    o.Set("dropout", a.spec.dropout);
    o.Set("step", Napi::Number::New(env, static_cast<double>(a.step)));
    auto targets = Napi::Array::New(env);
    uint32_t n = 0;
    for (int p = 0; p < kNumProj; ++p)
      if (a.spec.targets & (1u << p)) targets.Set(n++, proj_name(p));
    o.Set("targets", targets);
    return o;
  }

  Param& adapter_param(Napi::Env env, const Napi::CallbackInfo& info, Model& m) {
    if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber())
      type_error(env, "adapter tensor: expected (slot, layer, proj, 'A'|'B')");
    int slot = info[0].As<Napi::Number>().Int32Value();
    int layer = info[1].As<Napi::Number>().Int32Value();
    int proj = proj_from_name(str(env, info[2], "proj"));
    std::string which = str(env, info[3], "which");
    if (which != "A" && which != "B") throw Napi::RangeError::New(env, "adapter tensor: which must be 'A' or 'B'");
    try {
      return m.adapter_tensor(slot, layer, proj, which == "B");
    } catch (const std::invalid_argument& e) {
      throw Napi::RangeError::New(env, e.what());
    }
  }

  // getAdapterTensor(slot, layer, proj, 'A'|'B', grad?) -> Float32Array
  Napi::Value GetAdapterTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    Param& p = adapter_param(env, info, m);
    bool grad = info.Length() > 4 && info[4].ToBoolean().Value();
    return to_js(env, m.read_tensor(p, grad));
  }

  // setAdapterTensor(slot, layer, proj, 'A'|'B', Float32Array)
  Napi::Value SetAdapterTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = live(env);
    Param& p = adapter_param(env, info, m);
    auto data = float32s(env, info.Length() > 4 ? info[4] : env.Undefined(), "setAdapterTensor: data");
    try {
      m.write_tensor(p, data.data(), static_cast<int64_t>(data.size()));
    } catch (const std::invalid_argument& e) {
      throw Napi::RangeError::New(env, e.what());
    }
    return env.Undefined();
  }

  static int64_t tokens_of(const Batch& b) { return static_cast<int64_t>(b.tokens.size()); }

  static Napi::Value result_to_js(Napi::Env env, ForwardResult& r) {
    auto o = Napi::Object::New(env);
    if (!r.loss.empty()) o.Set("loss", to_js(env, r.loss));
    if (!r.logits.empty()) o.Set("logits", to_js(env, r.logits));
    return o;
  }

  // forward(batch, {logits?}) -> Promise<{loss?, logits?}>
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Batch batch = read_batch(env, info[0], false);
    bool logits = info.Length() > 1 && info[1].IsObject() && flag(info[1].As<Napi::Object>(), "logits");
    auto model = model_;
    auto done = claim(env);
    return AsyncJob<ForwardResult>::Start(
        env, "sealkit.forward", [model, batch, logits] {
          return model->run_job(JobKind::Forward, tokens_of(batch), [&] { return model->forward(batch, logits); });
        }, result_to_js, done);
  }

  // A training call's (batch with targets and weights, {full?, seed?}) arguments; `method` names it in
  // errors.
  struct BackwardCall {
    Batch batch;
    bool full = false;
    uint64_t seed = 0;
  };
  static BackwardCall backward_call(const Napi::CallbackInfo& info, const std::string& method) {
    return backward_call(info.Env(), info[0], info.Length() > 1 ? info[1] : info.Env().Undefined(), method);
  }
  static BackwardCall backward_call(Napi::Env env, const Napi::Value& batch, const Napi::Value& options,
                                    const std::string& method) {
    BackwardCall c;
    c.batch = read_batch(env, batch, true);
    if (options.IsObject()) {
      auto o = options.As<Napi::Object>();
      c.full = flag(o, "full");
      if (o.Has("seed") && !o.Get("seed").IsUndefined()) c.seed = seed_of(env, o.Get("seed"), (method + " options: seed").c_str());
    }
    return c;
  }

  // backward(batch with targets and weights, {full?, seed?}) -> Promise<{loss}>
  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    BackwardCall call = backward_call(info, "backward");
    auto model = model_;
    auto done = claim(env);
    return AsyncJob<ForwardResult>::Start(
        env, "sealkit.backward", [model, call] {
          return model->run_job(JobKind::Backward, tokens_of(call.batch),
                                [&] { return model->backward(call.batch, call.full, call.seed); });
        },
        result_to_js, done);
  }

  // An optimiser step's options ({full?, slots?: number[], lrs?, lr, beta1?, beta2?, eps?, weightDecay?,
  // maxGradNorm?}), checked against the model's adapters. `what` names the argument in errors.
  StepSpec read_step_spec(Napi::Env env, const Napi::Value& v, const char* what) {
    if (!v.IsObject()) type_error(env, std::string(what) + ": options must be an object");
    auto o = v.As<Napi::Object>();
    StepSpec spec;
    spec.full = flag(o, "full");
    if (o.Has("slots") && !o.Get("slots").IsUndefined()) {
      if (!o.Get("slots").IsArray()) type_error(env, "step options: 'slots' must be an array of numbers");
      auto a = o.Get("slots").As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        if (!a.Get(i).IsNumber()) type_error(env, "step options: 'slots' must be an array of numbers");
        spec.slots.push_back(a.Get(i).As<Napi::Number>().Int32Value());
      }
    }
    spec.adam.lr = num(env, o, "lr", "step options");
    if (o.Has("lrs") && !o.Get("lrs").IsUndefined()) {
      if (!o.Get("lrs").IsArray()) type_error(env, "step options: 'lrs' must be an array of numbers");
      auto a = o.Get("lrs").As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        if (!a.Get(i).IsNumber()) type_error(env, "step options: 'lrs' must be an array of numbers");
        spec.lrs.push_back(a.Get(i).As<Napi::Number>().DoubleValue());
      }
      if (spec.lrs.size() != spec.slots.size()) throw Napi::RangeError::New(env, "step options: 'lrs' needs one entry per slot");
    }
    spec.adam.beta1 = num_or(env, o, "beta1", 0.9, "step options");
    spec.adam.beta2 = num_or(env, o, "beta2", 0.999, "step options");
    spec.adam.eps = num_or(env, o, "eps", 1e-8, "step options");
    spec.adam.weight_decay = num_or(env, o, "weightDecay", 0.0, "step options");
    spec.max_grad_norm = num_or(env, o, "maxGradNorm", 0.0, "step options");
    Model& m = live(env);
    for (int s : spec.slots)
      if (!m.has_adapter(s)) throw Napi::RangeError::New(env, "step: no adapter in slot " + std::to_string(s));
    return spec;
  }

  static Napi::Array norms_to_js(Napi::Env env, const std::vector<double>& norms) {
    auto a = Napi::Array::New(env, norms.size());
    for (size_t i = 0; i < norms.size(); ++i) a.Set(static_cast<uint32_t>(i), norms[i]);
    return a;
  }

  // step({full?, slots?: number[], lr, beta1?, beta2?, eps?, weightDecay?, maxGradNorm?}) -> Promise<number[]>
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    StepSpec spec = read_step_spec(env, info.Length() > 0 ? info[0] : env.Undefined(), "step(options)");
    auto model = model_;
    auto done = claim(env);
    return AsyncJob<std::vector<double>>::Start(
        env, "sealkit.step", [model, spec] { return model->step(spec); },
        [](Napi::Env e, std::vector<double>& norms) { return norms_to_js(e, norms).As<Napi::Value>(); }, done);
  }

  // One training step's outcome (trainStep, trainSteps): the backward pass's per-token losses and the
  // step's gradient norms.
  struct Trained {
    ForwardResult result;
    std::vector<double> norms;
  };
  // Runs one training step on the job's thread, its kernels threaded as JobThreading chooses.
  static Trained train_one(Model& model, const BackwardCall& call, const StepSpec& spec) {
    return model.run_job(JobKind::TrainStep, tokens_of(call.batch), [&] {
      Trained t;
      t.result = model.backward(call.batch, call.full, call.seed);
      t.norms = model.step(spec);
      return t;
    });
  }
  static Napi::Object trained_to_js(Napi::Env env, Trained& t) {
    Napi::Object o = result_to_js(env, t.result).As<Napi::Object>();
    o.Set("norms", norms_to_js(env, t.norms));
    return o;
  }

  // trainStep(batch, {full?, seed?}, stepOptions) -> Promise<{loss, norms}>: backward then step in one
  // job. A small LoRA step (SEAL's inner loop: one sequence of ~50 tokens) takes about a millisecond,
  // and every job costs two thread handoffs (to a libuv worker and back to JS); one job, not two, per
  // step.
  Napi::Value TrainStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    BackwardCall call = backward_call(info, "trainStep");
    StepSpec spec = read_step_spec(env, info.Length() > 2 ? info[2] : env.Undefined(), "trainStep(stepOptions)");
    auto model = model_;
    auto done = claim(env);
    return AsyncJob<Trained>::Start(
        env, "sealkit.trainStep", [model, call, spec] { return train_one(*model, call, spec); },
        [](Napi::Env e, Trained& t) { return trained_to_js(e, t).As<Napi::Value>(); }, done);
  }

  // trainSteps([[batch, {full?, seed?}, stepOptions], ...]) -> Promise<[{loss, norms}, ...]>: the steps
  // one after another in one job, each exactly as trainStep runs it (its own threading choice, see
  // JobThreading). A small step's two thread handoffs (~0.1 ms on a 2-vCPU VM) are then paid once per
  // call, not once per step: SEAL's inner loop knows all of an adapter's steps before the first.
  // Every step is read and checked before any runs; a step that throws rejects the promise with its
  // index, the steps before it applied.
  Napi::Value TrainSteps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) type_error(env, "trainSteps: expected an array of [batch, options, stepOptions]");
    auto list = info[0].As<Napi::Array>();
    if (list.Length() == 0) throw Napi::RangeError::New(env, "trainSteps: no steps");
    struct Planned {
      BackwardCall call;
      StepSpec spec;
    };
    std::vector<Planned> plan;
    plan.reserve(list.Length());
    for (uint32_t i = 0; i < list.Length(); ++i) {
      const std::string what = "trainSteps: step " + std::to_string(i);
      const Napi::Value item = list.Get(i);
      if (!item.IsArray() || item.As<Napi::Array>().Length() != 3)
        type_error(env, what + ": expected [batch, options, stepOptions]");
      auto a = item.As<Napi::Array>();
      try {
        plan.push_back({backward_call(env, a.Get(0u), a.Get(1u), what), read_step_spec(env, a.Get(2u), what.c_str())});
      } catch (Napi::Error& e) {  // the same error (type, JS object), its message naming the step
        e.Value().Set("message", Napi::String::New(env, what + ": " + e.Message()));
        throw;
      }
    }
    auto model = model_;
    auto done = claim(env);
    return AsyncJob<std::vector<Trained>>::Start(
        env, "sealkit.trainSteps",
        [model, plan = std::move(plan)] {
          std::vector<Trained> out(plan.size());
          for (size_t i = 0; i < plan.size(); ++i) {
            try {
              out[i] = train_one(*model, plan[i].call, plan[i].spec);
            } catch (const std::exception& e) {
              throw std::runtime_error("trainSteps: step " + std::to_string(i) + " of " + std::to_string(plan.size()) +
                                       " (the steps before it were applied): " + e.what());
            }
          }
          return out;
        },
        [](Napi::Env e, std::vector<Trained>& steps) {
          auto a = Napi::Array::New(e, steps.size());
          for (size_t i = 0; i < steps.size(); ++i) a.Set(static_cast<uint32_t>(i), trained_to_js(e, steps[i]));
          return a.As<Napi::Value>();
        },
        done);
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    live(info.Env()).zero_grad();
    return info.Env().Undefined();
  }

  Napi::Value MemoryBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env()).memory_bytes()));
  }

  // decodeReadBytes(sequences): bytes of weights a decoding step of that many sequences reads.
  Napi::Value DecodeReadBytes(const Napi::CallbackInfo& info) {
    const int64_t rows = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : 1;
    if (rows < 1) throw Napi::RangeError::New(info.Env(), "decodeReadBytes: sequences must be >= 1");
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env()).decode_read_bytes(rows)));
  }

  // defaultKvCache() -> 'f32' | 'bf16': what generateBegin's kvCache 'auto' picks.
  Napi::Value DefaultKvCache(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), dtype_name(live(info.Env()).default_kv_dtype()));
  }

  // jobThreading() -> [{ kind, tokensUpTo, jobs, inlineJobs, pooledMicrosPerToken, inlineMicrosPerToken,
  // inlineNow }]: per kind and size of job, how its kernels have been run (JobThreading).
  Napi::Value JobThreadingReport(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::vector<JobThreading::Report> rows = live(env).job_threading();
    auto a = Napi::Array::New(env, rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      const JobThreading::Report& r = rows[i];
      auto o = Napi::Object::New(env);
      o.Set("kind", job_kind_name(r.kind));
      o.Set("tokensUpTo", static_cast<double>(r.tokens_up_to));
      o.Set("jobs", static_cast<double>(r.jobs));
      o.Set("inlineJobs", static_cast<double>(r.inline_jobs));
      o.Set("pooledMicrosPerToken", r.pooled_us_per_token);
      o.Set("inlineMicrosPerToken", r.inline_us_per_token);
      o.Set("inlineNow", r.inline_now);
      a.Set(static_cast<uint32_t>(i), o);
    }
    return a;
  }

  // takeProfile() -> [{ op, calls, seconds, flops }]: the backend calls timed since the last take,
  // largest time first (the model must have been created with { profile: true }).
  Napi::Value TakeProfile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    if (!profiler_) throw Napi::Error::New(env, "takeProfile: the model was not created with { profile: true }");
    const std::vector<OpTiming> timings = profiler_->take();
    auto out = Napi::Array::New(env, timings.size());
    for (size_t i = 0; i < timings.size(); ++i) {
      auto o = Napi::Object::New(env);
      o.Set("op", timings[i].op);
      o.Set("calls", static_cast<double>(timings[i].calls));
      o.Set("seconds", timings[i].seconds);
      o.Set("flops", timings[i].flops);
      out.Set(static_cast<uint32_t>(i), o);
    }
    return out;
  }

  static Napi::Value step_to_js(Napi::Env env, GenerationStep& r) {
    auto o = Napi::Object::New(env);
    o.Set("tokens", to_js(env, r.tokens));
    o.Set("seqs", to_js(env, r.seqs));
    o.Set("counts", to_js(env, r.counts));
    if (!r.logits.empty()) o.Set("logits", to_js(env, r.logits));
    return o;
  }

  std::shared_ptr<Generation> generation(Napi::Env env, const Napi::Value& id) {
    if (!id.IsNumber()) type_error(env, "generation id must be a number");
    auto it = generations_.find(id.As<Napi::Number>().Int32Value());
    if (it == generations_.end()) throw Napi::Error::New(env, "generation " + std::to_string(id.As<Napi::Number>().Int32Value()) + " is not open");
    return it->second;
  }

  // The arguments (id, seqs: Int32Array, <per_seq>: Int32Array) of a call on an open generation.
  struct GenerationCall {
    std::shared_ptr<Generation> g;
    std::vector<int32_t> seqs, per_seq;
  };
  GenerationCall generation_call(const Napi::CallbackInfo& info, const std::string& method, const char* per_seq) {
    Napi::Env env = info.Env();
    live(env);
    GenerationCall c{generation(env, info[0]), {}, {}};
    c.seqs = int32s(env, info.Length() > 1 ? info[1] : env.Undefined(), (method + ": seqs").c_str());
    c.per_seq = int32s(env, info.Length() > 2 ? info[2] : env.Undefined(), (method + ": " + per_seq).c_str());
    return c;
  }

  // generateBegin({tokens, promptLens, slots, n, maxNew, temperature, topK, topP, seed, maxCacheBytes, kvCache},
  //   {logits?}) -> Promise<{id, tokens, logits?, cacheBytes, kvCache}>
  // kvCache: 'auto' (default: Model::default_kv_dtype), 'f32' or 'bf16'.
  Napi::Value GenerateBegin(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    if (info.Length() < 1 || !info[0].IsObject()) type_error(env, "generateBegin(request): request must be an object");
    auto o = info[0].As<Napi::Object>();
    GenerationRequest req;
    req.tokens = int32s(env, field(env, o, "tokens", "generate request"), "request.tokens");
    req.prompt_len = int32s(env, field(env, o, "promptLens", "generate request"), "request.promptLens");
    req.slot = int32s(env, field(env, o, "slots", "generate request"), "request.slots");
    req.n = static_cast<int32_t>(int_field(env, o, "n", "generate request"));
    req.max_new = static_cast<int32_t>(int_field(env, o, "maxNew", "generate request"));
    req.sampling.temperature = num_or(env, o, "temperature", 0, "generate request");
    req.sampling.top_k = static_cast<int64_t>(num_or(env, o, "topK", 0, "generate request"));
    req.sampling.top_p = num_or(env, o, "topP", 1, "generate request");
    if (o.Has("seed") && !o.Get("seed").IsUndefined()) req.sampling.seed = seed_of(env, o.Get("seed"), "generate request: seed");
    req.max_cache_bytes = static_cast<size_t>(num_or(env, o, "maxCacheBytes", 0, "generate request"));
    req.cache_dtype = model_->default_kv_dtype();
    if (o.Has("kvCache") && !o.Get("kvCache").IsUndefined()) {
      const std::string kv = str(env, o.Get("kvCache"), "generate request: kvCache");
      if (kv == "f32") req.cache_dtype = DType::F32;
      else if (kv == "bf16") req.cache_dtype = DType::BF16;
      else if (kv != "auto") throw Napi::RangeError::New(env, "generate request: kvCache must be 'auto', 'f32' or 'bf16', not '" + kv + "'");
    }  // a type the backend cannot hold is refused by Model::create_cache
    if (o.Has("promptSeeds") && !o.Get("promptSeeds").IsUndefined()) {
      if (!o.Get("promptSeeds").IsArray()) type_error(env, "generate request: promptSeeds must be an array of numbers");
      auto a = o.Get("promptSeeds").As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) req.prompt_seed.push_back(seed_of(env, a.Get(i), "generate request: promptSeeds entry"));
    }
    for (int32_t s : req.slot)
      if (s >= 0 && !model_->has_adapter(s)) throw Napi::RangeError::New(env, "generate: no adapter in slot " + std::to_string(s));
    bool logits = info.Length() > 1 && info[1].IsObject() && flag(info[1].As<Napi::Object>(), "logits");
    auto model = model_;
    int id = next_generation_++;
    auto done = claim(env);
    auto holder = std::make_shared<std::shared_ptr<Generation>>();
    struct Started { int id; GenerationStep step; size_t bytes; DType dtype; };
    return AsyncJob<Started>::Start(
        env, "sealkit.generateBegin",
        [model, req, logits, id, holder] {
          return model->run_job(JobKind::Prefill, static_cast<int64_t>(req.tokens.size()), [&] {
            auto g = std::make_shared<Generation>(*model, req);
            Started s{id, g->start(logits), g->cache_bytes(), g->cache_dtype()};
            *holder = g;
            return s;
          });
        },
        [this, holder](Napi::Env e, Started& s) {
          generations_[s.id] = *holder;
          auto out = step_to_js(e, s.step).As<Napi::Object>();
          out.Set("id", s.id);
          out.Set("cacheBytes", Napi::Number::New(e, static_cast<double>(s.bytes)));
          out.Set("kvCache", dtype_name(s.dtype));
          return out.As<Napi::Value>();
        },
        done);
  }

  // generateStep(id, seqs: Int32Array, tokens: Int32Array, {logits?, steps?, eos?})
  //   -> Promise<{tokens, seqs, counts, logits?}>
  // Runs up to `steps` (default 1) decoding steps natively (Generation::steps): tokens[i] was sampled
  // for seqs[i]; counts[j] tokens came from step j. `eos`: token ids that end a sequence.
  Napi::Value GenerateStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GenerationCall call = generation_call(info, "generateStep", "tokens");
    bool logits = false;
    int32_t steps = 1;
    std::vector<int32_t> eos;
    if (info.Length() > 3 && info[3].IsObject()) {
      auto o = info[3].As<Napi::Object>();
      logits = flag(o, "logits");
      const double n = num_or(env, o, "steps", 1, "generateStep options");
      if (!(n >= 1 && n <= INT32_MAX && n == std::floor(n)))
        throw Napi::RangeError::New(env, "generateStep: options.steps must be an integer >= 1, got " + std::to_string(n));
      steps = static_cast<int32_t>(n);
      if (o.Has("eos") && !o.Get("eos").IsUndefined()) eos = int32s(env, o.Get("eos"), "generateStep: options.eos");
    }
    auto model = model_;
    auto done = claim(env);
    return AsyncJob<GenerationStep>::Start(
        env, "sealkit.generateStep",
        [model, call, steps, eos, logits] {
          return model->run_job(JobKind::Decode, static_cast<int64_t>(call.seqs.size()) * steps,
                                [&] { return call.g->steps(call.seqs, call.per_seq, steps, eos, logits); });
        },
        step_to_js, done);
  }

  // generateRewind(id, seqs: Int32Array, counts: Int32Array): Generation::rewind (quick; synchronous).
  Napi::Value GenerateRewind(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GenerationCall call = generation_call(info, "generateRewind", "counts");
    try {
      call.g->rewind(call.seqs, call.per_seq);
    } catch (const std::exception& e) {
      throw Napi::RangeError::New(env, e.what());
    }
    return env.Undefined();
  }

  // generateEnd(id): frees the generation's KV cache.
  Napi::Value GenerateEnd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    generation(env, info[0]);
    generations_.erase(info[0].As<Napi::Number>().Int32Value());
    return env.Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (busy_->load()) throw Napi::Error::New(info.Env(), "dispose: the model is busy (await its pending call first)");
    generations_.clear();
    model_.reset();
    profiler_ = nullptr;  // it was the model's backend
    return info.Env().Undefined();
  }
};

}  // namespace

void register_model_binding(Napi::Env env, Napi::Object exports) { exports.Set("Model", ModelWrap::Define(env)); }

}  // namespace sealkit::addon
