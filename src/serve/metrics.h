// Prometheus text exposition for `palm serve` (/metrics): request counters by endpoint
// and status, token counters, queue and batch gauges, and histograms of time to first
// token and inter-token latency.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace palm {

class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                      0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};
  void observe(double seconds);
  std::string render(const std::string& name, const std::string& help) const;

 private:
  std::array<std::uint64_t, kBounds.size()> buckets_{};
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

class ServeMetrics {
 public:
  void request(const std::string& endpoint, int status);
  void tokens(std::int64_t prompt, std::int64_t generated);
  void time_to_first_token(double s);
  void inter_token(double s);
  // queue depth and active sequences are read at scrape time
  std::string render(std::int64_t queued, std::int64_t active, std::int64_t max_batch) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;
  std::uint64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_, itl_;
};

}  // namespace palm
