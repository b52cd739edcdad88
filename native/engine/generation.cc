#include "generation.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "../core/threadpool.h"

namespace sealkit {

Generation::Generation(Model& model, GenerationRequest request) : model_(model), req_(std::move(request)) {
  const auto& c = model_.config();
  const size_t P = req_.prompt_len.size();
  if (P == 0) throw std::invalid_argument("generate: no prompts");
  if (req_.slot.size() != P) throw std::invalid_argument("generate: one adapter slot per prompt expected");
  if (!req_.prompt_seed.empty() && req_.prompt_seed.size() != P) throw std::invalid_argument("generate: one seed per prompt expected");
  if (req_.n < 1) throw std::invalid_argument("generate: n (samples per prompt) must be >= 1");
  if (req_.max_new < 1) throw std::invalid_argument("generate: max new tokens must be >= 1");
  if (!(req_.sampling.temperature >= 0)) throw std::invalid_argument("generate: temperature must be >= 0");
  if (!(req_.sampling.top_p > 0 && req_.sampling.top_p <= 1)) throw std::invalid_argument("generate: top_p must be in (0, 1]");
  if (req_.sampling.top_k < 0) throw std::invalid_argument("generate: top_k must be >= 0");
  int64_t total = 0, rows = 0;
  for (size_t p = 0; p < P; ++p) {
    if (req_.prompt_len[p] <= 0) throw std::invalid_argument("generate: prompt " + std::to_string(p) + " is empty");
    total += req_.prompt_len[p];
    const int32_t cap = req_.prompt_len[p] + req_.max_new;
    for (int32_t s = 0; s < req_.n; ++s) {
      start_.push_back(static_cast<int32_t>(rows));
      capacity_.push_back(cap);
      length_.push_back(0);
      steps_.push_back(0);
      rows += cap;
    }
  }
  if (total != static_cast<int64_t>(req_.tokens.size()))
    throw std::invalid_argument("generate: prompt lengths sum to " + std::to_string(total) + " but " +
                                std::to_string(req_.tokens.size()) + " tokens were given");
  for (int32_t t : req_.tokens)
    if (t < 0 || t >= c.vocab) throw std::invalid_argument("generate: prompt token " + std::to_string(t) + " is outside the vocabulary");
  if (rows > INT32_MAX) throw std::invalid_argument("generate: the KV cache would exceed 2^31 rows");
  const size_t need = model_.kv_cache_bytes(rows, req_.cache_dtype);
  if (req_.max_cache_bytes > 0 && need > req_.max_cache_bytes)
    throw std::runtime_error("generate: the KV cache for " + std::to_string(length_.size()) + " sequences (" +
                             std::to_string(rows) + " positions) needs " + std::to_string(need >> 20) +
                             " MiB, above the limit of " + std::to_string(req_.max_cache_bytes >> 20) +
                             " MiB; lower n, max new tokens or the batch, or raise maxKvBytes");
  cache_ = model_.create_cache(rows, req_.cache_dtype);
}

Generation::~Generation() {
  if (cache_) model_.release_cache(*cache_);
}

GenerationStep Generation::start(bool want_logits) {
  const size_t P = req_.prompt_len.size();
  Batch b;
  b.tokens = req_.tokens;
  b.seq_len = req_.prompt_len;
  b.slot = req_.slot;
  b.cache = cache_.get();
  b.past.assign(P, 0);
  int64_t row = 0;
  for (size_t p = 0; p < P; ++p) {
    b.cache_start.push_back(start_[p * static_cast<size_t>(req_.n)]);
    row += req_.prompt_len[p];
    b.logit_rows.push_back(static_cast<int32_t>(row - 1));
  }
  ForwardResult r = model_.forward(b, false);
  // Samples 1..n-1 of each prompt start from a copy of the prompt's cached keys and values.
  const auto& c = model_.config();
  const size_t row_bytes = cache_->row_bytes;
  for (size_t p = 0; p < P; ++p) {
    const size_t first = p * static_cast<size_t>(req_.n);
    for (int32_t s = 1; s < req_.n; ++s)
      for (int64_t l = 0; l < c.layers; ++l)
        for (void* layer : {cache_->k[static_cast<size_t>(l)], cache_->v[static_cast<size_t>(l)]}) {
          char* base = static_cast<char*>(layer);
          model_.backend().copy(base + static_cast<size_t>(start_[first + static_cast<size_t>(s)]) * row_bytes,
                                base + static_cast<size_t>(start_[first]) * row_bytes,
                                row_bytes * static_cast<size_t>(req_.prompt_len[p]));
        }
    for (int32_t s = 0; s < req_.n; ++s) length_[first + static_cast<size_t>(s)] = req_.prompt_len[p];
  }
  // Expand the per-prompt logits to one row per sequence.
  std::vector<int32_t> seqs;
  std::vector<float> logits;
  logits.reserve(static_cast<size_t>(sequences() * c.vocab));
  for (size_t p = 0; p < P; ++p)
    for (int32_t s = 0; s < req_.n; ++s) {
      seqs.push_back(static_cast<int32_t>(p * static_cast<size_t>(req_.n)) + s);
      logits.insert(logits.end(), r.logits.begin() + static_cast<int64_t>(p) * c.vocab,
                    r.logits.begin() + static_cast<int64_t>(p + 1) * c.vocab);
    }
  GenerationStep out;
  sample_rows(logits, seqs, out, want_logits);
  out.seqs = std::move(seqs);
  out.counts = {static_cast<int32_t>(out.seqs.size())};
  return out;
}

GenerationStep Generation::step(const std::vector<int32_t>& seqs, const std::vector<int32_t>& tokens, bool want_logits) {
  if (seqs.empty()) throw std::invalid_argument("generate step: no sequences to advance");
  if (seqs.size() != tokens.size()) throw std::invalid_argument("generate step: one token per sequence expected");
  Batch b;
  b.tokens = tokens;
  b.cache = cache_.get();
  std::vector<bool> seen(static_cast<size_t>(sequences()), false);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int32_t s = seqs[i];
    if (s < 0 || s >= sequences()) throw std::invalid_argument("generate step: sequence " + std::to_string(s) + " does not exist");
    if (seen[static_cast<size_t>(s)]) throw std::invalid_argument("generate step: sequence " + std::to_string(s) + " named twice");
    seen[static_cast<size_t>(s)] = true;
    if (length_[static_cast<size_t>(s)] + 1 > capacity_[static_cast<size_t>(s)])
      throw std::invalid_argument("generate step: sequence " + std::to_string(s) + " reached its max new tokens");
    b.seq_len.push_back(1);
    b.slot.push_back(req_.slot[static_cast<size_t>(s / req_.n)]);
    b.past.push_back(length_[static_cast<size_t>(s)]);
    b.cache_start.push_back(start_[static_cast<size_t>(s)]);
    b.logit_rows.push_back(static_cast<int32_t>(i));
  }
  ForwardResult r = model_.forward(b, false);
  for (int32_t s : seqs) ++length_[static_cast<size_t>(s)];
  GenerationStep out;
  sample_rows(r.logits, seqs, out, want_logits);
  out.seqs = seqs;
  out.counts = {static_cast<int32_t>(seqs.size())};
  return out;
}

