#include "sampler.h"

#include <algorithm>
#include <cmath>

#include "../core/rng.h"

namespace sealkit {

int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, uint64_t stream, uint64_t step,
                     std::vector<std::pair<float, int32_t>>& cand) {
  if (p.temperature <= 0) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<int32_t>(best);
  }
  // Candidates sorted by logit (descending, ties by id): top-k cuts the list, top-p cuts the
  // smallest prefix whose probability reaches p.
  cand.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) cand[static_cast<size_t>(i)] = {logits[i], static_cast<int32_t>(i)};
  auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t keep = vocab;
  if (p.top_k > 0 && p.top_k < vocab) {
    keep = p.top_k;
    std::partial_sort(cand.begin(), cand.begin() + keep, cand.end(), by_logit);
  } else {
    std::sort(cand.begin(), cand.end(), by_logit);
  }
  const double inv_t = 1.0 / p.temperature;
  const double m = cand[0].first;
  std::vector<double> probs(static_cast<size_t>(keep));
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    probs[static_cast<size_t>(i)] = std::exp((cand[static_cast<size_t>(i)].first - m) * inv_t);
    sum += probs[static_cast<size_t>(i)];
  }
  if (p.top_p < 1) {
    double acc = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      acc += probs[static_cast<size_t>(i)] / sum;
      if (acc >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += probs[static_cast<size_t>(i)];
  }
  // One uniform draw per (stream, step); 53-bit resolution from two 32-bit draws.
  const uint64_t base = (stream << 32) ^ step;
  const double u = (static_cast<double>(rng_u32(p.seed, 2 * base) >> 5) * 67108864.0 +
                    static_cast<double>(rng_u32(p.seed, 2 * base + 1) >> 6)) /
                   9007199254740992.0;
  double target = u * sum, acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += probs[static_cast<size_t>(i)];
    if (target < acc) return cand[static_cast<size_t>(i)].second;
  }
  return cand[static_cast<size_t>(keep - 1)].second;
}

}  // namespace sealkit
