// Decoding's GEMMs back to back, as one token of SmolLM2-135M runs them: 30 layers of q/k/v (one
// group), o, gate/up (one group) and down, then the LM head, every weight its own bf16 array (269 MB,
// far past the caches), through the engine's own gemm/gemm_group (native/cpu/gemm.cc, the few-rows
// path), for a batch of --rows sequences (default 1). Where the engine would read packed copies of
// the weights at that batch (2-16 rows on the packed strips), each weight gets one, made before the
// timing as the model makes them. Nothing else of a decoding step runs, so the figure is what the
// GEMMs alone stream. A read-only probe over 256 MB on the same pool, before and after, is the
// reference.
// bench/decode-chain.ts builds and runs it, with the addon's CPU sources (native/sources.json's "cpu"
// list without native/addon/); by hand:
//   c++ -O3 -std=c++20 -pthread -Inative bench/decode_chain.cc $(node -p \
//     "require('./native/sources.json').cpu.filter((s) => !s.startsWith('native/addon/')).join(' ')") -o decode_chain
//   ./decode_chain [--tokens N] [--rows M]     one JSON object on stdout
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/threadpool.h"
#include "cpu/kernels.h"

using namespace sealkit;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// A bf16 weight [rows, cols], 64-byte aligned as the CPU backend allocates, filled with small values.
struct Weight {
  std::unique_ptr<uint16_t, FreeDeleter> data;
  int64_t rows, cols;
  Weight(int64_t r, int64_t c) : rows(r), cols(c) {
    const size_t bytes = (static_cast<size_t>(r * c) * 2 + 63) / 64 * 64;
    data.reset(static_cast<uint16_t*>(std::aligned_alloc(64, bytes)));
    if (!data) { std::fprintf(stderr, "decode_chain: cannot allocate a weight\n"); std::exit(1); }
    for (int64_t i = 0; i < r * c; ++i) data.get()[i] = static_cast<uint16_t>(0x3c00 + i % 97);
  }
  int64_t bytes() const { return rows * cols * 2; }
  std::unique_ptr<cpu::PackedWeight> packed;  // the engine's packed copy, where it reads one
  // Packs the copy the engine reads for a GEMM of `m` rows against this weight, if it reads one.
  void pack_for(int64_t m) {
    if (!cpu::gemm_reads_packed_weight(m, DType::BF16, true)) return;
    WeightView v;
    v.data = data.get();
    v.dtype = DType::BF16;
    packed = cpu::pack_weight(v, rows, cols, true);
  }
};

// y = x W^T for m rows of x (y's rows w.rows apart).
cpu::GemmArgs<float> row_times(const Weight& w, const float* x, float* y, int64_t m) {
  cpu::GemmArgs<float> g;
  g.M = m; g.N = w.rows; g.K = w.cols;
  g.A = x; g.lda = w.cols;
  g.B.data = w.data.get(); g.B.dtype = DType::BF16; g.ldb = w.cols; g.trans_b = true;
  g.C = y; g.ldc = w.rows;
  g.packed_b = w.packed.get();
  return g;
}

// Lines [begin, end) of p read with 64-byte loads (four independent sums), the result kept.
__attribute__((target("avx512f"))) void read_lines(const char* p, int64_t begin, int64_t end) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = begin; i + 4 <= end; i += 4) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i * 64));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i * 64 + 64));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i * 64 + 128));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i * 64 + 192));
  }
  volatile float sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  (void)sink;
}