GenerationStep Generation::steps(const std::vector<int32_t>& seqs, const std::vector<int32_t>& tokens,
                                 int32_t max_steps, const std::vector<int32_t>& eos, bool want_logits) {
  if (max_steps < 1) throw std::invalid_argument("generate steps: steps must be >= 1, got " + std::to_string(max_steps));
  GenerationStep out;
  std::vector<int32_t> active = seqs, fed = tokens;
  for (int32_t j = 0;; ++j) {
    GenerationStep st = step(active, fed, want_logits);
    out.seqs.insert(out.seqs.end(), active.begin(), active.end());
    out.tokens.insert(out.tokens.end(), st.tokens.begin(), st.tokens.end());
    out.logits.insert(out.logits.end(), st.logits.begin(), st.logits.end());
    out.counts.push_back(static_cast<int32_t>(active.size()));
    if (j + 1 >= max_steps) break;
    std::vector<int32_t> next, next_fed;
    for (size_t i = 0; i < active.size(); ++i) {
      const size_t s = static_cast<size_t>(active[i]);
      const int32_t t = st.tokens[i];
      if (std::find(eos.begin(), eos.end(), t) != eos.end()) continue;
      if (steps_[s] >= req_.max_new || length_[s] + 1 > capacity_[s]) continue;
      next.push_back(active[i]);
      next_fed.push_back(t);
    }
    if (next.empty()) break;
    active = std::move(next);
    fed = std::move(next_fed);
  }
  return out;
}

void Generation::rewind(const std::vector<int32_t>& seqs, const std::vector<int32_t>& counts) {
  if (seqs.size() != counts.size()) throw std::invalid_argument("generate rewind: one count per sequence expected");
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int32_t s = seqs[i], n = counts[i];
    if (s < 0 || s >= sequences()) throw std::invalid_argument("generate rewind: sequence " + std::to_string(s) + " does not exist");
    const size_t k = static_cast<size_t>(s);
    const int32_t prompt = req_.prompt_len[k / static_cast<size_t>(req_.n)];
    if (n < 0 || length_[k] - n < prompt || steps_[k] - n < 1)
      throw std::invalid_argument("generate rewind: sequence " + std::to_string(s) + " cannot go back " + std::to_string(n) +
                                  " steps (it has taken " + std::to_string(steps_[k] - 1) + ")");
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    length_[static_cast<size_t>(seqs[i])] -= counts[i];
    steps_[static_cast<size_t>(seqs[i])] -= counts[i];
  }
}

void Generation::sample_rows(const std::vector<float>& logits, const std::vector<int32_t>& seqs, GenerationStep& out,
                             bool want_logits) {
  const int64_t V = model_.config().vocab;
  // Rows are sampled in parallel (each draw depends only on its own row, seed, stream and step), on
  // the CPU pool whatever the backend: the logits are on the host.
  ThreadPool& pool = global_pool();
  if (scratch_.size() < static_cast<size_t>(pool.threads())) scratch_.resize(static_cast<size_t>(pool.threads()));
  out.tokens.assign(seqs.size(), 0);
  const int64_t rows = static_cast<int64_t>(seqs.size());
  // Greedy rows are a plain argmax each: one task takes them all (a dispatch would cost more).
  const int64_t per_task = req_.sampling.temperature > 0 ? 1 : std::max<int64_t>(rows, 1);
  pool.run((rows + per_task - 1) / per_task, [&](int64_t task, int thread) {
    for (int64_t i = task * per_task; i < std::min(rows, (task + 1) * per_task); ++i) {
      const int32_t s = seqs[static_cast<size_t>(i)];
      SamplingParams p = req_.sampling;
      uint64_t stream = static_cast<uint64_t>(s);
      if (!req_.prompt_seed.empty()) {
        p.seed = req_.prompt_seed[static_cast<size_t>(s / req_.n)];
        stream = static_cast<uint64_t>(s % req_.n);
      }
      out.tokens[static_cast<size_t>(i)] = sample_token(logits.data() + i * V, V, p, stream,
                                                        static_cast<uint64_t>(steps_[static_cast<size_t>(s)]++),
                                                        scratch_[static_cast<size_t>(thread)]);
    }
  });
  if (want_logits) out.logits = logits;
}

}  // namespace sealkit
