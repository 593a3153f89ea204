// Sizes and costs of a configuration (palm info): exact parameter counts, training
// FLOPs per token by PaLM's Appendix B, KV-cache and training memory.
#pragma once
#include <cstdint>

#include "kernels/backend.h"
#include "model/config.h"

namespace palm {

struct ModelAccounting {
  std::int64_t parameters = 0;
  std::int64_t embedding_parameters = 0;
  std::int64_t non_embedding_parameters = 0;
  std::int64_t matrix_parameters = 0;  // without LayerNorm scales (how PaLM's Table 1 counts)
  double flops_per_token = 0;        // 6 N + 12 L H K T  (N = all parameters)
  std::int64_t kv_cache_bytes_per_token_f32 = 0;  // L * 2 * K * 4: one shared K/V head
  std::int64_t kv_cache_bytes_per_token_mha_f32 = 0;  // the same with H K/V heads
  std::int64_t weight_bytes = 0;     // fp32
  std::int64_t gradient_bytes = 0;   // fp32
  std::int64_t optimizer_bytes = 0;  // Adafactor unfactored: second moment + momentum, fp32
  std::int64_t activation_bytes = 0; // at (batch, seq) with this build's buffers
  std::int64_t activation_bytes_remat = 0;
};

ModelAccounting account(const Backend& be, const ModelConfig& c, std::int64_t batch,
                        std::int64_t seq_len);

}  // namespace palm
