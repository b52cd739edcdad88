// One batched generation: prompts are prefilled once into a KV cache, each prompt's cache is copied
// to its n samples, and decode steps then advance any subset of the sequences by one token. The
// caller (lib/model) decides when a sequence stops (EOS, stop strings, length) and feeds back the
// tokens; this class owns the cache, the positions and the sampling.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model.h"
#include "sampler.h"

namespace sealkit {

struct GenerationRequest {
  std::vector<int32_t> tokens;      // prompts packed back to back
  std::vector<int32_t> prompt_len;  // [P]
  std::vector<int32_t> slot;        // [P] adapter slot per prompt (-1 = base)
  int32_t n = 1;                    // samples per prompt; sequence index = prompt * n + sample
  int32_t max_new = 16;             // tokens each sequence may generate (including the first)
  SamplingParams sampling;
  // Optional seed per prompt: its samples then draw streams (seed, sample index), independent of
  // which other prompts share the batch. Without it: (sampling.seed, sequence index).
  std::vector<uint64_t> prompt_seed;
  size_t max_cache_bytes = 0;       // 0 = no limit
  DType cache_dtype = DType::F32;   // KV cache elements (Model::default_kv_dtype is the usual pick)
};

struct GenerationStep {
  std::vector<int32_t> tokens;  // one per sequence advanced (in the order asked)
  std::vector<float> logits;    // [sequences, vocab] when requested
  // For Generation::steps: the sequence of each token (tokens[i] was sampled for seqs[i]) and how many
  // tokens each decoding step sampled, in order (their sum is tokens.size()). One step: seqs is the
  // order asked and counts = {tokens.size()}.
  std::vector<int32_t> seqs;
  std::vector<int32_t> counts;
};

class Generation {
 public:
  Generation(Model& model, GenerationRequest request);
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  int64_t sequences() const { return static_cast<int64_t>(length_.size()); }
  size_t cache_bytes() const { return cache_ ? cache_->bytes : 0; }
  DType cache_dtype() const { return req_.cache_dtype; }

  // Prefills the prompts and samples every sequence's first token.
  GenerationStep start(bool want_logits);
  // Feeds `tokens[i]` to sequence `seqs[i]` and samples its next token.
  GenerationStep step(const std::vector<int32_t>& seqs, const std::vector<int32_t>& tokens, bool want_logits);
  // Up to max_steps such steps in one call, each feeding every sequence still going the token it
  // just sampled. A sequence stops after sampling a token in `eos` or its max_new-th token (the
  // caller's own rules, so it continues exactly the sequences the caller would have); stop strings
  // stay with the caller, which leaves out of its next call whatever it stopped. The steps are the
  // calls of step() one by one, so the tokens (and logits) are theirs to the bit; what it saves is
  // a round trip to the caller per token. Stops early when no sequence is left.
  GenerationStep steps(const std::vector<int32_t>& seqs, const std::vector<int32_t>& tokens, int32_t max_steps,
                       const std::vector<int32_t>& eos, bool want_logits);
  // Takes back the last counts[i] steps of sequence seqs[i]: its cached length and its sampler's step
  // count go back, so the next step feeds the token it had sampled then and draws again at the same
  // step (the sampler's draws depend on the step index, not on history). For a caller that stops a
  // sequence on its own rule (stop strings) in the middle of a steps() call: the other sequences'
  // later steps ran in a batch that still held it, and are run again without it. Never past the
  // prompt and the first sampled token.
  void rewind(const std::vector<int32_t>& seqs, const std::vector<int32_t>& counts);

 private:
  void sample_rows(const std::vector<float>& logits, const std::vector<int32_t>& seqs, GenerationStep& out,
                   bool want_logits);

  Model& model_;
  GenerationRequest req_;
  std::unique_ptr<KvCache> cache_;
  std::vector<int32_t> start_;   // cache row of each sequence's position 0
  std::vector<int32_t> length_;  // tokens cached per sequence
  std::vector<int32_t> steps_;   // tokens sampled per sequence
  std::vector<int32_t> capacity_;
  std::vector<SamplerScratch> scratch_;  // one per pool thread
};

}  // namespace sealkit
