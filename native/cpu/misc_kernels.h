// Small CPU kernels used through the backend interface (see native/engine/backend.h for semantics).
#pragma once
#include <cstdint>

#include "../core/dtype.h"

namespace sealkit::cpu {

void add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols);
void bias_backward(const float* dy, float* dbias, int64_t rows, int64_t cols);
void dropout(const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p, uint64_t seed);
void fill_normal(float* x, int64_t n, uint64_t seed, float std, float value);
void fill_uniform(float* x, int64_t n, uint64_t seed, float bound);
// src_dtype: "F32", "BF16" or "F16" (little-endian host bytes, any alignment).
void convert_tensor(void* dst, DType to, const void* src, const char* src_dtype, int64_t n);

}  // namespace sealkit::cpu
