// Mirror image of forward.cpp; each step names the forward line it undoes.
#include <algorithm>
#include <cmath>

#include "base/check.h"
#include "model/block.h"
#include "model/model.h"

namespace palm {

namespace {

// Accumulates layer l's parameter gradients into gw, and adds d(loss)/d(x_l) to
// acts.dx, which holds d(loss)/d(x_{l+1}) on entry (the residual path passes it through).
void layer_bwd(Backend& be, const ModelConfig& c, const LayerView& w, LayerView& gw,
               LayerActs& a, const float* x_in, Activations& acts, const TensorParallel* tp) {
  const ActivationPlan& plan = acts.plan;
  const std::int64_t B = plan.B, T = plan.T;
  const std::int64_t N = B * T, D = c.d_model, H = c.n_heads, K = c.head_dim, F = c.d_ff,
                     E = c.fused_in_dim(), HK = H * K;
  const float base = float(c.rope_base);
  const float* dy = acts.dx;  // d/d(branch) = d/d(x_out)
  float* duq = acts.du;
  float* duk = acts.du + HK;
  float* duv = acts.du + HK + K;
  float* dugate = acts.du + HK + 2 * K;
  float* duup = dugate + F;
  const float* uk = a.u + HK;
  const float* uv = a.u + HK + K;
  const float* ugate = a.u + HK + 2 * K;
  const float* uup = ugate + F;
  // undo x_out += act W_down^T
  project(be, plan, false, false, N, F, D, 1.0f, dy, D, w.w_down, F, 0.0f, acts.dact, F);
  project(be, plan, true, false, D, F, N, 1.0f, dy, D, a.act, F, 1.0f, gw.w_down, F);
  // undo x_out += att W_o^T
  project(be, plan, false, false, N, HK, D, 1.0f, dy, D, w.w_o, HK, 0.0f, acts.datt, HK);
  project(be, plan, true, false, D, HK, N, 1.0f, dy, D, a.att, HK, 1.0f, gw.w_o, HK);
  // undo SwiGLU
  be.swiglu_bwd(acts.dact, ugate, uup, E, dugate, duup, E, N, F);
  // undo attention (dv lands in du directly)
  be.attention_bwd(acts.datt, a.q, uk, uv, E, a.att, a.attn_saved, acts.dq, acts.dk, duv, E,
                   acts.attn_scratch, acts.attn_scratch_floats, B, T, H, K);
  // undo RoPE on q and k
  be.rope_bwd(acts.dq, HK, duq, E, N, T, H, K, base);
  be.rope_bwd(acts.dk, K, duk, E, N, T, 1, K, base);
  // undo u = h W_in^T (the fused GEMM, fused in the backward too)
  project(be, plan, true, false, E, D, N, 1.0f, acts.du, E, a.h, D, 1.0f, gw.w_in, D);
  project(be, plan, false, false, N, D, E, 1.0f, acts.du, E, w.w_in, D, 0.0f, acts.dh, D);
  if (tp) tp->group->all_reduce_sum(acts.dh, N * D);  // this rank's heads and units: a partial sum
  // undo h = LN(x): dx_l = dx_{l+1} + LN'(dh)
  be.layernorm_bwd_acc(acts.dh, x_in, w.norm, a.mean, a.rstd, acts.dx, gw.norm, N, D);
}

}  // namespace

void backward(Backend& be, Comm& comm, const Weights& w, Activations& acts,
              const std::int32_t* tokens, Gradients& g, bool reduce) {
  const ModelConfig& c = w.config;
  PALM_CHECK(acts.plan.training, "backward() needs activations planned for training");
  const std::int64_t B = acts.plan.B, T = acts.plan.T, N = B * T, D = c.d_model,
                     V = c.vocab_size;
  const ActivationPlan& plan = acts.plan;
  const float out_scale = 1.0f / std::sqrt(float(D));
  const float* dlogits = acts.logits;  // left by forward()
  const ParallelPlan& par = acts.parallel;
  const TensorParallel* tp = par.tensor();
  // undo logits = hf E^T / sqrt(D)
  project(be, plan, false, false, N, D, V, out_scale, dlogits, V, w.view.embed, D, 0.0f, acts.dh, D);
  if (tp) tp->group->all_reduce_sum(acts.dh, N * D);  // this rank's vocabulary rows: a partial sum
  project(be, plan, true, false, V, D, N, out_scale, dlogits, V, acts.hf, D, 1.0f, g.view.embed, D);
  // undo hf = LN_final(x_L)
  be.memset_on_device(acts.dx, 0, sizeof(float) * std::size_t(N * D));
  be.layernorm_bwd_acc(acts.dh, acts.x[c.n_layers], w.view.final_norm, acts.fmean,
                       acts.frstd, acts.dx, g.view.final_norm, N, D);
  for (std::int64_t l = c.n_layers - 1; l >= 0; --l) {
    par.layer_needed(l);
    if (acts.plan.remat) {
      // Recompute this block's activations; the output goes to dh, which is free until
      // layer_bwd overwrites it. Same code, same inputs: bitwise the stored values.
      block_fwd(be, c, {w.view.layers[l], nullptr, plan.bf16}, BlockRows{B, T}, l, acts.layer(l), acts.x[l], acts.dh, tp,
                acts.branch);
    }
    layer_bwd(be, c, w.view.layers[l], g.view.layers[l], acts.layer(l), acts.x[l], acts, tp);
    par.layer_backward_done(l, reduce);
  }
  // undo x_0 = E[token]
  if (tp) {
    // the rows this rank holds, in token order (deterministic)
    be.embedding_bwd_acc_slice(tokens, acts.dx, g.view.embed, par.vocab_offset, V, N, D);
  } else {
    be.embedding_bwd_acc(tokens, acts.dx, g.view.embed, N, D);
  }
  par.backward_done(c, comm, g, reduce);
}

}  // namespace palm
