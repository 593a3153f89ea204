// PaLM's optimizer (Adafactor without factorization, docs/training.md) and AdamW.
// State lives in arenas with the parameters' layout; every per-tensor RMS and the global
// gradient norm are summed over fixed chunks in a fixed order, so a step is bitwise the
// same whatever the thread count.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "kernels/backend.h"
#include "kernels/device_buffer.h"
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
  // owned[i]: this process keeps the state of parameter tensor i (for_each_param order)
  // and updates it; empty: all of them. Sharded data parallelism gives each rank a share.
  // The updates and norms run on `be` (one fused op per tensor).
  Optimizer(Backend& be, const ModelConfig& c, const OptimizerConfig& o, std::vector<bool> owned = {});
  // One update at step k (k >= 1) with learning rate lr of the owned tensors; g may be
  // modified (clipping). The norm is over all of g. Returns the global gradient norm
  // before clipping.
  double step(Weights& w, Weights& g, std::int64_t k, double lr);
  std::int64_t state_bytes() const { return std::int64_t(first_.size() + second_.size()) * std::int64_t(sizeof(float)); }
  struct StateTensor {
    std::string name;  // "adafactor.v.<param>", ...
    std::vector<std::int64_t> shape;
    float* data;
  };
  std::vector<StateTensor> state_tensors();  // the owned tensors' state
  // Tensor parallelism: tensors split over `group` (sharded[i]) get their RMS terms and
  // their share of the gradient norm summed over it, so the update is the unsplit one.
  // Fully sharded data parallelism: each gradient is held by its owner only, so the global
  // norm's sums are also summed over `group`.
  void set_norm_group(Comm* group) { norm_group_ = group; }
  void set_tensor_parallel(Comm* group, std::vector<bool> sharded) {
    tp_group_ = group;
    tp_sharded_ = std::move(sharded);
  }
  bool owns(std::size_t param_index) const { return state_offset_[param_index] >= 0; }
  const OptimizerConfig& config() const { return cfg_; }

 private:
  Backend& be_;
  ModelConfig model_;
  OptimizerConfig cfg_;
  std::vector<std::int64_t> state_offset_;  // per tensor: its offset in the state arenas, -1 if not owned
  DeviceFloats first_, second_;  // adafactor: M, V; adamw: m, v (owned tensors only), in the backend's memory
  Comm* tp_group_ = nullptr;
  Comm* norm_group_ = nullptr;
  std::vector<bool> tp_sharded_;
};

}  // namespace palm
