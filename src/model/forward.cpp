#include <cmath>
#include <cstring>

#include "base/check.h"
#include "model/model.h"

namespace palm {

void check_tokens(const ModelConfig& c, const std::int32_t* tokens, std::int64_t n,
                  const char* what) {
  for (std::int64_t i = 0; i < n; ++i) {
    PALM_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, what, " id ", tokens[i],
               " at position ", i, " is outside the vocabulary [0, ", c.vocab_size, ")");
  }
}

void layer_fwd(Backend& be, const ModelConfig& c, const ActivationPlan& plan, const LayerView& w,
               LayerActs& a, const float* x_in, float* x_out, const TensorParallel* tp, float* branch) {
  const std::int64_t B = plan.B, T = plan.T;
  const std::int64_t N = B * T, D = c.d_model, H = c.n_heads, K = c.head_dim, F = c.d_ff,
                     E = c.fused_in_dim(), HK = H * K;
  const float base = float(c.rope_base);
  float* uq = a.u;               // [N, H*K] at ld E
  float* uk = a.u + HK;          // [N, K]   at ld E
  float* uv = a.u + HK + K;      // [N, K]   at ld E
  float* ugate = a.u + HK + 2 * K;  // [N, F] at ld E
  float* uup = ugate + F;           // [N, F] at ld E
  // h = LN(x)
  be.layernorm_fwd(x_in, w.norm, a.h, a.mean, a.rstd, N, D, float(c.norm_eps));
  // u = h W_in^T: q, k, v, gate and up in ONE GEMM (PaLM's reason for the parallel block)
  project(be, plan, false, true, N, E, D, 1.0f, a.h, D, w.w_in, D, 0.0f, a.u, E);
  // RoPE: q into its own buffer (so Q_b is [T*H, K]); k in place
  be.rope_fwd(uq, E, a.q, HK, N, T, H, K, base);
  be.rope_fwd(uk, E, uk, E, N, T, 1, K, base);
  // multi-query causal attention
  be.attention_fwd(a.q, uk, uv, E, a.probs, a.att, B, T, H, K);
  // SwiGLU
  be.swiglu_fwd(ugate, uup, E, a.act, N, F);
  if (tp && tp->active()) {
    // this rank's heads and units give partial sums of both branches: one all-reduce
    PALM_ASSERT(branch != nullptr);
    project(be, plan, false, true, N, D, HK, 1.0f, a.att, HK, w.w_o, HK, 0.0f, branch, D);
    project(be, plan, false, true, N, D, F, 1.0f, a.act, F, w.w_down, F, 1.0f, branch, D);
    tp->group->all_reduce_sum(branch, N * D);
    be.add(x_in, branch, x_out, N * D);
    return;
  }
  // x_out = x_in + att W_o^T + act W_down^T (both branches accumulate into one buffer)
  be.copy_on_device(x_out, x_in, sizeof(float) * std::size_t(N * D));
  project(be, plan, false, true, N, D, HK, 1.0f, a.att, HK, w.w_o, HK, 1.0f, x_out, D);
  project(be, plan, false, true, N, D, F, 1.0f, a.act, F, w.w_down, F, 1.0f, x_out, D);
}

LossStats forward(Backend& be, const Weights& w, Activations& acts, const std::int32_t* tokens,
                  const std::int32_t* targets, float z_coef) {
  const ModelConfig& c = w.config;
  const std::int64_t B = acts.plan.B, T = acts.plan.T, N = B * T, D = c.d_model,
                     V = c.vocab_size;
  const TensorParallel* tp = acts.tp.active() ? &acts.tp : nullptr;
  if (acts.sharded) acts.sharded->gather_globals();
  // x_0 = E[token]
  if (tp) {
    // vocabulary-parallel: the rank holding a token's row contributes it, the others zeros
    const std::int64_t off = acts.vocab_offset;
    be.embedding_fwd_slice(tokens, w.view.embed, off, V, acts.x[0], N, D);
    tp->group->all_reduce_sum(acts.x[0], N * D);
  } else {
    be.embedding_fwd(tokens, w.view.embed, acts.x[0], N, D);
  }
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    if (acts.sharded) acts.sharded->gather_layer(l);
    layer_fwd(be, c, acts.plan, w.view.layers[l], acts.layer(l), acts.x[l], acts.x[l + 1], tp, acts.branch);
    if (acts.sharded) acts.sharded->release_layer(l);
  }
  // logits = LN_final(x_L) E^T / sqrt(D)
  be.layernorm_fwd(acts.x[c.n_layers], w.view.final_norm, acts.hf, acts.fmean, acts.frstd, N,
                   D, float(c.norm_eps));
  const float out_scale = 1.0f / std::sqrt(float(D));
  project(be, acts.plan, false, true, N, V, D, out_scale, acts.hf, D, w.view.embed, D, 0.0f, acts.logits, V);
  // cross-entropy + z-loss; in training dlogits replace the logits in place
  float* dlogits = acts.plan.training ? acts.logits : nullptr;
  if (tp) {
    xent_vocab_parallel(be, *tp, acts.logits, targets, acts.nll, acts.log_z, dlogits, z_coef, 1.0f / float(N), N, V,
                        acts.vocab_offset);
  } else {
    be.xent_fwd_bwd(acts.logits, targets, acts.nll, acts.log_z, dlogits, z_coef, 1.0f / float(N), N, V);
  }
  LossStats s;
  double sum_nll = 0, sum_z = 0;  // sequential double sums: thread-count invariant
  for (std::int64_t n = 0; n < N; ++n) {
    sum_nll += acts.nll[n];
    sum_z += double(acts.log_z[n]) * acts.log_z[n];
  }
  s.loss = sum_nll / double(N);
  s.z_loss = double(z_coef) * sum_z / double(N);
  return s;
}

}  // namespace palm
