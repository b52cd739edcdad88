// Picks the next token from a row of logits: greedy, or temperature / top-k / top-p sampling with
// the project's counter-based RNG, so a (seed, stream, step) triple always draws the same token.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace sealkit {

struct SamplingParams {
  double temperature = 0;  // 0 = greedy (argmax, lowest id on ties; NaN counts as -inf)
  int64_t top_k = 0;       // 0 = no limit
  double top_p = 1;        // nucleus mass kept (1 = all)
  uint64_t seed = 0;
};

// Buffers sample_token reuses between calls (no allocation per token once grown); one per thread
// that samples.
struct SamplerScratch {
  std::vector<float> w;                          // scaled logits, then their weights
  std::vector<uint16_t> bucket;                  // each token's logit bucket (top-p)
  std::vector<double> mass;                      // weight per bucket (top-p)
  std::vector<std::pair<float, int32_t>> cand;   // sorted candidates (top-k, top-p boundary)
};

// The distribution sampled: with temperature t > 0, token i has weight exp((logit_i - max) / t);
// top-k keeps the k highest logits (ties: lower id first); top-p then keeps the smallest prefix of
// that order whose weight reaches top_p of the total. One uniform draw per (seed, stream, step)
// picks from the kept tokens in proportion to their weights.
int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, uint64_t stream, uint64_t step,
                     SamplerScratch& scratch);

// The kept tokens and their (unnormalised) weights for these parameters (temperature > 0), in
// the order sample_token walks them: what the tests check against the definition above.
void sampling_distribution(const float* logits, int64_t vocab, const SamplingParams& p, SamplerScratch& scratch,
                           std::vector<int32_t>& ids, std::vector<double>& weights);

}  // namespace sealkit
