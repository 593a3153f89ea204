#include "model/tensor_parallel.h"

#include "kernels/device_buffer.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "base/rng.h"

namespace palm {

ModelConfig tp_local_config(const ModelConfig& g, int T) {
  PALM_CHECK(T >= 1, "--tp must be >= 1");
  PALM_CHECK(g.n_heads % T == 0, "--tp ", T, " does not divide n_heads ", g.n_heads);
  PALM_CHECK(g.d_ff % T == 0, "--tp ", T, " does not divide d_ff ", g.d_ff);
  PALM_CHECK(g.vocab_size % T == 0, "--tp ", T, " does not divide the vocabulary size ", g.vocab_size);
  ModelConfig c = g;
  c.n_heads = g.n_heads / T;
  c.d_ff = g.d_ff / T;
  c.vocab_size = g.vocab_size / T;
  return c;
}

TpSlice tp_slice(const ParamInfo& global, int rank, int T) {
  if (global.tp_split == TpSplit::kNone) return {SliceKind::kAll, 0, 0};  // whole on every rank
  const bool rows = global.tp_split == TpSplit::kRows;
  const std::int64_t count = global.shape[rows ? 0 : 1] / T;
  return {rows ? SliceKind::kRows : SliceKind::kCols, rank * count, count};
}

TpSlice tp_slice(const std::string& name, const ModelConfig& g, int rank, int T) {
  for (const ParamInfo& p : param_list(g))  // the parameter, or optimizer state named "<kind>.<parameter>"
    if (name == p.name || (name.size() > p.name.size() && name[name.size() - p.name.size() - 1] == '.' &&
                           name.compare(name.size() - p.name.size(), p.name.size(), p.name) == 0))
      return tp_slice(p, rank, T);
  fail(str_cat("tensor parallelism: no parameter named '", name, "'"));
}

void tp_extract(const float* global, const std::vector<std::int64_t>& shape, const TpSlice& s, float* local) {
  std::int64_t numel = 1;
  for (auto d : shape) numel *= d;
  if (s.kind == SliceKind::kAll) {
    std::memcpy(local, global, sizeof(float) * numel);
  } else if (s.kind == SliceKind::kRows) {
    const std::int64_t cols = shape[1];
    std::memcpy(local, global + s.begin * cols, sizeof(float) * s.count * cols);
  } else {
    const std::int64_t rows = shape[0], cols = shape[1];
    for (std::int64_t r = 0; r < rows; ++r) std::memcpy(local + r * s.count, global + r * cols + s.begin, sizeof(float) * s.count);
  }
}

void tp_insert(const float* local, const std::vector<std::int64_t>& shape, const TpSlice& s, float* global) {
  std::int64_t numel = 1;
  for (auto d : shape) numel *= d;
  if (s.kind == SliceKind::kAll) {
    std::memcpy(global, local, sizeof(float) * numel);
  } else if (s.kind == SliceKind::kRows) {
    const std::int64_t cols = shape[1];
    std::memcpy(global + s.begin * cols, local, sizeof(float) * s.count * cols);
  } else {
    const std::int64_t rows = shape[0], cols = shape[1];
    for (std::int64_t r = 0; r < rows; ++r) std::memcpy(global + r * cols + s.begin, local + r * s.count, sizeof(float) * s.count);
  }
}

void init_weights_tp(Backend& be, Weights& local, const ModelConfig& global, int rank, int T, std::uint64_t seed,
                     const std::vector<bool>* only) {
  const auto& glist = param_list(global);
  std::size_t i = 0;
  for_each_param(local.config, [&](const ParamInfo& p) {
    const ParamInfo& gp = glist[i];
    if (only && !(*only)[i++]) return;
    if (!only) ++i;
    PALM_ASSERT(gp.name == p.name);
    const TpSlice s = tp_slice(gp, rank, T);
    const double stddev = p.init == ParamInit::kOnes    ? 0.0  // fill_normal's constant, 1
                          : p.init == ParamInit::kFanIn ? 1.0 / std::sqrt(double(gp.shape.back()))
                                                        : 1.0;
    const std::int64_t cols = p.shape.size() == 2 ? p.shape[1] : p.numel, gcols = gp.shape.size() == 2 ? gp.shape[1] : gp.numel;
    // this shard's elements carry the counters of init_weights' draw for the whole tensor
    be.fill_normal(local.arena.data() + p.offset, p.numel / cols, cols, seed, hash_string(p.name), stddev, gcols,
                   s.kind == SliceKind::kRows ? s.begin : 0, s.kind == SliceKind::kCols ? s.begin : 0, 1.0f);
  });
}

void xent_vocab_parallel(Backend& be, const TensorParallel& tp, float* logits, const std::int32_t* targets, float* nll,
                         float* log_z, float* dlogits, float z_coef, float grad_scale, std::int64_t N, std::int64_t Vl,
                         std::int64_t off) {
  // a common shift for exp(): the global row maximum
  DeviceFloats mx(be, static_cast<std::size_t>(N));
  be.row_max(logits, N, Vl, mx.data());
  tp.group->all_reduce_max(mx.data(), N);
  // sum of exp and the target's logit, each completed by a sum over the group
  DeviceArray<double> part(be, static_cast<std::size_t>(2 * N));
  be.xent_partials(logits, targets, off, mx.data(), part.data(), N, Vl);
  tp.group->all_reduce_sum(part.data(), 2 * N);
  be.xent_finish(logits, targets, off, mx.data(), part.data(), nll, log_z, dlogits, z_coef, grad_scale, N, Vl);
}

}  // namespace palm
