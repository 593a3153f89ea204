// Tensor (model) parallelism fitted to PaLM's parallel block, Megatron-style: each of T
// ranks holds H/T query heads and F/T SwiGLU units (rows of the fused input projection:
// column-parallel; the matching columns of W_o and W_down: row-parallel), the single
// multi-query K/V head whole (replicated; its gradient summed over the group), and V/T
// rows of the embedding (vocabulary-parallel input lookup, logits and softmax with z-loss).
// Per block: one all-reduce in the forward (the two branches' partial sums) and one in the
// backward (dh); plus the embedding's and the logits' all-reduces.
//
// A rank's weights are an ordinary Weights of the *local* config (n_heads H/T, d_ff F/T,
// vocab_size V/T), so the kernels and the optimizer need no change.
#pragma once
#include <cstdint>
#include <string>

#include "dist/comm.h"
#include "model/config.h"
#include "model/params.h"

namespace palm {

struct TensorParallel {
  Comm* group = nullptr;  // null or size 1: no tensor parallelism
  int rank = 0, size = 1;
  bool active() const { return group != nullptr && size > 1; }
};

// The config of one rank's shard; throws naming the dimension that T does not divide.
ModelConfig tp_local_config(const ModelConfig& global, int T);

// Where a rank's tensor lies in the global one.
enum class SliceKind { kAll, kRows, kCols };
struct TpSlice {
  SliceKind kind = SliceKind::kAll;
  std::int64_t begin = 0, count = 0;  // rows or columns of the global tensor
};
// From the global tensor's metadata (ParamInfo::tp_split).
TpSlice tp_slice(const ParamInfo& global_param, int rank, int T);
// `name` is a parameter name ("layers.3.attn.q") or an optimizer state name ending in one.
TpSlice tp_slice(const std::string& name, const ModelConfig& global, int rank, int T);

// local <- global slice, and global slice <- local (for checkpoints in any layout).
void tp_extract(const float* global, const std::vector<std::int64_t>& global_shape, const TpSlice& s, float* local);
void tp_insert(const float* local, const std::vector<std::int64_t>& global_shape, const TpSlice& s, float* global);

// The shard of init_weights(global weights, seed): the same numbers, without building them.
void init_weights_tp(Backend& be, Weights& local, const ModelConfig& global, int rank, int T, std::uint64_t seed,
                     const std::vector<bool>* only = nullptr);

// Cross-entropy with z-loss over vocabulary-sharded logits [N, V/T] (this rank's columns
// start at vocab_offset); nll and log_z are complete on every rank; dlogits (if given)
// gets this rank's columns of the gradient, scaled by grad_scale.
void xent_vocab_parallel(Backend& be, const TensorParallel& tp, float* logits, const std::int32_t* targets, float* nll, float* log_z,
                         float* dlogits, float z_coef, float grad_scale, std::int64_t N, std::int64_t V_local,
                         std::int64_t vocab_offset);

}  // namespace palm
