// Shared by the model-level tests: the tiny configuration with odd sizes.
#pragma once
#include <cstdlib>
#include <string>

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

// The interpreter that has PyTorch: Debian's /usr/bin/python3, or PALM_TORCH_PYTHON
// (the GPU machine's python3 lives elsewhere: scripts/gpu-check.sh sets it).
inline std::string torch_python() {
  const char* p = std::getenv("PALM_TORCH_PYTHON");
  return p && *p ? p : "/usr/bin/python3";
}

// The repository (tools/), where the test binary was built unless PALM_SOURCE_DIR says
// otherwise (binaries carried to another machine).
inline std::string source_dir(const char* built_in) {
  const char* p = std::getenv("PALM_SOURCE_DIR");
  return p && *p ? p : built_in;
}

}  // namespace palm::testing_util
