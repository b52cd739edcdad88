// Small CPU kernels the backend interface adds on top of kernels.h: bias add/backward, dropout,
// random fills and dtype conversion at upload.
#include "misc_kernels.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "../core/rng.h"
#include "../core/threadpool.h"

namespace sealkit::cpu {

void add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols) {
  parallel_for(rows, 64, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* o = out + r * cols;
      for (int64_t c = 0; c < cols; ++c) o[c] += bias[c];
    }
  });
}

void bias_backward(const float* dy, float* dbias, int64_t rows, int64_t cols) {
  // Parallel over columns, rows summed in order: deterministic for any thread count.
  parallel_for(cols, 64, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      double s = 0;
      for (int64_t r = 0; r < rows; ++r) s += dy[r * cols + c];
      dbias[c] += static_cast<float>(s);
    }
  });
}

void dropout(const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p, uint64_t seed) {
  const float keep_scale = 1.0f / (1.0f - p);
  parallel_for(rows, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      uint64_t base = static_cast<uint64_t>(row_offset + r) * static_cast<uint64_t>(cols);
      for (int64_t c = 0; c < cols; ++c) {
        bool keep = rng_uniform(seed, base + static_cast<uint64_t>(c)) >= p;
        out[r * cols + c] = keep ? x[r * cols + c] * keep_scale : 0.0f;
      }
    }
  });
}

void fill_normal(float* x, int64_t n, uint64_t seed, float std, float value) {
  parallel_for(n, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = std == 0.0f ? value : value + std * rng_normal(seed, static_cast<uint64_t>(i));
  });
}

void fill_uniform(float* x, int64_t n, uint64_t seed, float bound) {
  parallel_for(n, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = (2.0f * rng_uniform(seed, static_cast<uint64_t>(i)) - 1.0f) * bound;
  });
}

void convert_tensor(void* dst, DType to, const void* src, const char* src_dtype, int64_t n) {
  std::string s(src_dtype);
  if (to != DType::F32 && to != DType::BF16) throw std::invalid_argument("convert_tensor: storage must be f32 or bf16");
  if (s == "F32") {
    if (to == DType::F32) {
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
    } else {
      auto* d = static_cast<uint16_t*>(dst);
      parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          float f;
          std::memcpy(&f, static_cast<const char*>(src) + i * 4, 4);
          d[i] = f32_to_bf16(f);
        }
      });
    }
  } else if (s == "BF16" || s == "F16") {
    bool bf = s == "BF16";
    if (bf && to == DType::BF16) {
      std::memcpy(dst, src, static_cast<size_t>(n) * 2);
      return;
    }
    parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        uint16_t h;
        std::memcpy(&h, static_cast<const char*>(src) + i * 2, 2);
        float f = bf ? bf16_to_f32(h) : f16_to_f32(h);
        if (to == DType::F32) static_cast<float*>(dst)[i] = f;
        else static_cast<uint16_t*>(dst)[i] = f32_to_bf16(f);
      }
    });
  } else {
    throw std::invalid_argument("convert_tensor: unsupported source dtype " + s + " (F32, BF16, F16)");
  }
}

}  // namespace sealkit::cpu
