#include "model/accounting.h"

#include "model/activations.h"
#include "model/params.h"

namespace palm {

ModelAccounting account(const Backend& be, const ModelConfig& c, std::int64_t batch,
                        std::int64_t seq_len) {
  ModelAccounting a;
  a.parameters = param_count(c);
  a.embedding_parameters = c.vocab_size * c.d_model;
  a.non_embedding_parameters = a.parameters - a.embedding_parameters;
  a.matrix_parameters = a.parameters - (c.n_layers + 1) * c.d_model;
  a.flops_per_token = 6.0 * double(a.parameters) +
                      12.0 * double(c.n_layers) * c.n_heads * c.head_dim * double(seq_len);
  a.kv_cache_bytes_per_token_f32 = c.n_layers * 2 * c.head_dim * 4;
  a.kv_cache_bytes_per_token_mha_f32 = c.n_layers * 2 * c.n_heads * c.head_dim * 4;
  a.weight_bytes = 4 * a.parameters;
  a.gradient_bytes = 4 * a.parameters;
  a.optimizer_bytes = 8 * a.parameters;
  ActivationPlan p{batch, seq_len, false, true};
  a.activation_bytes = Activations::bytes_needed(be, c, p);
  p.remat = true;
  a.activation_bytes_remat = Activations::bytes_needed(be, c, p);
  return a;
}

}  // namespace palm
