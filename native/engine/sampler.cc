#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "../core/rng.h"
#include "../cpu/kernels.h"
#include "../cpu/logit_kernels.h"

namespace sealkit {
namespace {

// Candidates by logit, descending; ties by lower id. A NaN logit counts as -inf (never drawn).
bool by_logit(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}
using cpu::logit_key;

// Each path below finds the kept tokens and their total weight, then walks them in a fixed order,
// calling visit(id, weight) and adding up the weights, until the running sum passes `target`
// (u * total for a draw u in [0, 1); u < 0 walks every kept token). The last token visited is the
// draw; should rounding keep the sum below the target, it is the last kept token.
struct Walk {
  double u;
  double target = 0, acc = 0;
  void start(double total) { target = u < 0 ? std::numeric_limits<double>::infinity() : u * total; }
  // True when the walk stops at this token.
  bool step(double w) {
    acc += w;
    return target < acc;
  }
};

// Top-k (k < vocab): only the k best are sorted; their weights and the top-p cut in that order.
template <typename Visit>
void walk_top_k(const float* logits, int64_t vocab, const SamplingParams& p, SamplerScratch& s, Walk& walk,
                Visit visit) {
  std::vector<std::pair<float, int32_t>>& cand = s.cand;
  cand.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) cand[static_cast<size_t>(i)] = {logit_key(logits[i]), static_cast<int32_t>(i)};
  int64_t keep = p.top_k;
  std::partial_sort(cand.begin(), cand.begin() + keep, cand.end(), by_logit);
  const double inv_t = 1.0 / p.temperature, m = cand[0].first;
  std::vector<double>& w = s.mass;  // the k weights, in candidate order
  w.resize(static_cast<size_t>(keep));
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i)
    sum += w[static_cast<size_t>(i)] = std::isinf(m) ? (i == 0) : std::exp((cand[static_cast<size_t>(i)].first - m) * inv_t);
  double kept = sum;
  if (p.top_p < 1) {
    double acc = 0;
    for (int64_t i = 0; i < keep; ++i) {
      acc += w[static_cast<size_t>(i)];
      if (acc >= p.top_p * sum) {
        keep = i + 1;
        kept = acc;
        break;
      }
    }
  }
  walk.start(kept);
  for (int64_t i = 0; i < keep; ++i) {
    visit(cand[static_cast<size_t>(i)].second, w[static_cast<size_t>(i)]);
    if (walk.step(w[static_cast<size_t>(i)])) return;
  }
}

// No top-k: the weights of the whole vocabulary come from one vectorised exp, and nothing is sorted
// for top_p = 1 (tokens are walked in id order). For top_p < 1, tokens go into kBuckets buckets by
// logit (every logit of a bucket lies above every logit of the next), the buckets' weights add up
// from the top until they reach top_p of the total, and only the bucket where that happens is
// sorted; the kept tokens are walked in id order, then that bucket's sorted prefix. This replaced a
// sort of the whole vocabulary per token, which at SmolLM2's 49,152 tokens took twice as long as
// the rest of a decode step at batch 8.
constexpr int kBuckets = 4096;

