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
#include "../core/huge_pages.h"
#include "../core/threadpool.h"
#include "kernels.h"

namespace sealkit::cpu {

CodedWeight::~CodedWeight() { weight_block_free(data); }

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

namespace {

// Codes `lines` runs of `len` bf16 words (line l at src + l * stride) as coded_weight.h lays out
// rows, with escape offsets at every `seg_groups` groups of each line (escape_start[l * segs + s]),
// or returns null past the escape limit. Fills everything but source, N, K, ldb and the layout;
// escape_groups only with group_bits (the rows' kernel reads them, the strips' does not).
std::unique_ptr<CodedWeight> code_lines(const uint16_t* src, int64_t lines, int64_t len, int64_t stride,
                                        int64_t seg_groups, bool group_bits) {
  const int64_t groups = (len + kCodedGroup - 1) / kCodedGroup;
  const int64_t segs = (groups + seg_groups - 1) / seg_groups;
  constexpr int64_t kLinesPerTask = 16;
  const int64_t tasks = (lines + kLinesPerTask - 1) / kLinesPerTask;
  auto line_range = [&](int64_t task, auto&& fn) {
    for (int64_t l = task * kLinesPerTask; l < std::min(lines, (task + 1) * kLinesPerTask); ++l)
      fn(l, src + l * stride);
  };

  // The 15 most common high bytes (ties to the smaller byte, so the table depends only on W).
  std::vector<std::array<int64_t, 256>> counts(static_cast<size_t>(global_pool().size()));
  for (auto& c : counts) c.fill(0);
  global_pool().run(tasks, [&](int64_t task, int thread) {
    std::array<int64_t, 256>& c = counts[static_cast<size_t>(thread)];
    line_range(task, [&](int64_t, const uint16_t* line) {
      for (int64_t k = 0; k < len; ++k) ++c[line[k] >> 8];
    });
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
  const int64_t escaped = lines * len - coded;
  if (escaped * kCodedMaxEscapeRatio > lines * len) return nullptr;

  cw->row_bytes = groups * kCodedGroupBytes;
  cw->segments = segs;
  cw->segment_groups = seg_groups;
  const size_t data_bytes = static_cast<size_t>(lines * cw->row_bytes);
  cw->data = static_cast<uint8_t*>(weight_block_alloc(data_bytes));  // huge pages: huge_pages.h
  // Escape offsets: each segment's count, then their running sum.
  const int64_t seg_len = seg_groups * kCodedGroup;
  cw->escape_start.assign(static_cast<size_t>(lines * segs + 1), 0);
  global_pool().run(tasks, [&](int64_t task, int) {
    line_range(task, [&](int64_t l, const uint16_t* line) {
      for (int64_t k = 0; k < len; ++k)
        cw->escape_start[static_cast<size_t>(l * segs + k / seg_len + 1)] += code_of[line[k] >> 8] == kCodedEscape;
    });
  });
  for (size_t i = 1; i < cw->escape_start.size(); ++i) cw->escape_start[i] += cw->escape_start[i - 1];
  cw->escapes.resize(static_cast<size_t>(escaped));
  cw->escape_group_words = group_bits ? (groups + 63) / 64 : 0;
  cw->escape_groups.assign(static_cast<size_t>(lines * cw->escape_group_words), 0);
  global_pool().run(tasks, [&](int64_t task, int) {
    line_range(task, [&](int64_t l, const uint16_t* line) {
      uint8_t* out = cw->data + l * cw->row_bytes;
      std::memset(out, 0, static_cast<size_t>(cw->row_bytes));
      uint8_t* esc = cw->escapes.data() + cw->escape_start[static_cast<size_t>(l * segs)];
      uint64_t* bits = cw->escape_groups.data() + l * cw->escape_group_words;
      for (int64_t k = 0; k < len; ++k) {
        const uint16_t v = line[k];
        const uint8_t code = code_of[v >> 8];
        if (code == kCodedEscape) {
          *esc++ = static_cast<uint8_t>(v >> 8);
          const int64_t g = k / kCodedGroup;
          if (group_bits) bits[g / 64] |= uint64_t{1} << (g % 64);
        }
        const int64_t i = k % kCodedGroup;
        uint8_t* grp = out + (k / kCodedGroup) * kCodedGroupBytes;
        grp[i] = static_cast<uint8_t>(v & 0xff);
        grp[64 + i % 32] |= static_cast<uint8_t>(i < 32 ? code : code << 4);
      }
    });
  });
  cw->bytes = data_bytes + cw->escapes.size() + cw->escape_start.size() * sizeof(uint32_t) +
              cw->escape_groups.size() * sizeof(uint64_t);
  return cw;
}

}  // namespace

std::unique_ptr<CodedWeight> code_weight(WeightView w, int64_t rows, int64_t cols) {
  if (w.dtype != DType::BF16 || rows <= 0 || cols <= 0 || !coded_weights_supported()) return nullptr;
  const int64_t groups = (cols + kCodedGroup - 1) / kCodedGroup;
  std::unique_ptr<CodedWeight> cw = code_lines(static_cast<const uint16_t*>(w.data), rows, cols, cols, groups, true);
  if (!cw) return nullptr;
  cw->source = w.data;
  cw->N = rows;
  cw->K = cols;
  cw->ldb = cols;
  return cw;
}

std::unique_ptr<CodedWeight> code_packed_strips(const PackedWeight& pw) {
  const int64_t kc_depth = packed_strip_kc_depth(pw.K);
  // vdpbf16ps strips only: 32 columns of bf16 pairs, no padding beyond the last pair.
  if (!pw.pairs || pw.nr != 32 || pw.pair_align != 1 || !pw.trans_b || kc_depth <= 0 || !coded_weights_supported())
    return nullptr;
  const int64_t depth = (pw.K + 1) / 2, strips = (pw.N + 31) / 32;
  // A strip's pair step is 32 slots of 2 bf16 words: 64 words, one coded group.
  std::unique_ptr<CodedWeight> cw =
      code_lines(reinterpret_cast<const uint16_t*>(pw.strips), strips, depth * 64, pw.strip_stride * 2, kc_depth, false);
  if (!cw) return nullptr;
  cw->source = pw.source;
  cw->N = pw.N;
  cw->K = pw.K;
  cw->ldb = pw.ldb;
  cw->strips = true;
  return cw;
}

}  // namespace sealkit::cpu
