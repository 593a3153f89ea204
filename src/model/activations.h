// Activation memory for one (batch, sequence length) shape, planned once: one arena with
// named views. Without remat every layer keeps what its backward needs; with remat only
// the residual stream x_l is kept per layer and one layer's worth of buffers is
// recomputed in the backward.
//
// Letters: N = B*T rows, D model, H heads, K head dim, F ffn, E = H*K + 2K + 2F, V vocab.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/config.h"
#include "model/tensor_parallel.h"

namespace palm {

struct LayerActs {
  float* h;      // [N, D]     LN(x)
  float* mean;   // [N]
  float* rstd;   // [N]
  float* u;      // [N, E]     h W_in^T; the k columns hold RoPE(k) after the forward
  float* q;      // [N, H*K]   RoPE(q)
  float* probs;  // [B, T*H, T] attention softmax
  float* att;    // [N, H*K]   attention output (heads concatenated)
  float* act;    // [N, F]     swish(gate) * up
};

// Fully sharded data parallelism: a rank stores only the tensors it owns; the model asks
// for a block's weights just before it needs them and gives them back right after, and
// hands each block's gradients over as soon as they are complete.
class ShardedWeights {
 public:
  virtual ~ShardedWeights() = default;
  virtual void gather_globals() = 0;                 // embedding and final norm (kept for the step)
  virtual void gather_layer(std::int64_t l) = 0;
  virtual void release_layer(std::int64_t l) = 0;
  virtual void reduce_layer_grads(std::int64_t l) = 0;
  virtual void reduce_global_grads() = 0;
};

// Data parallelism with overlap: the backward hands over each block's gradients as soon as
// they are final (the step's last micro-batch), so they can be reduced while the blocks
// below compute; finish() hands over the rest and returns when all are reduced.
class GradientOverlap {
 public:
  virtual ~GradientOverlap() = default;
  virtual void layer_done(std::int64_t l) = 0;
  virtual void finish() = 0;
};

struct ActivationPlan {
  std::int64_t B = 0, T = 0;
  bool remat = false;
  bool training = true;  // false: no gradient buffers (scoring)
  bool bf16 = false;     // projections as bf16 GEMMs (fp32 accumulation, fp32 weights)
  bool tensor_parallel = false;  // a branch buffer for the block's partial sums (tensor_parallel.h)
};

class Activations {
 public:
  // Its buffer is allocated by `backend`.
  Activations(Backend& backend, const ModelConfig& c, const ActivationPlan& plan);
  // Bytes the plan needs, without allocating (for `palm info` and memory checks).
  static std::int64_t bytes_needed(const Backend& backend, const ModelConfig& c,
                                   const ActivationPlan& plan);

  const ActivationPlan plan;
  std::vector<float*> x;          // L+1 x [N, D]: residual stream entering layer l; x[L] final
  std::vector<LayerActs> layers;  // L entries, or 1 shared entry with remat
  float* hf;      // [N, D]  LN_final(x_L)
  float* fmean;   // [N]
  float* frstd;   // [N]
  float* logits;  // [N, V]  overwritten by dlogits in training
  float* nll;     // [N]
  float* log_z;   // [N]
  // backward buffers (training only)
  float* dx;      // [N, D]  gradient of the residual stream
  float* dh;      // [N, D]
  float* du;      // [N, E]
  float* dq;      // [N, H*K]
  float* dk;      // [N, K]
  float* datt;    // [N, H*K]
  float* dact;    // [N, F]
  float* attn_scratch;
  std::int64_t attn_scratch_floats = 0;
  float* branch = nullptr;  // [N, D] tensor parallel: attention + MLP partial sums before the all-reduce
  // Tensor parallelism: the group, and where this rank's vocabulary rows start. The
  // config given to forward()/backward() is then this rank's local config.
  TensorParallel tp;
  std::int64_t vocab_offset = 0;
  ShardedWeights* sharded = nullptr;  // --shard full: gathers and gradient hand-over
  GradientOverlap* overlap = nullptr;  // replaces backward()'s final all-reduce

  LayerActs& layer(std::int64_t l) { return layers[plan.remat ? 0 : l]; }

 private:
  static std::int64_t plan_floats(const Backend& backend, const ModelConfig& c,
                                  const ActivationPlan& plan, Activations* out);
  DeviceFloats arena_;
};

}  // namespace palm
