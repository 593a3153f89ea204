#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "base/check.h"

namespace palm {

void validate(const LrSchedule& s) {
  PALM_CHECK(s.kind == "palm" || s.kind == "cosine" || s.kind == "inv-sqrt" || s.kind == "constant",
             "--lr-schedule must be palm, cosine, inv-sqrt or constant, got '", s.kind, "'");
  PALM_CHECK(s.peak > 0 && s.peak < 10, "--lr must be in (0, 10), got ", s.peak);
  PALM_CHECK(s.warmup >= 0, "--warmup-steps must be non-negative");
  PALM_CHECK(s.min_ratio >= 0 && s.min_ratio <= 1, "--min-lr-ratio must be in [0, 1]");
}

double LrSchedule::at(std::int64_t k) const {
  const double step = double(std::max<std::int64_t>(k, 1));
  if (kind == "palm") return std::min(peak, 1.0 / std::sqrt(step));  // 1e-2 for 10k steps, then 1/sqrt(k)
  const double warm = warmup > 0 && step <= double(warmup) ? step / double(warmup) : 1.0;
  if (kind == "constant") return peak * warm;
  if (kind == "inv-sqrt") return step <= double(warmup) ? peak * warm : peak * std::sqrt(double(std::max<std::int64_t>(warmup, 1)) / step);
  // cosine from the end of warmup to `total`, then flat at min_ratio
  if (step <= double(warmup)) return peak * warm;
  const double span = double(std::max<std::int64_t>(total - warmup, 1));
  const double t = std::min(1.0, (step - double(warmup)) / span);
  return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(M_PI * t)));
}

BatchRamp BatchRamp::parse(const std::string& spec, std::int64_t default_batch) {
  BatchRamp r;
  if (spec.empty()) {
    r.points = {{0, default_batch}};
    return r;
  }
  std::size_t pos = 0;
  while (pos <= spec.size()) {
    const std::size_t comma = spec.find(',', pos);
    const std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const std::size_t colon = item.find(':');
    PALM_CHECK(colon != std::string::npos, "--batch-ramp: '", item, "' is not BATCH:FROM_STEP");
    std::int64_t b = 0, s = 0;
    try {
      std::size_t u1 = 0, u2 = 0;
      b = std::stoll(item.substr(0, colon), &u1);
      s = std::stoll(item.substr(colon + 1), &u2);
      PALM_CHECK(u1 == colon && u2 == item.size() - colon - 1, "--batch-ramp: '", item, "' is not BATCH:FROM_STEP");
    } catch (const std::logic_error&) {
      fail(str_cat("--batch-ramp: '", item, "' is not BATCH:FROM_STEP"));
    }
    PALM_CHECK(b > 0 && s >= 0, "--batch-ramp: '", item, "': batch must be positive and step non-negative");
    r.points.emplace_back(s, b);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  std::sort(r.points.begin(), r.points.end());
  PALM_CHECK(r.points.front().first == 0, "--batch-ramp must start at step 0 (e.g. 8:0,16:1000)");
  for (std::size_t i = 1; i < r.points.size(); ++i)
    PALM_CHECK(r.points[i].first != r.points[i - 1].first, "--batch-ramp: step ", r.points[i].first, " appears twice");
  return r;
}

std::int64_t BatchRamp::batch_at(std::int64_t step) const {
  std::int64_t b = points.front().second;
  for (const auto& [from, batch] : points)
    if (step >= from) b = batch;
  return b;
}

std::int64_t BatchRamp::samples_before(std::int64_t step) const {
  std::int64_t total = 0;
  for (std::size_t i = 0; i < points.size(); ++i) {
    const std::int64_t lo = std::max<std::int64_t>(points[i].first, 1);
    const std::int64_t hi = i + 1 < points.size() ? std::min(points[i + 1].first, step) : step;
    if (hi > lo) total += (hi - lo) * points[i].second;
  }
  return total;
}

std::string BatchRamp::to_string() const {
  std::string s;
  for (const auto& [from, batch] : points) s += (s.empty() ? "" : ",") + std::to_string(batch) + ":" + std::to_string(from);
  return s;
}

}  // namespace palm
