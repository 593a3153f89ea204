#include "infer/sampler.h"

#include <algorithm>
#include <cmath>

#include "base/check.h"
#include "base/rng.h"

namespace palm {

void validate(const SamplingOptions& o) {
  PALM_CHECK(o.temperature >= 0 && o.temperature <= 100, "temperature must be in [0, 100], got ", o.temperature);
  PALM_CHECK(o.top_k >= 0, "top-k must be non-negative, got ", o.top_k);
  PALM_CHECK(o.top_p > 0 && o.top_p <= 1, "top-p must be in (0, 1], got ", o.top_p);
}

Sampled sample_token(const float* logits, std::int64_t V, const SamplingOptions& o, std::uint64_t stream,
                     std::uint64_t draw, std::vector<std::pair<float, std::int32_t>>& cand) {
  // the model's log-probabilities (raw logits)
  float mx = logits[0];
  std::int32_t arg = 0;
  for (std::int64_t v = 1; v < V; ++v)
    if (logits[v] > mx) mx = logits[v], arg = std::int32_t(v);
  double z = 0;
  for (std::int64_t v = 0; v < V; ++v) z += std::exp(double(logits[v]) - mx);
  const double log_z = mx + std::log(z);
  if (o.temperature == 0.0) return {arg, double(logits[arg]) - log_z};

  // temperature, then top-k, then top-p over the remaining mass
  cand.resize(std::size_t(V));
  for (std::int64_t v = 0; v < V; ++v) cand[v] = {float(logits[v] / o.temperature), std::int32_t(v)};
  std::int64_t keep = V;
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  if (o.top_k > 0 && o.top_k < V) {
    std::partial_sort(cand.begin(), cand.begin() + o.top_k, cand.end(), by_logit);
    keep = o.top_k;
  } else if (o.top_p < 1.0) {
    std::sort(cand.begin(), cand.end(), by_logit);
  }
  float top = cand[0].first;  // subtracted before exp, for range
  for (std::int64_t i = 1; i < keep; ++i) top = std::max(top, cand[i].first);
  std::vector<double> p(static_cast<std::size_t>(keep));
  double total = 0;
  for (std::int64_t i = 0; i < keep; ++i) total += (p[i] = std::exp(double(cand[i].first) - top));
  if (o.top_p < 1.0) {  // candidates are sorted by logit here (partial_sort or sort)
    double cum = 0;
    std::int64_t n = 0;
    while (n < keep) {
      cum += p[n] / total;
      ++n;
      if (cum >= o.top_p) break;
    }
    keep = n;
    total = 0;
    for (std::int64_t i = 0; i < keep; ++i) total += p[i];
  }
  const double u = uniform_at(o.seed, stream, draw) * total;
  double acc = 0;
  std::int32_t chosen = cand[keep - 1].second;
  for (std::int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) {
      chosen = cand[i].second;
      break;
    }
  }
  return {chosen, double(logits[chosen]) - log_z};
}

}  // namespace palm
