#include "serve/metrics.h"

#include <cstdio>

namespace palm {

void Histogram::observe(double s) {
  for (std::size_t i = 0; i < kBounds.size(); ++i)
    if (s <= kBounds[i]) ++buckets_[i];
  ++count_;
  sum_ += s;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::string out = "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  char b[160];
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    std::snprintf(b, sizeof b, "%s_bucket{le=\"%g\"} %llu\n", name.c_str(), kBounds[i], (unsigned long long)buckets_[i]);
    out += b;
  }
  std::snprintf(b, sizeof b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name.c_str(),
                (unsigned long long)count_, name.c_str(), sum_, name.c_str(), (unsigned long long)count_);
  return out + b;
}

void ServeMetrics::request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> l(mu_);
  ++requests_[{endpoint, status}];
}
void ServeMetrics::tokens(std::int64_t prompt, std::int64_t generated) {
  std::lock_guard<std::mutex> l(mu_);
  prompt_tokens_ += std::uint64_t(prompt);
  generated_tokens_ += std::uint64_t(generated);
}
void ServeMetrics::time_to_first_token(double s) {
  std::lock_guard<std::mutex> l(mu_);
  ttft_.observe(s);
}
void ServeMetrics::inter_token(double s) {
  std::lock_guard<std::mutex> l(mu_);
  itl_.observe(s);
}

std::string ServeMetrics::render(std::int64_t queued, std::int64_t active, std::int64_t max_batch) const {
  std::lock_guard<std::mutex> l(mu_);
  std::string out = "# HELP palm_requests_total HTTP requests by endpoint and status.\n# TYPE palm_requests_total counter\n";
  for (const auto& [k, v] : requests_)
    out += "palm_requests_total{endpoint=\"" + k.first + "\",status=\"" + std::to_string(k.second) + "\"} " +
           std::to_string(v) + "\n";
  out += "# HELP palm_prompt_tokens_total Prompt tokens of accepted requests.\n# TYPE palm_prompt_tokens_total counter\n";
  out += "palm_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  out += "# HELP palm_generated_tokens_total Tokens generated.\n# TYPE palm_generated_tokens_total counter\n";
  out += "palm_generated_tokens_total " + std::to_string(generated_tokens_) + "\n";
  out += "# HELP palm_queue_depth Requests waiting for a batch slot.\n# TYPE palm_queue_depth gauge\n";
  out += "palm_queue_depth " + std::to_string(queued) + "\n";
  out += "# HELP palm_active_sequences Sequences in the running decode batch.\n# TYPE palm_active_sequences gauge\n";
  out += "palm_active_sequences " + std::to_string(active) + "\n";
  out += "# HELP palm_max_batch Batch slots.\n# TYPE palm_max_batch gauge\npalm_max_batch " + std::to_string(max_batch) + "\n";
  out += ttft_.render("palm_time_to_first_token_seconds", "Time from request receipt to its first generated token.");
  out += itl_.render("palm_inter_token_latency_seconds", "Time between consecutive tokens of one completion.");
  return out;
}

}  // namespace palm
