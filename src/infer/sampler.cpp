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

namespace {

template <typename T>
void ensure(Backend& be, DeviceArray<T>& a, std::size_t n) {
  if (a.size() < n) a = DeviceArray<T>(be, n);
}

}  // namespace

Sampled sample_token(Backend& be, const float* logits, std::int64_t V, const SamplingOptions& o, std::uint64_t stream,
                     std::uint64_t draw, SamplerScratch& sc) {
  // the model's log-probabilities (raw logits): the row's maximum and log Z
  ensure(be, sc.arg, 1), ensure(be, sc.max, 1), ensure(be, sc.log_z, 1);
  be.logit_stats(logits, 1, V, sc.arg.data(), sc.max.data(), sc.log_z.data());
  std::int32_t arg = 0;
  float mx = 0;
  double log_z = 0;
  be.copy_to_host(&arg, sc.arg.data(), sizeof arg);
  be.copy_to_host(&mx, sc.max.data(), sizeof mx);
  be.copy_to_host(&log_z, sc.log_z.data(), sizeof log_z);
  if (o.temperature == 0.0) return {arg, double(mx) - log_z};

  // temperature, then top-k, then top-p over the remaining mass; the candidates come
  // sorted by logit from the backend's top_k, or (plain temperature) the whole row in order
  const std::int64_t k = o.top_k > 0 && o.top_k < V ? o.top_k : (o.top_p < 1.0 ? V : 0);
  std::int64_t keep = k > 0 ? k : V;
  sc.host_values.resize(std::size_t(keep));
  sc.host_ids.resize(std::size_t(keep));
  if (k > 0) {
    ensure(be, sc.values, std::size_t(k)), ensure(be, sc.ids, std::size_t(k));
    be.top_k(logits, V, k, sc.values.data(), sc.ids.data());
    be.copy_to_host(sc.host_values.data(), sc.values.data(), sizeof(float) * std::size_t(k));
    be.copy_to_host(sc.host_ids.data(), sc.ids.data(), sizeof(std::int32_t) * std::size_t(k));
  } else {
    be.copy_to_host(sc.host_values.data(), logits, sizeof(float) * std::size_t(V));
    for (std::int64_t v = 0; v < V; ++v) sc.host_ids[std::size_t(v)] = std::int32_t(v);
  }
  auto& cand = sc.cand;
  cand.resize(std::size_t(keep));
  for (std::int64_t i = 0; i < keep; ++i)
    cand[std::size_t(i)] = {float(sc.host_values[std::size_t(i)] / o.temperature), std::int32_t(i)};  // .second: position
  float top = cand[0].first;  // subtracted before exp, for range
  for (std::int64_t i = 1; i < keep; ++i) top = std::max(top, cand[std::size_t(i)].first);
  auto& p = sc.p;
  p.resize(std::size_t(keep));
  double total = 0;
  for (std::int64_t i = 0; i < keep; ++i) total += (p[std::size_t(i)] = std::exp(double(cand[std::size_t(i)].first) - top));
  if (o.top_p < 1.0) {  // candidates are sorted by logit here (top_k)
    double cum = 0;
    std::int64_t n = 0;
    while (n < keep) {
      cum += p[std::size_t(n)] / total;
      ++n;
      if (cum >= o.top_p) break;
    }
    keep = n;
    total = 0;
    for (std::int64_t i = 0; i < keep; ++i) total += p[std::size_t(i)];
  }
  const double u = uniform_at(o.seed, stream, draw) * total;
  double acc = 0;
  std::size_t chosen = std::size_t(keep - 1);
  for (std::int64_t i = 0; i < keep; ++i) {
    acc += p[std::size_t(i)];
    if (u < acc) {
      chosen = std::size_t(i);
      break;
    }
  }
  return {sc.host_ids[chosen], double(sc.host_values[chosen]) - log_z};
}

}  // namespace palm
