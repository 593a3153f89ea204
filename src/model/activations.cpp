#include "model/activations.h"

#include "base/check.h"

namespace palm {

// Walks the plan once: counts floats, and when `out` is given, assigns its views.
std::int64_t Activations::plan_floats(const Backend& backend, const ModelConfig& c,
                                      const ActivationPlan& p, Activations* out) {
  const std::int64_t N = p.B * p.T, D = c.d_model, H = c.n_heads, K = c.head_dim,
                     F = c.d_ff, E = c.fused_in_dim(), V = c.vocab_size;
  std::int64_t offset = 0;
  auto take = [&](std::int64_t n) -> float* {
    float* ptr = out ? out->arena_.data() + offset : nullptr;
    offset += (n + 15) / 16 * 16;  // keep every view 64-byte aligned
    return ptr;
  };
  // Without a backward nothing reads a layer's input after the layer: two buffers in turn
  // (x[l] and x[l + 1] stay distinct)
  for (std::int64_t l = 0; l <= c.n_layers; ++l) {
    if (!p.training && l >= 2) {
      if (out) out->x.push_back(out->x[std::size_t(l - 2)]);
      continue;
    }
    float* x = take(N * D);
    if (out) out->x.push_back(x);
  }
  const std::int64_t stored_layers = p.remat ? 1 : c.n_layers;
  for (std::int64_t l = 0; l < stored_layers; ++l) {
    LayerActs a;
    a.h = take(N * D);
    a.mean = take(N);
    a.rstd = take(N);
    a.u = take(N * E);
    a.q = take(N * H * K);
    // only a backward reads it (the CPU's softmax is H T^2 floats per sequence and layer)
    a.attn_saved = p.training ? take(backend.attention_saved_floats(p.B, p.T, H)) : nullptr;
    a.att = take(N * H * K);
    a.act = take(N * F);
    if (out) out->layers.push_back(a);
  }
  float* hf = take(N * D);
  float* fmean = take(N);
  float* frstd = take(N);
  float* logits = p.logits ? take(N * V) : nullptr;
  float* nll = p.logits ? take(N) : nullptr;
  float* log_z = p.logits ? take(N) : nullptr;
  float* branch = p.tensor_parallel ? take(N * D) : nullptr;
  float *dx = nullptr, *dh = nullptr, *du = nullptr, *dq = nullptr, *dk = nullptr,
        *datt = nullptr, *dact = nullptr, *scratch = nullptr;
  std::int64_t scratch_floats = 0;
  if (p.training) {
    dx = take(N * D);
    dh = take(N * D);
    du = take(N * E);
    dq = take(N * H * K);
    dk = take(N * K);
    datt = take(N * H * K);
    dact = take(N * F);
    scratch_floats = backend.attention_bwd_scratch_floats(p.B, p.T, H, K);
    scratch = take(scratch_floats);
  }
  if (out) {
    out->hf = hf;
    out->fmean = fmean;
    out->frstd = frstd;
    out->logits = logits;
    out->nll = nll;
    out->log_z = log_z;
    out->dx = dx;
    out->dh = dh;
    out->du = du;
    out->dq = dq;
    out->dk = dk;
    out->datt = datt;
    out->dact = dact;
    out->attn_scratch = scratch;
    out->attn_scratch_floats = scratch_floats;
    out->branch = branch;
  }
  return offset;
}

std::int64_t Activations::bytes_needed(const Backend& backend, const ModelConfig& c,
                                       const ActivationPlan& plan) {
  return plan_floats(backend, c, plan, nullptr) * std::int64_t(sizeof(float));
}

Activations::Activations(Backend& backend, const ModelConfig& c,
                         const ActivationPlan& p)
    : plan(p) {
  PALM_CHECK(p.B > 0 && p.T > 0, "batch size and sequence length must be positive (got B=",
             p.B, ", T=", p.T, ")");
  PALM_CHECK(p.logits || !p.training, "a training plan needs its logits buffer");
  PALM_CHECK(p.T <= c.max_seq_len, "sequence length ", p.T, " exceeds the model's max_seq_len ",
             c.max_seq_len);
  arena_ = DeviceFloats(backend, static_cast<std::size_t>(plan_floats(backend, c, p, nullptr)));
  plan_floats(backend, c, p, this);
}

}  // namespace palm
