#include "coded_weight.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>

#include "../core/cpu_features.h"
#include "../core/env_switch.h"
#include "../core/threadpool.h"

namespace sealkit::cpu {

CodedWeight::~CodedWeight() { std::free(data); }

bool coded_weights_supported() {
#if defined(__x86_64__)
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  return vbmi && active_isa() == Isa::Avx512Bf16;
#else
  return false;
#endif
}

namespace {

// The largest cache one core sees (Linux sysfs: cpu0's highest-level cache, one instance of it), or
// 32 MiB where that is not readable. Not sysconf(_SC_LEVEL3_CACHE_SIZE): glibc reported 384 MiB
// there on a 2-vCPU EPYC VM whose cores share one 32 MiB L3.
size_t last_level_cache_bytes() {
  static const size_t bytes = [] {
    size_t best = 0;
    int best_level = 0;
    for (int i = 0; i < 8; ++i) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
      std::ifstream level_file(dir + "level"), size_file(dir + "size");
      int level = 0;
      std::string size;
      if (!(level_file >> level) || !(size_file >> size) || size.empty()) continue;
      char* end = nullptr;
      const unsigned long long n = std::strtoull(size.c_str(), &end, 10);
      const size_t unit = *end == 'K' ? size_t(1) << 10 : *end == 'M' ? size_t(1) << 20 : 1;
      if (level > best_level && n > 0) best_level = level, best = static_cast<size_t>(n) * unit;
    }
    return best > 0 ? best : size_t(32) << 20;
  }();
  return bytes;
}

}  // namespace

bool coded_weights_wanted(size_t weight_bytes) {
  return coded_weights_supported() &&
         switch_on_or("SEALKIT_CODED_WEIGHTS", weight_bytes > 2 * last_level_cache_bytes());
}

bool coded_weights_on() { return switch_on("SEALKIT_CODED_WEIGHTS"); }

std::unique_ptr<CodedWeight> code_weight(WeightView w, int64_t rows, int64_t cols) {
  if (w.dtype != DType::BF16 || rows <= 0 || cols <= 0 || !coded_weights_supported()) return nullptr;
  const uint16_t* W = static_cast<const uint16_t*>(w.data);
  const int64_t groups = (cols + kCodedGroup - 1) / kCodedGroup;

  // The 15 most common high bytes (ties to the smaller byte, so the table depends only on W).
  constexpr int64_t kRowsPerTask = 64;
  std::vector<std::array<int64_t, 256>> counts(static_cast<size_t>(global_pool().size()));
  for (auto& c : counts) c.fill(0);
  global_pool().run((rows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task, int thread) {
    std::array<int64_t, 256>& c = counts[static_cast<size_t>(thread)];
    for (int64_t r = task * kRowsPerTask; r < std::min(rows, (task + 1) * kRowsPerTask); ++r)
      for (int64_t k = 0; k < cols; ++k) ++c[W[r * cols + k] >> 8];
  });
  std::array<int64_t, 256> total{};
  for (const auto& c : counts)
    for (int b = 0; b < 256; ++b) total[static_cast<size_t>(b)] += c[static_cast<size_t>(b)];
  std::array<int, 256> order;
  for (int b = 0; b < 256; ++b) order[static_cast<size_t>(b)] = b;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return total[static_cast<size_t>(a)] > total[static_cast<size_t>(b)];
  });
  std::array<uint8_t, 256> code_of;
  code_of.fill(static_cast<uint8_t>(kCodedEscape));
  int64_t coded = 0;
  auto cw = std::make_unique<CodedWeight>();
  for (int c = 0; c < kCodedEscape; ++c) {
    const int b = order[static_cast<size_t>(c)];
    code_of[static_cast<size_t>(b)] = static_cast<uint8_t>(c);
    coded += total[static_cast<size_t>(b)];
    for (int j = c; j < 64; j += 16) cw->table[j] = static_cast<uint8_t>(b);
  }
  const int64_t escaped = rows * cols - coded;
  if (escaped * kCodedMaxEscapeRatio > rows * cols) return nullptr;

  cw->source = w.data;
  cw->N = rows;
  cw->K = cols;
  cw->ldb = cols;
  cw->row_bytes = groups * kCodedGroupBytes;
  const size_t data_bytes = static_cast<size_t>(rows * cw->row_bytes);
  cw->data = static_cast<uint8_t*>(std::aligned_alloc(64, (data_bytes + 63) / 64 * 64));
  if (!cw->data) throw std::bad_alloc();
  // Escape offsets: each row's count, then their running sum.
  cw->escape_start.assign(static_cast<size_t>(rows + 1), 0);
  parallel_for(rows, kRowsPerTask, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint16_t* row = W + r * cols;
      uint32_t n = 0;
      for (int64_t k = 0; k < cols; ++k) n += code_of[row[k] >> 8] == kCodedEscape;
      cw->escape_start[static_cast<size_t>(r + 1)] = n;
    }
  });
  for (int64_t r = 0; r < rows; ++r) cw->escape_start[static_cast<size_t>(r + 1)] += cw->escape_start[static_cast<size_t>(r)];
  cw->escapes.resize(static_cast<size_t>(escaped));
  parallel_for(rows, kRowsPerTask, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint16_t* row = W + r * cols;
      uint8_t* out = cw->data + r * cw->row_bytes;
      std::memset(out, 0, static_cast<size_t>(cw->row_bytes));
      uint8_t* esc = cw->escapes.data() + cw->escape_start[static_cast<size_t>(r)];
      for (int64_t k = 0; k < cols; ++k) {
        const uint16_t v = row[k];
        const uint8_t code = code_of[v >> 8];
        if (code == kCodedEscape) *esc++ = static_cast<uint8_t>(v >> 8);
        const int64_t g = k / kCodedGroup, i = k % kCodedGroup;
        uint8_t* grp = out + g * kCodedGroupBytes;
        grp[i] = static_cast<uint8_t>(v & 0xff);
        grp[64 + i % 32] |= static_cast<uint8_t>(i < 32 ? code : code << 4);
      }
    }
  });
  cw->bytes = data_bytes + cw->escapes.size() + cw->escape_start.size() * sizeof(uint32_t);
  return cw;
}

}  // namespace sealkit::cpu
