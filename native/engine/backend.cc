// Default implementations of the optional Backend methods.
#include "backend.h"

#include <stdexcept>

namespace sealkit {

// Defaults of the optional generation kernels, for backends that do not implement them yet.
void Backend::attention_cached_forward(const CachedAttentionShape&, const float*, const float*, const float*, float*) {
  throw std::runtime_error("the " + name() + " backend cannot generate yet (no KV-cache attention kernel)");
}
void Backend::gather_rows(const float*, int64_t, const int32_t*, int64_t, int64_t, float*, int64_t) {
  throw std::runtime_error("the " + name() + " backend cannot generate yet (no row gather kernel)");
}
void Backend::scatter_rows(const float*, int64_t, const int32_t*, int64_t, int64_t, float*, int64_t) {
  throw std::runtime_error("the " + name() + " backend cannot generate yet (no row scatter kernel)");
}


}  // namespace sealkit