// Best of 5 passes of a read-only stream over 256 MB, split across the pool as the GEMMs are.
double read_probe_gbs() {
  const int64_t lines = (256ll << 20) / 64;
  std::unique_ptr<char, FreeDeleter> buf(static_cast<char*>(std::aligned_alloc(64, static_cast<size_t>(lines) * 64)));
  std::memset(buf.get(), 1, static_cast<size_t>(lines) * 64);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    const double t0 = now();
    parallel_streams(lines, 4096, [&](const StreamChunk& c) { read_lines(buf.get(), c.begin, c.end); });
    best = std::max(best, static_cast<double>(lines) * 64 / (now() - t0) / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int tokens = 40, m = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) tokens = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--rows") == 0 && i + 1 < argc) m = std::atoi(argv[++i]);
    else { std::fprintf(stderr, "usage: decode_chain [--tokens N] [--rows M]\n"); return 2; }
  }
  if (tokens < 2) { std::fprintf(stderr, "decode_chain: --tokens must be >= 2\n"); return 2; }
  if (m < 1 || m > 64) { std::fprintf(stderr, "decode_chain: --rows must be 1-64\n"); return 2; }
  constexpr int kLayers = 30;
  constexpr int64_t kHidden = 576, kKv = 192, kInter = 1536, kVocab = 49152;
  struct Layer {
    Weight q{kHidden, kHidden}, k{kKv, kHidden}, v{kKv, kHidden}, o{kHidden, kHidden}, gate{kInter, kHidden},
        up{kInter, kHidden}, down{kHidden, kInter};
  };
  std::vector<std::unique_ptr<Layer>> layers;
  for (int l = 0; l < kLayers; ++l) layers.push_back(std::make_unique<Layer>());
  Weight head(kVocab, kHidden);
  for (auto& L : layers)
    for (Weight* w : {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down}) w->pack_for(m);
  head.pack_for(m);
  // m rows of input (K at most kInter) and one output array per projection, m rows each.
  std::vector<float> x(m * kInter, 0.01f), q(m * kHidden), k(m * kKv), v(m * kKv), o(m * kHidden), gate(m * kInter),
      up(m * kInter), down(m * kHidden), logits(m * kVocab);

  const double probe_before = read_probe_gbs();
  // Per op kind: q/k/v, o, gate/up, down, LM head.
  const char* names[5] = {"qkv", "o", "gate_up", "down", "lm_head"};
  int64_t bytes[5] = {0, 0, 0, 0, head.bytes()};
  for (const auto& L : layers) {
    bytes[0] += L->q.bytes() + L->k.bytes() + L->v.bytes();
    bytes[1] += L->o.bytes();
    bytes[2] += L->gate.bytes() + L->up.bytes();
    bytes[3] += L->down.bytes();
  }
  double seconds[5] = {0};
  std::vector<double> token_s;
  const int warmup = 3;
  for (int t = 0; t < warmup + tokens; ++t) {
    double spent[5] = {0};
    const double t0 = now();
    for (const auto& L : layers) {
      double a = now();
      cpu::GemmArgs<float> qkv[3] = {row_times(L->q, x.data(), q.data(), m), row_times(L->k, x.data(), k.data(), m),
                                     row_times(L->v, x.data(), v.data(), m)};
      cpu::gemm_group(qkv, 3);
      double b = now();
      spent[0] += b - a;
      cpu::gemm(row_times(L->o, x.data(), o.data(), m));
      a = now();
      spent[1] += a - b;
      cpu::GemmArgs<float> gu[2] = {row_times(L->gate, x.data(), gate.data(), m), row_times(L->up, x.data(), up.data(), m)};
      cpu::gemm_group(gu, 2);
      b = now();
      spent[2] += b - a;
      cpu::gemm(row_times(L->down, x.data(), down.data(), m));
      spent[3] += now() - b;
    }
    const double a = now();
    cpu::gemm(row_times(head, x.data(), logits.data(), m));
    const double end = now();
    spent[4] += end - a;
    if (t >= warmup) {
      for (int i = 0; i < 5; ++i) seconds[i] += spent[i];
      token_s.push_back(end - t0);
    }
  }
  const double probe_after = read_probe_gbs();
  std::sort(token_s.begin(), token_s.end());
  const double median_s = token_s[token_s.size() / 2];
  int64_t total_bytes = 0;
  for (int64_t b : bytes) total_bytes += b;
  const double probe = std::max(probe_before, probe_after);
  std::printf("{\"threads\":%d,\"rows\":%d,\"packed\":%s,\"tokens\":%d,\"weight_bytes\":%lld,\"token_ms_median\":%.4f,\"gbs\":%.2f,"
              "\"probe_gbs_before\":%.2f,\"probe_gbs_after\":%.2f,\"share_of_probe\":%.4f,\"ops\":{",
              global_pool().threads(), m, head.packed ? "true" : "false", tokens, static_cast<long long>(total_bytes), median_s * 1e3,
              total_bytes / median_s / 1e9, probe_before, probe_after, total_bytes / median_s / 1e9 / probe);
  for (int i = 0; i < 5; ++i)
    std::printf("\"%s\":{\"ms\":%.4f,\"gbs\":%.2f}%s", names[i], seconds[i] / tokens * 1e3,
                bytes[i] / (seconds[i] / tokens) / 1e9, i < 4 ? "," : "");
  std::printf("}}\n");
  return 0;
}
