// Each binding file adds its functions to the addon's exports. Kept thin: argument checking and
// conversion only; the work lives in native/engine and native/cpu.
#pragma once
#include <napi.h>

#include <cstring>
#include <vector>

namespace sealkit::addon {

// A host vector as a new JS typed array of its element type (float -> Float32Array, int32_t ->
// Int32Array, double -> Float64Array).
template <typename T>
Napi::TypedArrayOf<T> to_js(Napi::Env env, const std::vector<T>& v) {
  auto out = Napi::TypedArrayOf<T>::New(env, v.size());
  if (!v.empty()) std::memcpy(out.Data(), v.data(), v.size() * sizeof(T));
  return out;
}

void register_op_binding(Napi::Env env, Napi::Object exports);
void register_model_binding(Napi::Env env, Napi::Object exports);
void register_backend_binding(Napi::Env env, Napi::Object exports);  // backendOp (backend_binding.cc)

}  // namespace sealkit::addon
