// Whole-row passes over a row of logits for the sampler: argmax, temperature scaling with the
// row's range, and the logit buckets of top-p. Each is an element-wise map or an order-free
// min/max, so the AVX-512 versions give the results of the scalar ones (a zero hi or lo may differ
// in sign, which nothing downstream can tell apart).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

namespace sealkit::cpu {

// How sampling orders a logit: NaN counts as -inf (never drawn, never the argmax).
inline float logit_key(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }

// The lowest index of the largest element, NaN counting as -inf (so 0 when no element is above
// -inf).
int64_t argmax(const float* x, int64_t n);

// out[i] = key(x[i]) * scale (scale > 0), key mapping NaN to -inf. hi: the largest out; lo: the
// smallest out above -inf (+inf if none); masked: some out is -inf.
struct ScaledRange {
  float hi, lo;
  bool masked;
};
ScaledRange scale_logits(const float* x, int64_t n, float scale, float* out);

// bucket[i] = last for w[i] == -inf, else min(last, (hi - w[i]) * per) truncated (hi >= every
// w[i], per >= 0 and finite, last < 65536): buckets follow the values' order, highest first.
void logit_buckets(const float* w, int64_t n, float hi, float per, uint16_t last, uint16_t* bucket);

}  // namespace sealkit::cpu
