// The model configuration (docs/model.md) and its presets.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace palm {

struct ModelConfig {
  std::int64_t vocab_size = 0;   // V
  std::int64_t d_model = 0;      // D
  std::int64_t n_layers = 0;     // L
  std::int64_t n_heads = 0;      // H query heads (one shared K/V head)
  std::int64_t head_dim = 0;     // K, even (RoPE pairs)
  std::int64_t d_ff = 0;         // F, SwiGLU hidden units
  std::int64_t max_seq_len = 0;  // longest sequence
  double rope_base = 10000.0;
  double norm_eps = 1e-6;

  // Columns of the fused input projection: q (H*K) | k (K) | v (K) | gate (F) | up (F).
  std::int64_t fused_in_dim() const { return n_heads * head_dim + 2 * head_dim + 2 * d_ff; }
  bool operator==(const ModelConfig&) const = default;
};

// Throws Error naming the first invalid field.
void validate(const ModelConfig& c);

std::string config_to_json(const ModelConfig& c);  // the field names of docs/model.md
ModelConfig config_from_json(const std::string& json, const std::string& where);
ModelConfig load_config_file(const std::string& path);
// "d_model 256 vs 512, n_layers 2 vs 4" for the fields where a and b differ; "" when equal.
std::string config_differences(const ModelConfig& a, const ModelConfig& b);

const std::vector<std::string>& preset_names();
ModelConfig preset(const std::string& name);  // throws Error listing the presets

}  // namespace palm
