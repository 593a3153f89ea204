// Learning-rate and batch-size schedules (docs/training.md). Steps count from 1.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace palm {

struct LrSchedule {
  std::string kind = "palm";  // palm | cosine | inv-sqrt | constant
  double peak = 1e-2;         // palm: the 1e-2 plateau; others: the peak after warmup
  std::int64_t warmup = 0;    // linear warmup steps (cosine, inv-sqrt, constant)
  std::int64_t total = 0;     // cosine: decay horizon
  double min_ratio = 0.1;     // cosine: final lr / peak
  double at(std::int64_t step) const;
};
void validate(const LrSchedule& s);

// PaLM's batch-size ramp, "512:0,1024:50000,2048:115000": global batch B from step S on.
struct BatchRamp {
  std::vector<std::pair<std::int64_t, std::int64_t>> points;  // (from_step, batch), sorted
  static BatchRamp parse(const std::string& spec, std::int64_t default_batch);
  std::int64_t batch_at(std::int64_t step) const;
  // Samples drawn by steps 1..step-1: the global index of step's first sample.
  std::int64_t samples_before(std::int64_t step) const;
  std::string to_string() const;
};

}  // namespace palm
