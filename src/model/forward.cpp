#include <cmath>
#include <cstring>

#include "base/check.h"
#include "kernels/device_buffer.h"
#include "model/block.h"
#include "model/model.h"

namespace palm {

void check_tokens(const ModelConfig& c, const std::int32_t* tokens, std::int64_t n,
                  const char* what) {
  for (std::int64_t i = 0; i < n; ++i) {
    PALM_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, what, " id ", tokens[i],
               " at position ", i, " is outside the vocabulary [0, ", c.vocab_size, ")");
  }
}

LossStats forward(Backend& be, const Weights& w, Activations& acts, const std::int32_t* tokens,
                  const std::int32_t* targets, float z_coef) {
  const ModelConfig& c = w.config;
  const std::int64_t B = acts.plan.B, T = acts.plan.T, N = B * T, D = c.d_model,
                     V = c.vocab_size;
  const ParallelPlan& par = acts.parallel;
  const TensorParallel* tp = par.tensor();
  par.forward_begins();
  // x_0 = E[token]
  if (tp) {
    // vocabulary-parallel: the rank holding a token's row contributes it, the others zeros
    be.embedding_fwd_slice(tokens, w.view.embed, par.vocab_offset, V, acts.x[0], N, D);
    tp->group->all_reduce_sum(acts.x[0], N * D);
  } else {
    be.embedding_fwd(tokens, w.view.embed, acts.x[0], N, D);
  }
  const BlockRows rows{B, T};
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    par.layer_needed(l);
    block_fwd(be, c, {w.view.layers[l], nullptr, acts.plan.bf16}, rows, l, acts.layer(l), acts.x[l], acts.x[l + 1], tp,
              acts.branch);
    par.layer_forward_done(l);
  }
  // logits = LN_final(x_L) E^T / sqrt(D)
  head_fwd(be, c, w.view, nullptr, acts.plan.bf16, acts.x[c.n_layers], N, acts.hf, acts.fmean, acts.frstd, acts.logits);
  // cross-entropy + z-loss; in training dlogits replace the logits in place
  float* dlogits = acts.plan.training ? acts.logits : nullptr;
  if (tp) {
    xent_vocab_parallel(be, *tp, acts.logits, targets, acts.nll, acts.log_z, dlogits, z_coef, 1.0f / float(N), N, V,
                        par.vocab_offset);
  } else {
    be.xent_fwd_bwd(acts.logits, targets, acts.nll, acts.log_z, dlogits, z_coef, 1.0f / float(N), N, V);
  }
  LossStats s;
  const HostWindow nll(be, acts.nll, std::size_t(N)), log_z(be, acts.log_z, std::size_t(N));  // [N] each: to the host
  double sum_nll = 0, sum_z = 0;  // sequential double sums: thread-count invariant
  for (std::int64_t n = 0; n < N; ++n) {
    sum_nll += nll.data()[n];
    sum_z += double(log_z.data()[n]) * log_z.data()[n];
  }
  s.loss = sum_nll / double(N);
  s.z_loss = double(z_coef) * sum_z / double(N);
  return s;
}

}  // namespace palm