template <typename Visit>
void walk_full(const float* logits, int64_t vocab, const SamplingParams& p, SamplerScratch& s, Walk& walk,
               Visit visit) {
  std::vector<float>& w = s.w;
  w.resize(static_cast<size_t>(vocab));
  const float inv_t = static_cast<float>(1.0 / p.temperature), neg_inf = -std::numeric_limits<float>::infinity();
  // any_masked: some token's scaled logit is -inf (or NaN), weight 0.
  const auto [hi, lo, any_masked] = cpu::scale_logits(logits, vocab, inv_t, w.data());
  if (std::isinf(hi)) {  // no finite best logit: the first best one takes everything
    walk.start(1.0);
    visit(static_cast<int32_t>(cpu::argmax(w.data(), vocab)), 1.0);
    walk.step(1.0);
    return;
  }
  const bool nucleus = p.top_p < 1;
  if (nucleus) {
    // (hi - x) * per only grows as x falls, so buckets keep the logits' order.
    const float span = hi - lo, per = span > 0 ? (kBuckets - 1) / span : 0.f;
    s.bucket.resize(static_cast<size_t>(vocab));
    cpu::logit_buckets(w.data(), vocab, hi, per, kBuckets - 1, s.bucket.data());
  }
  double total = cpu::exp_shifted(w.data(), w.data(), vocab, hi, 1.f);
  // exp512 clamps its input, so a masked token came out with a tiny positive weight.
  if (any_masked)
    for (int64_t i = 0; i < vocab; ++i)
      if (logit_key(logits[i]) * inv_t == neg_inf) {
        total -= w[static_cast<size_t>(i)];
        w[static_cast<size_t>(i)] = 0;
      }
  if (!nucleus) {
    walk.start(total);
    for (int64_t i = 0; i < vocab; ++i) {
      const double wi = w[static_cast<size_t>(i)];
      if (wi == 0) continue;
      visit(static_cast<int32_t>(i), wi);
      if (walk.step(wi)) return;
    }
    return;
  }
  std::vector<double>& mass = s.mass;
  mass.assign(kBuckets, 0.0);
  for (int64_t i = 0; i < vocab; ++i) mass[s.bucket[static_cast<size_t>(i)]] += w[static_cast<size_t>(i)];
  const double target = p.top_p * total;
  double above = 0;  // weight of the buckets before the boundary one
  int boundary = kBuckets - 1;
  for (int b = 0; b < kBuckets; ++b) {
    if (above + mass[static_cast<size_t>(b)] >= target) {
      boundary = b;
      break;
    }
    above += mass[static_cast<size_t>(b)];
  }
  // The boundary bucket in sorted order, cut where the running weight reaches top_p.
  std::vector<std::pair<float, int32_t>>& cand = s.cand;
  cand.clear();
  for (int64_t i = 0; i < vocab; ++i)
    if (s.bucket[static_cast<size_t>(i)] == boundary && w[static_cast<size_t>(i)] > 0)
      cand.push_back({logits[i], static_cast<int32_t>(i)});
  std::sort(cand.begin(), cand.end(), by_logit);
  size_t cut = cand.size();
  double kept = above;
  for (size_t j = 0; j < cand.size(); ++j) {
    kept += w[static_cast<size_t>(cand[j].second)];
    if (kept >= target) {
      cut = j + 1;
      break;
    }
  }
  walk.start(kept);
  for (int64_t i = 0; i < vocab; ++i) {
    const double wi = w[static_cast<size_t>(i)];
    if (s.bucket[static_cast<size_t>(i)] >= boundary || wi == 0) continue;
    visit(static_cast<int32_t>(i), wi);
    if (walk.step(wi)) return;
  }
  for (size_t j = 0; j < cut; ++j) {
    const double wi = w[static_cast<size_t>(cand[j].second)];
    visit(cand[j].second, wi);
    if (walk.step(wi)) return;
  }
}

template <typename Visit>
void walk_kept(const float* logits, int64_t vocab, const SamplingParams& p, SamplerScratch& s, Walk& walk,
               Visit visit) {
  if (p.top_k > 0 && p.top_k < vocab) walk_top_k(logits, vocab, p, s, walk, visit);
  else walk_full(logits, vocab, p, s, walk, visit);
}

}  // namespace

int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, uint64_t stream, uint64_t step,
                     SamplerScratch& s) {
  if (p.temperature <= 0) return static_cast<int32_t>(cpu::argmax(logits, vocab));
  // One uniform draw per (stream, step); 53-bit resolution from two 32-bit draws.
  const uint64_t base = (stream << 32) ^ step;
  const double u = (static_cast<double>(rng_u32(p.seed, 2 * base) >> 5) * 67108864.0 +
                    static_cast<double>(rng_u32(p.seed, 2 * base + 1) >> 6)) /
                   9007199254740992.0;
  Walk walk{u};
  int32_t picked = 0;
  walk_kept(logits, vocab, p, s, walk, [&](int32_t id, double) { picked = id; });
  return picked;
}

void sampling_distribution(const float* logits, int64_t vocab, const SamplingParams& p, SamplerScratch& s,
                           std::vector<int32_t>& ids, std::vector<double>& weights) {
  ids.clear();
  weights.clear();
  Walk walk{-1};
  walk_kept(logits, vocab, p, s, walk, [&](int32_t id, double w) {
    ids.push_back(id);
    weights.push_back(w);
  });
}

}  // namespace sealkit
