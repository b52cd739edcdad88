#include "job_threading.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace sealkit {

const char* job_kind_name(JobKind kind) {
  switch (kind) {
    case JobKind::Forward: return "forward";
    case JobKind::Backward: return "backward";
    case JobKind::TrainStep: return "trainStep";
    case JobKind::Decode: return "decode";
    case JobKind::Prefill: return "prefill";
  }
  return "?";
}

JobThreading::Mode JobThreading::mode_from_env() {
  const char* v = std::getenv("SEALKIT_JOB_THREADING");
  if (v && std::strcmp(v, "pooled") == 0) return Mode::Pooled;
  if (v && std::strcmp(v, "inline") == 0) return Mode::Inline;
  return Mode::Adaptive;
}

void JobThreading::Window::add(double v) {
  ms_per_token[static_cast<size_t>(next)] = v;
  next = (next + 1) % kWindow;
  count = std::min(count + 1, kWindow);
}

double JobThreading::Window::lower_quartile() const {
  const size_t n = static_cast<size_t>(std::clamp(count, 0, kWindow));
  if (n == 0) return 0;
  std::array<double, kWindow> v = ms_per_token;
  std::sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n));
  return v[(n - 1) / 4];  // 3 times: the fastest; 9: the third fastest
}

int JobThreading::bucket_of(int64_t tokens) {
  int b = 0;
  while (b < 62 && (int64_t{1} << b) < tokens) ++b;
  return b;
}

JobThreading::Entry& JobThreading::entry(JobKind kind, int64_t tokens) {
  return entries_[{static_cast<int>(kind), bucket_of(tokens)}];
}

bool JobThreading::eligible(const Entry& e, int64_t tokens) const {
  return e.pooled.lower_quartile() * static_cast<double>(std::max<int64_t>(tokens, 1)) < kMaxInlineMillis;
}

bool JobThreading::decide(JobKind kind, int64_t tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Entry& e = entry(kind, tokens);
  // The first job of a kind and size (allocations, weights packed on first use) and then a few
  // more run on the pool; only a job that is small there is ever tried inline.
  if (e.jobs == 0 || e.pooled.count < kMinSamples || !eligible(e, tokens)) return false;
  if (e.inlined.count < kMinSamples) return true;
  const bool probe = e.jobs >= e.next_probe;
  return probe != e.inline_now;
}

void JobThreading::record(JobKind kind, int64_t tokens, bool ran_inline, double millis) {
  std::lock_guard<std::mutex> lock(mutex_);
  Entry& e = entry(kind, tokens);
  const int64_t job = e.jobs++;
  if (ran_inline) ++e.inline_jobs;
  if (job == 0) return;  // the warm-up job's time says nothing about either way
  const double per_token = millis / static_cast<double>(std::max<int64_t>(tokens, 1));
  const double chosen_before = (e.inline_now ? e.inlined : e.pooled).lower_quartile();
  (ran_inline ? e.inlined : e.pooled).add(per_token);
  if (e.pooled.count < kMinSamples || e.inlined.count < kMinSamples) return;  // still trying both
  const double chosen = (e.inline_now ? e.inlined : e.pooled).lower_quartile();
  const double other = (e.inline_now ? e.pooled : e.inlined).lower_quartile();
  if (other < chosen * (1 - kMargin)) {  // switch, and try the way left behind again soon
    e.inline_now = !e.inline_now;
    e.probe_every = kMinProbe;
    e.next_probe = e.jobs + kMinProbe;
    return;
  }
  if (ran_inline == e.inline_now) return;
  // This job tried the other way. Faster than the chosen way's quartile: try it again at once (its
  // older times may be from another placement of the threads); else wait twice as long as before.
  if (per_token < chosen_before) {
    e.next_probe = e.jobs;
  } else {
    e.probe_every = std::min(e.probe_every * 2, kMaxProbe);
    e.next_probe = e.jobs + e.probe_every;
  }
}

std::vector<JobThreading::Report> JobThreading::report() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Report> out;
  for (const auto& [key, e] : entries_) {
    Report r;
    r.kind = static_cast<JobKind>(key.first);
    r.tokens_up_to = int64_t{1} << key.second;
    r.jobs = e.jobs;
    r.inline_jobs = e.inline_jobs;
    r.pooled_us_per_token = e.pooled.lower_quartile() * 1000;
    r.inline_us_per_token = e.inlined.lower_quartile() * 1000;
    r.inline_now = e.inline_now;
    out.push_back(r);
  }
  return out;
}

}  // namespace sealkit
