// How palm bench generate relates a measured rate to the machine's own reference rate
// sampled beside it (the read probe for decode, an sgemm for prefill). Header-only so that
// tests/test_paired_rate.cpp can check it on closed forms.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <utility>
#include <vector>

#include "base/check.h"

namespace palm {

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// A rate against the machine's own reference rate sampled beside it, in each round. This
// machine's bandwidth moves by tens of percent within a second (two probes 50 ms apart read
// 14 and 26 GB/s on the Ice Lake VM of sessions 13-17); comparing each path's best round
// with the probe's best round mixed the regimes (a kernel at 115% of its "floor"), and
// probes only before and after a run (the run's prompt, ~1 s, between the first probe and
// the decode steps) still met other moments than the steps did. So the reference is
// sampled beside every timed unit (Beside) and each round gets a fraction, the median of
// the rounds reported. Decode: each step's rate over the faster of the probes just before and
// just after it, the median over the round's steps (Beside::fraction). The round's total
// rate over the probes' total had the same centre, but one slow moment moved a whole round:
// per-round spread 5-13 points where the per-step median's was 1.3-2.2, and the default
// path and stored fp32, the same kernel on the same weights, 7.5 points apart (sd) against
// 2.2 (docs/PERFORMANCE.md, session 17). Prefill keeps the round's total rate over the
// sgemm samples' total rate (Beside::rate).
struct PairedRate {
  double best = 0;                 // best rate over the rounds
  std::vector<double> rates;       // per round
  std::vector<double> fractions;   // per round: rate / the reference beside it (as above)
  void add(double rate, double fraction) {
    best = std::max(best, rate);
    rates.push_back(rate);
    fractions.push_back(fraction);
  }
  double median_fraction() const { return median(fractions); }
};

// A reference sampled before each timed unit of a run (for fraction(), once more after the
// last), its variants taken in turn (the read probe's 1 and 8 streams per thread). rate():
// the faster variant's work over its seconds, all samples together; fraction(): each unit's
// rate over the faster of its two neighbouring samples (one of each variant: the stricter
// reference), the median over the units.
struct Beside {
  std::function<std::pair<double, double>(int variant)> sample;  // {work, seconds}
  int variants = 1;  // 1 or 2
  double work[2] = {}, seconds[2] = {};
  std::vector<double> rates = {};  // each sample's, in order
  void take() {
    const int v = int(rates.size() % std::size_t(variants));
    const auto [w, t] = sample(v);
    work[v] += w;
    seconds[v] += t;
    rates.push_back(w / t);
  }
  double rate() const {
    double r = 0;
    for (int v = 0; v < 2; ++v)
      if (seconds[v] > 0) r = std::max(r, work[v] / seconds[v]);
    return r;
  }
  double fraction(const std::vector<double>& unit_rates) const {
    PALM_CHECK(!unit_rates.empty() && rates.size() == unit_rates.size() + 1, "bench: ", unit_rates.size(),
               " timed units need ", unit_rates.size() + 1, " samples beside them, not ", rates.size());
    std::vector<double> f;
    for (std::size_t i = 0; i < unit_rates.size(); ++i) f.push_back(unit_rates[i] / std::max(rates[i], rates[i + 1]));
    return median(f);
  }
};

// Batch 16 against batch 1 (their steps taken in turn) per round, the median reported.
inline double median_ratio(const std::vector<double>& batch16, const PairedRate& batch1) {
  std::vector<double> r;
  for (std::size_t i = 0; i < batch16.size() && i < batch1.rates.size(); ++i) r.push_back(batch16[i] / batch1.rates[i]);
  return median(r);
}

}  // namespace palm
