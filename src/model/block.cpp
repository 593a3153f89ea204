#include "model/block.h"

#include <cmath>

#include "base/check.h"

namespace palm {

namespace {

// C = alpha X W^T + beta C for a weight matrix W [N, K] and rows X [M, K].
void weight_product(Backend& be, const StoredMatrix* stored, bool bf16_gemms, i64 M, i64 N, i64 K, float alpha,
                    const float* X, const float* W, float beta, float* C) {
  if (stored) {
    be.rows_times_stored(X, M, K, stored->data, stored->format, stored->scales.size() == 0 ? nullptr : stored->scales.data(),
                         N, alpha, beta, C);
  } else if (bf16_gemms) {
    be.gemm_bf16(false, true, M, N, K, alpha, X, K, W, K, beta, C, N);
  } else {
    be.gemm(false, true, M, N, K, alpha, X, K, W, K, beta, C, N);
  }
}

}  // namespace

void block_fwd(Backend& be, const ModelConfig& c, const BlockWeights& w, const BlockRows& r, std::int64_t layer,
               LayerActs& a, const float* x_in, float* x_out, const TensorParallel* tp, float* branch) {
  const std::int64_t B = r.B, T = r.T;
  const std::int64_t N = B * T, D = c.d_model, H = c.n_heads, K = c.head_dim, F = c.d_ff,
                     E = c.fused_in_dim(), HK = H * K;
  const float base = float(c.rope_base);
  const DecodeWeights::Layer* s = w.stored;
  float* uq = a.u;                  // [N, H*K] at ld E
  float* uk = a.u + HK;             // [N, K]   at ld E
  float* uv = a.u + HK + K;         // [N, K]   at ld E
  float* ugate = a.u + HK + 2 * K;  // [N, F]   at ld E
  float* uup = ugate + F;           // [N, F]   at ld E
  // h = LN(x)
  be.layernorm_fwd(x_in, w.f32.norm, a.h, a.mean, a.rstd, N, D, float(c.norm_eps));
  // u = h W_in^T: q, k, v, gate and up in ONE product (PaLM's reason for the parallel block)
  weight_product(be, s ? &s->w_in : nullptr, w.bf16_gemms, N, E, D, 1.0f, a.h, w.f32.w_in, 0.0f, a.u);
  if (r.decoding()) {
    PALM_ASSERT(T == 1 && r.caches && r.lens && r.cache_rows);
    const KvFormat format = r.caches[0]->format;  // one step's caches share it (decode_step checks)
    // RoPE at each row's own position; the new k|v join its cache
    be.rope_fwd_at(uq, E, a.q, HK, B, r.positions, H, K, base);
    be.rope_fwd_at(uk, E, uk, E, B, r.positions, 1, K, base);
    for (std::int64_t i = 0; i < B; ++i) {
      KvCache& cache = *r.caches[i];
      be.store_kv_rows(uk + i * E, E, cache.at(layer, r.positions[i]), cache.format, 2 * K, 1, 2 * K);
      r.cache_rows[i] = r.caches[i]->at(layer, 0);
    }
    if (!(tp && tp->active())) {
      // x_out = x_in + act W_down^T + att W_o^T: the down projection does not wait for the
      // attention, so it runs beside it (attention_decode_beside) and W_o comes last; every
      // decode path sums in this order (the default path and stored fp32 give the same bits)
      be.swiglu_fwd(ugate, uup, E, a.act, N, F);
      if (x_out != x_in) be.copy_on_device(x_out, x_in, sizeof(float) * std::size_t(N * D));
      if (s) {
        const StoredMatrix& m = s->w_down;
        be.attention_decode_beside(a.q, r.cache_rows, format, 2 * K, r.lens, a.att, B, H, K,
                                   {a.act, N, F, m.data, m.format, m.scales.size() == 0 ? nullptr : m.scales.data(), D,
                                    1.0f, 1.0f, x_out});
      } else {
        be.attention_decode(a.q, r.cache_rows, format, 2 * K, r.lens, a.att, B, H, K);
        weight_product(be, nullptr, w.bf16_gemms, N, D, F, 1.0f, a.act, w.f32.w_down, 1.0f, x_out);
      }
      weight_product(be, s ? &s->w_o : nullptr, w.bf16_gemms, N, D, HK, 1.0f, a.att, w.f32.w_o, 1.0f, x_out);
      return;
    }
    be.attention_decode(a.q, r.cache_rows, format, 2 * K, r.lens, a.att, B, H, K);
  } else {
    // RoPE: q into its own buffer (so Q_b is [T*H, K]); k in place
    be.rope_fwd(uq, E, a.q, HK, N, T, H, K, base);
    be.rope_fwd(uk, E, uk, E, N, T, 1, K, base);
    be.attention_fwd(a.q, uk, uv, E, a.attn_saved, a.att, B, T, H, K);  // multi-query, causal
    if (r.caches) {
      PALM_ASSERT(B == 1);
      KvCache& cache = *r.caches[0];
      be.store_kv_rows(uk, E, cache.at(layer, 0), cache.format, 2 * K, T, 2 * K);
    }
  }
  be.swiglu_fwd(ugate, uup, E, a.act, N, F);
  if (tp && tp->active()) {
    // this rank's heads and units give partial sums of both branches: one all-reduce
    PALM_ASSERT(branch != nullptr && !s);
    weight_product(be, nullptr, w.bf16_gemms, N, D, HK, 1.0f, a.att, w.f32.w_o, 0.0f, branch);
    weight_product(be, nullptr, w.bf16_gemms, N, D, F, 1.0f, a.act, w.f32.w_down, 1.0f, branch);
    tp->group->all_reduce_sum(branch, N * D);
    be.add(x_in, branch, x_out, N * D);
    return;
  }
  // x_out = x_in + att W_o^T + act W_down^T (both branches accumulate into one buffer)
  if (x_out != x_in) be.copy_on_device(x_out, x_in, sizeof(float) * std::size_t(N * D));
  weight_product(be, s ? &s->w_o : nullptr, w.bf16_gemms, N, D, HK, 1.0f, a.att, w.f32.w_o, 1.0f, x_out);
  weight_product(be, s ? &s->w_down : nullptr, w.bf16_gemms, N, D, F, 1.0f, a.act, w.f32.w_down, 1.0f, x_out);
}

void head_fwd(Backend& be, const ModelConfig& c, const ModelView& w, const StoredMatrix* stored, bool bf16_gemms,
              const float* x, std::int64_t n, float* h, float* mean, float* rstd, float* logits) {
  const std::int64_t D = c.d_model;
  be.layernorm_fwd(x, w.final_norm, h, mean, rstd, n, D, float(c.norm_eps));
  weight_product(be, stored, bf16_gemms, n, c.vocab_size, D, 1.0f / std::sqrt(float(D)), h, w.embed, 0.0f, logits);
}

}  // namespace palm
