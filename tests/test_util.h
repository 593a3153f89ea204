// Shared by the model-level tests: the tiny configuration with odd sizes.
#pragma once
#include "model/config.h"

namespace palm::testing_util {

// V 97, D 48, L 2, H 3, K 16, F 80: odd sizes on purpose.
inline ModelConfig tiny_odd_config(std::int64_t max_seq_len = 64) {
  ModelConfig c;
  c.vocab_size = 97;
  c.d_model = 48;
  c.n_layers = 2;
  c.n_heads = 3;
  c.head_dim = 16;
  c.d_ff = 80;
  c.max_seq_len = max_seq_len;
  return c;
}

}  // namespace palm::testing_util
