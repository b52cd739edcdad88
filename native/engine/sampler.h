// Picks the next token from a row of logits: greedy, or temperature / top-k / top-p sampling with
// the project's counter-based RNG, so a (seed, stream, step) triple always draws the same token.
#pragma once
#include <cstdint>
#include <vector>

namespace sealkit {

struct SamplingParams {
  double temperature = 0;  // 0 = greedy (argmax, lowest id on ties)
  int64_t top_k = 0;       // 0 = no limit
  double top_p = 1;        // nucleus mass kept (1 = all)
  uint64_t seed = 0;
};

// `scratch` is reused between calls to avoid allocating per token.
int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, uint64_t stream, uint64_t step,
                     std::vector<std::pair<float, int32_t>>& scratch);

}  // namespace sealkit
