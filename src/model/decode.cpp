#include "model/decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "model/model.h"

namespace palm {

KvCache::KvCache(Backend& be, const ModelConfig& c, std::int64_t cap) : capacity(cap), two_k(2 * c.head_dim) {
  PALM_CHECK(cap > 0 && cap <= c.max_seq_len, "KV cache capacity ", cap, " outside [1, max_seq_len ", c.max_seq_len, "]");
  data = DeviceFloats(be, std::size_t(c.n_layers * cap * 2 * c.head_dim));
}

void prefill(Backend& be, const Weights& w, KvCache& cache, const std::int32_t* tokens, std::int64_t n,
             float* last_logits) {
  const ModelConfig& c = w.config;
  PALM_CHECK(n > 0, "an empty prompt cannot be prefilled");
  PALM_CHECK(n <= cache.capacity, "prompt of ", n, " tokens does not fit the context of ", cache.capacity);
  check_tokens(c, tokens, n, "prompt token");
  // The training forward's layers (B = 1), with one shared set of layer buffers (the remat
  // plan): each layer's k|v go to the cache as soon as it is done. Only the last position's
  // logits are computed: the other n-1 rows of the [n, V] product were a fifth of the work.
  Activations acts(be, c, ActivationPlan{1, n, /*remat=*/true, /*training=*/false});
  const std::int64_t D = c.d_model, E = c.fused_in_dim(), HK = c.n_heads * c.head_dim, K = c.head_dim;
  be.embedding_fwd(tokens, w.view.embed, acts.x[0], n, D);
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    LayerActs& a = acts.layer(l);
    layer_fwd(be, c, acts.plan, w.view.layers[l], a, acts.x[l], acts.x[l + 1]);
    be.copy_2d_on_device(cache.at(l, 0), sizeof(float) * 2 * K, a.u + HK, sizeof(float) * E, sizeof(float) * 2 * K, std::size_t(n));
  }
  cache.len = n;
  const float* x_last = acts.x[c.n_layers] + (n - 1) * D;
  be.layernorm_fwd(x_last, w.view.final_norm, acts.hf, acts.fmean, acts.frstd, 1, D, float(c.norm_eps));
  be.rows_times_stored(acts.hf, 1, D, w.view.embed, WeightFormat::kF32, nullptr, c.vocab_size,
                       1.0f / std::sqrt(float(D)), 0.0f, last_logits);
}

namespace {

void product(Backend& be, const StoredMatrix* m, std::int64_t b, std::int64_t N, std::int64_t K, float alpha,
             const float* X, const float* W, float beta, float* C) {
  if (m) {
    be.rows_times_stored(X, b, K, m->data, m->format, m->scales.empty() ? nullptr : m->scales.data(), N, alpha, beta, C);
  } else if (b <= 2) {
    // one or two rows: palm's GEMV reads fp32 weights at 90-107% of the bandwidth floor,
    // oneDNN's transposed product at 71-90% (docs/PERFORMANCE.md)
    be.rows_times_stored(X, b, K, W, WeightFormat::kF32, nullptr, N, alpha, beta, C);
  } else {
    be.gemm(false, true, b, N, K, alpha, X, K, W, K, beta, C, N);
  }
}

StoredMatrix store(Backend& be, const float* w, std::int64_t rows, std::int64_t cols, WeightFormat f) {
  StoredMatrix m;
  m.format = f;
  m.rows = rows;
  m.cols = cols;
  const std::int64_t n = rows * cols;
  if (f == WeightFormat::kF32) {
    m.data = w;
  } else if (f == WeightFormat::kBF16) {
    m.bf16.resize(std::size_t(n));
    be.quantize_bf16(w, m.bf16.data(), n);
    m.data = m.bf16.data();
  } else {
    m.q.resize(std::size_t(n));
    m.scales.resize(std::size_t(rows));
    be.quantize_int8_rows(w, rows, cols, m.q.data(), m.scales.data());
    m.data = m.q.data();
  }
  return m;
}

}  // namespace

