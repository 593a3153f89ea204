#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "base/check.h"

namespace palm {

namespace {
std::int64_t owned_floats(const ModelConfig& c, const std::vector<bool>& owned, std::vector<std::int64_t>& offsets) {
  std::int64_t total = 0;
  std::size_t i = 0;
  for_each_param(c, [&](const ParamInfo& p) {
    const bool mine = owned.empty() || owned[i];
    offsets.push_back(mine ? total : -1);
    if (mine) total += p.numel;
    ++i;
  });
  PALM_CHECK(owned.empty() || owned.size() == i, "ownership given for ", owned.size(), " tensors, the model has ", i);
  return total;
}
}  // namespace

Optimizer::Optimizer(Backend& be, const ModelConfig& c, const OptimizerConfig& o, std::vector<bool> owned)
    : be_(be),
      model_(c),
      cfg_(o),
      first_(be, std::size_t(owned_floats(c, owned, state_offset_))),
      second_(be, first_.size()) {
  PALM_CHECK(o.kind == "adafactor" || o.kind == "adamw", "--optimizer must be adafactor or adamw, got '", o.kind, "'");
}

double Optimizer::step(Weights& w, Weights& g, std::int64_t k, double lr) {
  PALM_CHECK(k >= 1, "optimizer steps count from 1");
  const std::int64_t total = param_count(model_);
  double norm = 0;
  if (tp_group_ || norm_group_) {
    // tensor-parallel shards' squares summed over the tensor group, replicated tensors
    // counted once; under full sharding each gradient is on its owner only
    double sq[2] = {0, 0};
    std::size_t i = 0;
    for_each_param(model_, [&](const ParamInfo& p) {
      const bool split = tp_group_ && tp_sharded_[i];
      // fully sharded: another owner's gradient is not here (and reading it would bring
      // its pages back into memory)
      const bool elsewhere = norm_group_ && state_offset_[i] < 0;
      ++i;
      if (!elsewhere) sq[split ? 0 : 1] += be_.sum_squares(g.arena.data() + p.offset, p.numel);
    });
    if (norm_group_) norm_group_->all_reduce_sum(sq, 2);
    if (tp_group_) tp_group_->all_reduce_sum(sq, 1);
    norm = std::sqrt(sq[0] + sq[1]);
  } else {
    norm = std::sqrt(be_.sum_squares(g.arena.data(), total));
  }
  PALM_CHECK(std::isfinite(norm), "the gradient norm is not finite");
  if (cfg_.clip_norm > 0 && norm > cfg_.clip_norm) {
    const float scale = float(cfg_.clip_norm / norm);
    std::size_t index = 0;
    for_each_param(model_, [&](const ParamInfo& p) {
      if (state_offset_[index++] < 0) return;  // another rank updates it (and holds its gradient)
      be_.scale(g.arena.data() + p.offset, scale, p.numel);
    });
  }
  if (cfg_.kind == "adamw") {
    const double b1 = cfg_.beta1, b2 = cfg_.beta2;
    const double c1 = 1 - std::pow(b1, double(k)), c2 = 1 - std::pow(b2, double(k));
    std::size_t index = 0;
    for_each_param(model_, [&](const ParamInfo& p) {
      const std::int64_t so = state_offset_[index++];
      if (so < 0) return;  // another rank's tensor
      const bool decay = p.shape.size() == 2;  // no decay on LayerNorm scales
      float *x = w.arena.data() + p.offset, *gd = g.arena.data() + p.offset, *m = first_.data() + so,
            *v = second_.data() + so;
      be_.adamw_update(x, gd, m, v, p.numel, lr, b1, b2, c1, c2, cfg_.eps, decay ? cfg_.weight_decay : 0.0);
    });
    return norm;
  }
  // Adafactor without factorization (PaLM), per parameter tensor:
  //   b2 = 1 - k^-0.8;  V = b2 V + (1 - b2)(G^2 + 1e-30);  U = G / sqrt(V)
  //   U /= max(1, RMS(U));  a = lr max(1e-3, RMS(X));  M = 0.9 M + 0.1 a U;  X -= M + lr^2 X
  const double b2 = 1.0 - std::pow(double(k), -cfg_.decay_exponent);
  float *x = w.arena.data(), *gd = g.arena.data();
  std::size_t index = 0;
  for_each_param(model_, [&](const ParamInfo& p) {
    const std::int64_t so = state_offset_[index++];
    if (so < 0) return;  // another rank's tensor
    float* xs = x + p.offset;
    float* gs = gd + p.offset;
    float* ms = first_.data() + so;
    float* vs = second_.data() + so;
    const std::int64_t n = p.numel;
    be_.adafactor_precondition(gs, vs, n, b2);  // U, in the gradient's place
    double sums[2] = {be_.sum_squares(gs, n), be_.sum_squares(xs, n)};
    double count = double(n);
    if (tp_group_ && tp_sharded_[index - 1]) {  // RMS over the whole tensor, not this shard
      tp_group_->all_reduce_sum(sums, 2);
      count *= tp_group_->size();
    }
    const double rms_u = std::sqrt(sums[0] / count);
    const double rms_x = std::sqrt(sums[1] / count);
    const double u_scale = 1.0 / std::max(1.0, rms_u / cfg_.update_clip);
    const double a = lr * std::max(cfg_.param_scale_floor, rms_x);
    const double mom = cfg_.momentum;
    const double decay = cfg_.weight_decay_lr2 ? lr * lr : 0.0;
    be_.adafactor_apply(xs, ms, gs, n, mom, (1 - mom) * a * u_scale, decay);
  });
  return norm;
}

std::vector<Optimizer::StateTensor> Optimizer::state_tensors() {
  std::vector<StateTensor> out;
  const std::string a = cfg_.kind == "adamw" ? "adamw.m." : "adafactor.m.";
  const std::string b = cfg_.kind == "adamw" ? "adamw.v." : "adafactor.v.";
  std::size_t index = 0;
  for_each_param(model_, [&](const ParamInfo& p) {
    const std::int64_t so = state_offset_[index++];
    if (so < 0) return;
    out.push_back({a + p.name, p.shape, first_.data() + so});
    out.push_back({b + p.name, p.shape, second_.data() + so});
  });
  return out;
}

}  // namespace palm
