#include "model/decode.h"

#include <cmath>
#include <cstring>

#include "base/check.h"
#include "model/model.h"

namespace palm {

KvCache::KvCache(const ModelConfig& c, std::int64_t cap)
    : capacity(cap), two_k(2 * c.head_dim), data(std::size_t(c.n_layers * cap * 2 * c.head_dim)) {
  PALM_CHECK(cap > 0 && cap <= c.max_seq_len, "KV cache capacity ", cap, " outside [1, max_seq_len ", c.max_seq_len, "]");
}

void prefill(Backend& be, const Weights& w, KvCache& cache, const std::int32_t* tokens, std::int64_t n,
             float* last_logits) {
  const ModelConfig& c = w.config;
  PALM_CHECK(n > 0, "an empty prompt cannot be prefilled");
  PALM_CHECK(n <= cache.capacity, "prompt of ", n, " tokens does not fit the context of ", cache.capacity);
  check_tokens(c, tokens, n, "prompt token");
  Activations acts(be, c, ActivationPlan{1, n, false, false});
  const std::vector<std::int32_t> targets(std::size_t(n), 0);  // unused: only the logits are read
  forward(be, w, acts, tokens, targets.data(), 0.0f);
  const std::int64_t E = c.fused_in_dim(), HK = c.n_heads * c.head_dim, K = c.head_dim;
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const float* u = acts.layer(l).u;  // k columns hold RoPE(k) after the forward
    for (std::int64_t t = 0; t < n; ++t) std::memcpy(cache.at(l, t), u + t * E + HK, sizeof(float) * 2 * K);
  }
  cache.len = n;
  std::memcpy(last_logits, acts.logits + (n - 1) * c.vocab_size, sizeof(float) * c.vocab_size);
}

DecodeScratch::DecodeScratch(const ModelConfig& c, std::int64_t b)
    : max_batch(b),
      x(std::size_t(b * c.d_model)),
      h(std::size_t(b * c.d_model)),
      mean(std::size_t(b)),
      rstd(std::size_t(b)),
      u(std::size_t(b * c.fused_in_dim())),
      q(std::size_t(b * c.n_heads * c.head_dim)),
      att(std::size_t(b * c.n_heads * c.head_dim)),
      act(std::size_t(b * c.d_ff)),
      positions(std::size_t(b)),
      lens(std::size_t(b)),
      rows(std::size_t(b)) {}

void decode_step(Backend& be, const Weights& w, const std::vector<KvCache*>& caches, const std::int32_t* tokens,
                 float* logits, DecodeScratch& s) {
  const ModelConfig& c = w.config;
  const std::int64_t b = std::int64_t(caches.size());
  PALM_CHECK(b > 0 && b <= s.max_batch, "decode batch ", b, " outside [1, ", s.max_batch, "]");
  const std::int64_t D = c.d_model, H = c.n_heads, K = c.head_dim, F = c.d_ff, E = c.fused_in_dim(), HK = H * K;
  const float base = float(c.rope_base);
  check_tokens(c, tokens, b, "token");
  for (std::int64_t i = 0; i < b; ++i) {
    PALM_CHECK(caches[i]->len < caches[i]->capacity, "sequence ", i, " is full (", caches[i]->capacity, " tokens)");
    s.positions[i] = std::int32_t(caches[i]->len);
    s.lens[i] = caches[i]->len + 1;
  }
  be.embedding_fwd(tokens, w.view.embed, s.x.data(), b, D);
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const LayerView& lw = w.view.layers[l];
    // the same block as layer_fwd, for one new position per sequence
    be.layernorm_fwd(s.x.data(), lw.norm, s.h.data(), s.mean.data(), s.rstd.data(), b, D, float(c.norm_eps));
    be.gemm(false, true, b, E, D, 1.0f, s.h.data(), D, lw.w_in, D, 0.0f, s.u.data(), E);
    be.rope_fwd_at(s.u.data(), E, s.q.data(), HK, b, s.positions.data(), H, K, base);
    be.rope_fwd_at(s.u.data() + HK, E, s.u.data() + HK, E, b, s.positions.data(), 1, K, base);
    for (std::int64_t i = 0; i < b; ++i) {
      std::memcpy(caches[i]->at(l, s.positions[i]), s.u.data() + i * E + HK, sizeof(float) * 2 * K);
      s.rows[i] = caches[i]->at(l, 0);
    }
    be.attention_decode(s.q.data(), s.rows.data(), 2 * K, s.lens.data(), s.att.data(), b, H, K);
    be.swiglu_fwd(s.u.data() + HK + 2 * K, s.u.data() + HK + 2 * K + F, E, s.act.data(), b, F);
    be.gemm(false, true, b, D, HK, 1.0f, s.att.data(), HK, lw.w_o, HK, 1.0f, s.x.data(), D);
    be.gemm(false, true, b, D, F, 1.0f, s.act.data(), F, lw.w_down, F, 1.0f, s.x.data(), D);
  }
  be.layernorm_fwd(s.x.data(), w.view.final_norm, s.h.data(), s.mean.data(), s.rstd.data(), b, D, float(c.norm_eps));
  be.gemm(false, true, b, c.vocab_size, D, 1.0f / std::sqrt(float(D)), s.h.data(), D, w.view.embed, D, 0.0f, logits,
          c.vocab_size);
  for (auto* cache : caches) ++cache->len;
}

}  // namespace palm
