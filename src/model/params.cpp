#include "model/params.h"

#include <cmath>
#include <map>
#include <memory>
#include <mutex>

#include "base/check.h"
#include "base/rng.h"

namespace palm {

namespace {

std::vector<ParamInfo> build_list(const ModelConfig& c) {
  const std::int64_t V = c.vocab_size, D = c.d_model, H = c.n_heads, K = c.head_dim,
                     F = c.d_ff;
  std::vector<ParamInfo> list;
  std::int64_t offset = 0;
  auto add = [&](std::string name, std::vector<std::int64_t> shape, ParamInit init, ParamRole role, std::int64_t layer,
                 TpSplit split) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    list.push_back({std::move(name), std::move(shape), offset, n, init, role, layer, split});
    offset += n;
  };
  using enum TpSplit;
  using R = ParamRole;
  add("embed", {V, D}, ParamInit::kUnitNormal, R::kEmbedding, -1, kRows);
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    // a block's tensors one after another: layer_range() is one contiguous range
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "norm", {D}, ParamInit::kOnes, R::kNorm, l, kNone);
    add(p + "attn.q", {H * K, D}, ParamInit::kFanIn, R::kAttnQ, l, kRows);
    add(p + "attn.k", {K, D}, ParamInit::kFanIn, R::kAttnK, l, kNone);
    add(p + "attn.v", {K, D}, ParamInit::kFanIn, R::kAttnV, l, kNone);
    add(p + "mlp.gate", {F, D}, ParamInit::kFanIn, R::kMlpGate, l, kRows);
    add(p + "mlp.up", {F, D}, ParamInit::kFanIn, R::kMlpUp, l, kRows);
    add(p + "attn.o", {D, H * K}, ParamInit::kFanIn, R::kAttnO, l, kCols);
    add(p + "mlp.down", {D, F}, ParamInit::kFanIn, R::kMlpDown, l, kCols);
  }
  add("final_norm", {D}, ParamInit::kOnes, R::kFinalNorm, -1, kNone);
  return list;
}

}  // namespace

const std::vector<ParamInfo>& param_list(const ModelConfig& c) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<std::vector<ParamInfo>>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[config_to_json(c)];
  if (!slot) slot = std::make_unique<std::vector<ParamInfo>>(build_list(c));
  return *slot;
}

ParamRange layer_range(const ModelConfig& c, std::int64_t layer) {
  ParamRange r{-1, 0};
  for (const ParamInfo& p : param_list(c)) {
    if (p.layer != layer) continue;
    if (r.offset < 0) r.offset = p.offset;
    PALM_ASSERT(p.offset == r.offset + r.count);  // contiguous
    r.count += p.numel;
  }
  PALM_CHECK(r.offset >= 0, "no block ", layer, " in a model of ", c.n_layers, " blocks");
  return r;
}

std::int64_t param_count(const ModelConfig& c) {
  const auto& list = param_list(c);
  return list.back().offset + list.back().numel;
}

ModelView make_view(const ModelConfig& c, float* base) {
  const std::int64_t D = c.d_model, H = c.n_heads, K = c.head_dim, F = c.d_ff;
  ModelView v;
  v.embed = base;
  float* p = base + c.vocab_size * D;
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    LayerView lv;
    lv.norm = p;
    p += D;
    lv.w_in = p;
    p += c.fused_in_dim() * D;
    lv.w_o = p;
    p += D * H * K;
    lv.w_down = p;
    p += D * F;
    v.layers.push_back(lv);
  }
  v.final_norm = p;
  PALM_ASSERT(p + D - base == param_count(c));
  return v;
}

Weights::Weights(Backend& be, const ModelConfig& c)
    : config(c), arena(be, static_cast<std::size_t>(param_count(c))), view(make_view(c, arena.data())) {}

void init_weights(Backend& be, Weights& w, std::uint64_t seed, const std::vector<bool>* only) {
  std::size_t index = 0;
  for_each_param(w.config, [&](const ParamInfo& p) {
    if (only && !(*only)[index++]) return;
    const double stddev = p.init == ParamInit::kOnes    ? 0.0  // fill_normal's constant, 1
                          : p.init == ParamInit::kFanIn ? 1.0 / std::sqrt(double(p.shape.back()))
                                                        : 1.0;
    const std::int64_t cols = p.shape.size() == 2 ? p.shape[1] : p.numel;
    be.fill_normal(w.arena.data() + p.offset, p.numel / cols, cols, seed, hash_string(p.name), stddev, cols, 0, 0, 1.0f);
  });
}

}  // namespace palm
