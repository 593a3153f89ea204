// The PaLM model: forward and backward over planned buffers (docs/model.md).
//
// Letters: B batch, T time, N = B*T, D model, H heads, K head dim, F ffn, V vocab, L layers.
#pragma once
#include <cstdint>

#include "dist/comm.h"
#include "kernels/backend.h"
#include "model/activations.h"
#include "model/params.h"

namespace palm {

struct LossStats {
  double loss = 0;    // mean cross-entropy over the N positions
  double z_loss = 0;  // z_coef * mean(log(Z)^2)
};

inline constexpr float kDefaultZLoss = 1e-4f;  // PaLM's z-loss coefficient

// tokens [B*T], targets [B*T] (targets[n] = the token after tokens[n]).
// When acts.plan.training, also leaves dlogits in acts.logits for backward().
LossStats forward(Backend& be, const Weights& w, Activations& acts, const std::int32_t* tokens,
                  const std::int32_t* targets, float z_coef = kDefaultZLoss);

// Accumulates d(loss + z_loss)/d(param) into g, then all-reduces g through comm.
// Must follow forward() on the same activations.
// Adds this micro-batch's gradients to g. With `reduce` (the last micro-batch of a step)
// the accumulated gradients are then summed over the replicas (comm) and, under tensor
// parallelism, the replicated K/V head's over the tensor group: once per step, so that
// earlier micro-batches are not summed again.
void backward(Backend& be, Comm& comm, const Weights& w, Activations& acts,
              const std::int32_t* tokens, Gradients& g, bool reduce = true);

// The weight GEMMs (projections and logits) in the plan's precision; attention's own
// products stay fp32.
inline void project(Backend& be, const ActivationPlan& plan, bool ta, bool tb, i64 M, i64 N,
                    i64 K, float alpha, const float* A, i64 lda, const float* B, i64 ldb,
                    float beta, float* C, i64 ldc) {
  if (plan.bf16) {
    be.gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    be.gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

// Checks token ids against the vocabulary; throws Error naming the first bad one.
void check_tokens(const ModelConfig& c, const std::int32_t* tokens, std::int64_t n,
                  const char* what);

}  // namespace palm
