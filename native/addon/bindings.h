// Each binding file adds its functions to the addon's exports. Kept thin: argument checking and
// conversion only; the work lives in native/engine and native/cpu.
#pragma once
#include <napi.h>

namespace sealkit::addon {

void register_op_binding(Napi::Env env, Napi::Object exports);
void register_model_binding(Napi::Env env, Napi::Object exports);
void register_backend_binding(Napi::Env env, Napi::Object exports);  // backendOp (backend_binding.cc)

}  // namespace sealkit::addon