std::int64_t StoredMatrix::bytes() const {
  const std::int64_t per = format == WeightFormat::kF32 ? 4 : (format == WeightFormat::kBF16 ? 2 : 1);
  return rows * cols * per + std::int64_t(scales.size()) * 4;
}

DecodeWeights::DecodeWeights(Backend& be, const Weights& w, WeightFormat f) : format(f) {
  const ModelConfig& c = w.config;
  for (const auto& l : w.view.layers) {
    layers.push_back({store(be, l.w_in, c.fused_in_dim(), c.d_model, f), store(be, l.w_o, c.d_model, c.n_heads * c.head_dim, f),
                      store(be, l.w_down, c.d_model, c.d_ff, f)});
  }
  embed = store(be, w.view.embed, c.vocab_size, c.d_model, f);
}

std::int64_t DecodeWeights::bytes() const {
  std::int64_t n = embed.bytes();
  for (const auto& l : layers) n += l.w_in.bytes() + l.w_o.bytes() + l.w_down.bytes();
  return n;
}

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "fp32") return WeightFormat::kF32;
  if (name == "bf16") return WeightFormat::kBF16;
  if (name == "int8") return WeightFormat::kInt8;
  fail(str_cat("weight format must be fp32, bf16 or int8, got '", name, "'"));
}

DecodeScratch::DecodeScratch(Backend& be, const ModelConfig& c, std::int64_t b)
    : max_batch(b),
      x(be, std::size_t(b * c.d_model)),
      h(be, std::size_t(b * c.d_model)),
      mean(be, std::size_t(b)),
      rstd(be, std::size_t(b)),
      u(be, std::size_t(b * c.fused_in_dim())),
      q(be, std::size_t(b * c.n_heads * c.head_dim)),
      att(be, std::size_t(b * c.n_heads * c.head_dim)),
      act(be, std::size_t(b * c.d_ff)),
      positions(std::size_t(b)),
      lens(std::size_t(b)),
      rows(std::size_t(b)) {}

void decode_step(Backend& be, const Weights& w, const std::vector<KvCache*>& caches, const std::int32_t* tokens,
                 float* logits, DecodeScratch& s, const DecodeWeights* stored) {
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
    const DecodeWeights::Layer* sl = stored ? &stored->layers[l] : nullptr;
    // the same block as layer_fwd, for one new position per sequence
    be.layernorm_fwd(s.x.data(), lw.norm, s.h.data(), s.mean.data(), s.rstd.data(), b, D, float(c.norm_eps));
    product(be, sl ? &sl->w_in : nullptr, b, E, D, 1.0f, s.h.data(), lw.w_in, 0.0f, s.u.data());
    be.rope_fwd_at(s.u.data(), E, s.q.data(), HK, b, s.positions.data(), H, K, base);
    be.rope_fwd_at(s.u.data() + HK, E, s.u.data() + HK, E, b, s.positions.data(), 1, K, base);
    for (std::int64_t i = 0; i < b; ++i) {
      be.copy_on_device(caches[i]->at(l, s.positions[i]), s.u.data() + i * E + HK, sizeof(float) * 2 * K);
      s.rows[i] = caches[i]->at(l, 0);
    }
    be.attention_decode(s.q.data(), s.rows.data(), 2 * K, s.lens.data(), s.att.data(), b, H, K);
    be.swiglu_fwd(s.u.data() + HK + 2 * K, s.u.data() + HK + 2 * K + F, E, s.act.data(), b, F);
    product(be, sl ? &sl->w_o : nullptr, b, D, HK, 1.0f, s.att.data(), lw.w_o, 1.0f, s.x.data());
    product(be, sl ? &sl->w_down : nullptr, b, D, F, 1.0f, s.act.data(), lw.w_down, 1.0f, s.x.data());
  }
  be.layernorm_fwd(s.x.data(), w.view.final_norm, s.h.data(), s.mean.data(), s.rstd.data(), b, D, float(c.norm_eps));
  product(be, stored ? &stored->embed : nullptr, b, c.vocab_size, D, 1.0f / std::sqrt(float(D)), s.h.data(),
          w.view.embed, 0.0f, logits);
  for (auto* cache : caches) ++cache->len;
}

}  // namespace palm
