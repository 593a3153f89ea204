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
#include "model/parallel_plan.h"

namespace palm {

struct LayerActs {
  float* h;      // [N, D]     LN(x)
  float* mean;   // [N]
  float* rstd;   // [N]
  float* u;      // [N, E]     h W_in^T; the k columns hold RoPE(k) after the forward
  float* q;      // [N, H*K]   RoPE(q)
  float* attn_saved;  // what attention_fwd keeps for the backward (the CPU: softmax [B, T*H, T]); null without training
  float* att;    // [N, H*K]   attention output (heads concatenated)
  float* act;    // [N, F]     swish(gate) * up
};

struct ActivationPlan {
  std::int64_t B = 0, T = 0;
  bool remat = false;
  bool training = true;  // false: no gradient buffers (scoring)
  bool bf16 = false;     // projections as bf16 GEMMs (fp32 accumulation, fp32 weights)
  bool tensor_parallel = false;  // a branch buffer for the block's partial sums (tensor_parallel.h)
  bool logits = true;  // false: no [B*T, V] logits, nll, log_z (prefill computes its last row elsewhere)
};

class Activations {
 public:
  // Its buffer is allocated by `backend`.
  Activations(Backend& backend, const ModelConfig& c, const ActivationPlan& plan);
  // Bytes the plan needs, without allocating (for `palm info` and memory checks).
  static std::int64_t bytes_needed(const Backend& backend, const ModelConfig& c,
                                   const ActivationPlan& plan);

  const ActivationPlan plan;
  std::vector<float*> x;          // L+1 x [N, D]: residual stream entering layer l; x[L] final (no backward: two buffers in turn)
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
  ParallelPlan parallel;  // how the step is spread over ranks (parallel_plan.h)

  LayerActs& layer(std::int64_t l) { return layers[plan.remat ? 0 : l]; }

 private:
  static std::int64_t plan_floats(const Backend& backend, const ModelConfig& c,
                                  const ActivationPlan& plan, Activations* out);
  DeviceFloats arena_;
};

}  // namespace palm
