#include "model/decode.h"

#include "base/check.h"
#include "model/block.h"
#include "model/model.h"

namespace palm {

KvCache::KvCache(Backend& be, const ModelConfig& c, std::int64_t cap, KvFormat f)
    : capacity(cap), two_k(2 * c.head_dim), format(f) {
  PALM_CHECK(cap > 0 && cap <= c.max_seq_len, "KV cache capacity ", cap, " outside [1, max_seq_len ", c.max_seq_len, "]");
  data = DeviceArray<std::byte>(be, std::size_t(c.n_layers * cap * two_k * element_bytes()));
}

KvFormat default_kv_format(WeightFormat weights) {
  return weights == WeightFormat::kF32 ? KvFormat::kF32 : KvFormat::kBF16;
}

KvFormat parse_kv_format(const std::string& name, WeightFormat weights) {
  if (name == "auto") return default_kv_format(weights);
  if (name == "fp32") return KvFormat::kF32;
  if (name == "bf16") return KvFormat::kBF16;
  fail(str_cat("KV cache format must be auto, fp32 or bf16, got '", name, "'"));
}

const char* kv_format_name(KvFormat f) { return f == KvFormat::kBF16 ? "bf16" : "fp32"; }

void prefill(Backend& be, const Weights& w, KvCache& cache, const std::int32_t* tokens, std::int64_t n,
             float* last_logits) {
  const ModelConfig& c = w.config;
  PALM_CHECK(n > 0, "an empty prompt cannot be prefilled");
  PALM_CHECK(n <= cache.capacity, "prompt of ", n, " tokens does not fit the context of ", cache.capacity);
  check_tokens(c, tokens, n, "prompt token");
  // The training forward's blocks (B = 1) with one shared set of layer buffers (the remat
  // plan); each block writes its k|v to the cache. Only the last position's logits are
  // computed: the other n-1 rows of the [n, V] product were a fifth of the work, and their
  // buffer (65 MB at 512 tokens of a 32K vocabulary) was zeroed at every prompt for nothing.
  Activations acts(be, c, ActivationPlan{.B = 1, .T = n, .remat = true, .training = false, .logits = false});
  KvCache* caches[1] = {&cache};
  const BlockRows rows{1, n, caches};
  be.embedding_fwd(tokens, w.view.embed, acts.x[0], n, c.d_model);
  for (std::int64_t l = 0; l < c.n_layers; ++l)
    block_fwd(be, c, {w.view.layers[l]}, rows, l, acts.layer(l), acts.x[l], acts.x[l + 1]);
  cache.len = n;
  head_fwd(be, c, w.view, nullptr, false, acts.x[c.n_layers] + (n - 1) * c.d_model, 1, acts.hf, acts.fmean, acts.frstd,
           last_logits);
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
  check_tokens(c, tokens, b, "token");
  for (std::int64_t i = 0; i < b; ++i) {
    PALM_CHECK(caches[i]->len < caches[i]->capacity, "sequence ", i, " is full (", caches[i]->capacity, " tokens)");
    PALM_CHECK(caches[i]->format == caches[0]->format, "decode step: sequence ", i, "'s KV cache is in another format");
    s.positions[i] = std::int32_t(caches[i]->len);
    s.lens[i] = caches[i]->len + 1;
  }
  const BlockRows rows{b, 1, caches.data(), s.positions.data(), s.lens.data(), s.rows.data()};
  LayerActs a{s.h.data(), s.mean.data(), s.rstd.data(), s.u.data(), s.q.data(), nullptr, s.att.data(), s.act.data()};
  be.embedding_fwd(tokens, w.view.embed, s.x.data(), b, c.d_model);
  for (std::int64_t l = 0; l < c.n_layers; ++l)
    block_fwd(be, c, {w.view.layers[l], stored ? &stored->layers[l] : nullptr}, rows, l, a, s.x.data(), s.x.data());
  head_fwd(be, c, w.view, stored ? &stored->embed : nullptr, false, s.x.data(), b, s.h.data(), s.mean.data(),
           s.rstd.data(), logits);
  for (auto* cache : caches) ++cache->len;
}

}  // namespace palm
