#include "model/config.h"

#include <map>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"

namespace palm {

void validate(const ModelConfig& c) {
  auto positive = [](const char* name, std::int64_t v) {
    PALM_CHECK(v > 0, "config: ", name, " must be positive, got ", v);
  };
  positive("vocab_size", c.vocab_size);
  positive("d_model", c.d_model);
  positive("n_layers", c.n_layers);
  positive("n_heads", c.n_heads);
  positive("head_dim", c.head_dim);
  positive("d_ff", c.d_ff);
  positive("max_seq_len", c.max_seq_len);
  PALM_CHECK(c.head_dim % 2 == 0, "config: head_dim must be even (RoPE rotates pairs), got ",
             c.head_dim);
  PALM_CHECK(c.head_dim <= 1024, "config: head_dim must be at most 1024, got ", c.head_dim);
  // bounds far above any PaLM (540B: D 18432, L 118, H 48, F 73728, T 2048) that keep
  // every size product far from overflow and refuse a corrupt file before allocating
  auto at_most = [](const char* name, std::int64_t v, std::int64_t hi) {
    PALM_CHECK(v <= hi, "config: ", name, " must be at most ", hi, ", got ", v);
  };
  at_most("d_model", c.d_model, std::int64_t(1) << 17);
  at_most("n_layers", c.n_layers, 4096);
  at_most("n_heads", c.n_heads, 4096);
  at_most("d_ff", c.d_ff, std::int64_t(1) << 20);
  at_most("max_seq_len", c.max_seq_len, std::int64_t(1) << 20);
  PALM_CHECK(c.vocab_size <= (std::int64_t(1) << 31) - 1, "config: vocab_size too large: ",
             c.vocab_size);
  PALM_CHECK(c.rope_base > 1.0, "config: rope_base must be > 1, got ", c.rope_base);
  PALM_CHECK(c.norm_eps > 0.0 && c.norm_eps < 1.0, "config: norm_eps must be in (0, 1), got ",
             c.norm_eps);
  const double params = double(c.vocab_size) * c.d_model +
                        double(c.n_layers) * c.d_model * (2.0 * c.fused_in_dim());
  PALM_CHECK(params < 1e13, "config: absurd size (", params, " parameters)");
}

std::string config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["vocab_size"] = c.vocab_size;
  j["d_model"] = c.d_model;
  j["n_layers"] = c.n_layers;
  j["n_heads"] = c.n_heads;
  j["head_dim"] = c.head_dim;
  j["d_ff"] = c.d_ff;
  j["max_seq_len"] = c.max_seq_len;
  j["rope_base"] = c.rope_base;
  j["norm_eps"] = c.norm_eps;
  return j.dump();
}

std::string config_differences(const ModelConfig& a, const ModelConfig& b) {
  const auto ja = nlohmann::ordered_json::parse(config_to_json(a));
  const auto jb = nlohmann::ordered_json::parse(config_to_json(b));
  std::string r;
  for (const auto& [key, value] : ja.items())
    if (value != jb[key]) r += (r.empty() ? "" : ", ") + key + " " + value.dump() + " vs " + jb[key].dump();
  return r;
}

ModelConfig config_from_json(const std::string& text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(str_cat(where, ": config is not valid JSON: ", e.what()));
  }
  PALM_CHECK(j.is_object(), where, ": config must be a JSON object");
  ModelConfig c;
  auto get_int = [&](const char* name, std::int64_t& out, bool required) {
    if (!j.contains(name)) {
      PALM_CHECK(!required, where, ": config lacks the field '", name, "'");
      return;
    }
    const auto& v = j[name];
    PALM_CHECK(v.is_number_integer(), where, ": config field '", name,
               "' must be an integer, got ", v.dump());
    out = v.get<std::int64_t>();
  };
  auto get_num = [&](const char* name, double& out) {
    if (!j.contains(name)) return;
    const auto& v = j[name];
    PALM_CHECK(v.is_number(), where, ": config field '", name, "' must be a number, got ",
               v.dump());
    out = v.get<double>();
  };
  static const char* known[] = {"vocab_size", "d_model", "n_layers",  "n_heads",  "head_dim",
                                "d_ff",       "max_seq_len", "rope_base", "norm_eps"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* k : known) ok = ok || it.key() == k;
    PALM_CHECK(ok, where, ": unknown config field '", it.key(), "'");
  }
  get_int("vocab_size", c.vocab_size, true);
  get_int("d_model", c.d_model, true);
  get_int("n_layers", c.n_layers, true);
  get_int("n_heads", c.n_heads, true);
  get_int("head_dim", c.head_dim, true);
  get_int("d_ff", c.d_ff, true);
  get_int("max_seq_len", c.max_seq_len, true);
  get_num("rope_base", c.rope_base);
  get_num("norm_eps", c.norm_eps);
  try {
    validate(c);
  } catch (const Error& e) {
    fail(str_cat(where, ": ", e.what()));
  }
  return c;
}

ModelConfig load_config_file(const std::string& path) {
  return config_from_json(read_file(path), path);
}

namespace {

ModelConfig make(std::int64_t V, std::int64_t D, std::int64_t L, std::int64_t H, std::int64_t K,
                 std::int64_t F, std::int64_t T) {
  ModelConfig c;
  c.vocab_size = V;
  c.d_model = D;
  c.n_layers = L;
  c.n_heads = H;
  c.head_dim = K;
  c.d_ff = F;
  c.max_seq_len = T;
  return c;
}

// PaLM Table 1: head_dim 256, d_ff = 4 d_model, vocab 256k, sequence 2048.
const std::map<std::string, ModelConfig>& presets() {
  static const std::map<std::string, ModelConfig> p = {
      {"palm-8b", make(256000, 4096, 32, 16, 256, 4 * 4096, 2048)},
      {"palm-62b", make(256000, 8192, 64, 32, 256, 4 * 8192, 2048)},
      {"palm-540b", make(256000, 18432, 118, 48, 256, 4 * 18432, 2048)},
      {"bench-small", make(32000, 512, 8, 8, 64, 2048, 1024)},
      {"bench-medium", make(32000, 1024, 12, 16, 64, 4096, 1024)},
      // the GPU benchmark's ~1B PaLM (1.5B with its 4 d_model MLP): d 2048, 24 layers, 16 heads of 128
      {"bench-1b", make(32000, 2048, 24, 16, 128, 4 * 2048, 2048)},
      {"tiny", make(512, 64, 2, 4, 16, 256, 256)},
      {"small", make(8192, 256, 4, 4, 64, 1024, 512)},
  };
  return p;
}

}  // namespace

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& [k, v] : presets()) n.push_back(k);
    return n;
  }();
  return names;
}

ModelConfig preset(const std::string& name) {
  const auto it = presets().find(name);
  if (it == presets().end()) {
    std::string all;
    for (const auto& n : preset_names()) all += (all.empty() ? "" : ", ") + n;
    fail(str_cat("unknown preset '", name, "' (presets: ", all, ")"));
  }
  return it->second;
}

}  // namespace palm
