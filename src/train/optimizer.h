// PaLM's optimizer (Adafactor without factorization, docs/training.md) and AdamW.
// State lives in arenas with the parameters' layout; every per-tensor RMS and the global
// gradient norm are summed over fixed chunks in a fixed order, so a step is bitwise the
// same whatever the thread count.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/arena.h"
#include "model/params.h"

namespace palm {

struct OptimizerConfig {
  std::string kind = "adafactor";  // adafactor | adamw
  double clip_norm = 1.0;          // global gradient norm clip (<= 0: off)
  // adafactor
  double decay_exponent = 0.8;     // b2 = 1 - k^(-0.8)
  double momentum = 0.9;
  double update_clip = 1.0;        // U / max(1, RMS(U) / d)
  double param_scale_floor = 1e-3; // a = lr * max(1e-3, RMS(X))
  bool weight_decay_lr2 = true;    // X -= lr^2 X (PaLM's dynamic weight decay)
  // adamw
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class Optimizer {
 public:
  Optimizer(const ModelConfig& c, const OptimizerConfig& o);
  // One update at step k (k >= 1) with learning rate lr; g may be modified (clipping).
  // Returns the global gradient norm before clipping.
  double step(Weights& w, Weights& g, std::int64_t k, double lr);
  struct StateTensor {
    std::string name;  // "adafactor.v.<param>", ...
    std::vector<std::int64_t> shape;
    float* data;
  };
  std::vector<StateTensor> state_tensors();
  const OptimizerConfig& config() const { return cfg_; }

 private:
  double sum_squares(const float* x, std::int64_t n);
  ModelConfig model_;
  OptimizerConfig cfg_;
  FloatArena first_, second_;     // adafactor: M, V; adamw: m, v
  std::vector<double> partials_;  // per-chunk sums
};

}  // namespace palm
