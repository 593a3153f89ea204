// palm info: parameter counts, FLOPs per token and memory of a configuration, and the
// compute backends and devices of this machine.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "base/check.h"
#include "common.h"
#include "kernels/backend.h"
#include "model/accounting.h"

namespace palm {

namespace {

struct InfoOptions {
  ConfigChoice model;
  std::int64_t seq_len = 0;
  std::int64_t batch_size = 1;
  bool json = false;
};

nlohmann::ordered_json backends_json() {
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (const auto& b : backend_inventory()) {
    nlohmann::ordered_json j{{"name", b.name}, {"usable", b.usable}, {"default", b.usable && b.name == default_backend()}};
    if (!b.usable) j["why_not"] = b.why_not;
    j["devices"] = nlohmann::ordered_json::array();
    for (const auto& d : b.devices)
      j["devices"].push_back({{"name", d.name}, {"memory_bytes", d.memory_bytes}, {"detail", d.detail}});
    all.push_back(j);
  }
  return all;
}

void print_backends() {
  for (const auto& b : backend_inventory()) {
    fmt::print("backend {:<5} {}{}\n", b.name, b.usable ? "usable" : "not usable: " + b.why_not,
               b.usable && b.name == default_backend() ? " (default)" : "");
    for (const auto& d : b.devices) fmt::print("  {}  {}  {}\n", d.name, human_bytes(double(d.memory_bytes)), d.detail);
  }
}

void run_info(const InfoOptions& o) {
  if (o.model.preset.empty() && o.model.config_file.empty()) {  // no model: the machine's backends only
    if (o.json) fmt::print("{}\n", nlohmann::ordered_json{{"backends", backends_json()}}.dump());
    else print_backends();
    return;
  }
  const ModelConfig c = o.model.resolve();
  const std::int64_t T = o.seq_len > 0 ? o.seq_len : c.max_seq_len;
  PALM_CHECK(o.batch_size > 0, "--batch-size must be positive");
  const auto be = make_backend();
  const ModelAccounting a = account(*be, c, o.batch_size, T);
  const double train_bytes = double(a.weight_bytes) + a.gradient_bytes + a.optimizer_bytes +
                             a.activation_bytes;
  if (o.json) {
    nlohmann::ordered_json j;
    j["config"] = nlohmann::json::parse(config_to_json(c));
    j["parameters"] = a.parameters;
    j["embedding_parameters"] = a.embedding_parameters;
    j["non_embedding_parameters"] = a.non_embedding_parameters;
    j["matrix_parameters"] = a.matrix_parameters;
    j["seq_len"] = T;
    j["batch_size"] = o.batch_size;
    j["flops_per_token"] = a.flops_per_token;
    j["kv_cache_bytes_per_token"] = a.kv_cache_bytes_per_token_f32;
    j["kv_cache_bytes_per_token_multi_head"] = a.kv_cache_bytes_per_token_mha_f32;
    j["memory_bytes"] = {{"weights", a.weight_bytes},
                         {"gradients", a.gradient_bytes},
                         {"optimizer", a.optimizer_bytes},
                         {"activations", a.activation_bytes},
                         {"activations_remat", a.activation_bytes_remat},
                         {"training_total", train_bytes}};
    j["backends"] = backends_json();
    fmt::print("{}\n", j.dump());
    return;
  }
  fmt::print("model     V={} D={} L={} H={} K={} F={} max_seq_len={} rope_base={} norm_eps={}\n",
             c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.head_dim, c.d_ff, c.max_seq_len,
             c.rope_base, c.norm_eps);
  fmt::print("parameters            {:>18}  ({})\n", a.parameters, human_count(a.parameters));
  fmt::print("  embedding           {:>18}\n", a.embedding_parameters);
  fmt::print("  non-embedding       {:>18}\n", a.non_embedding_parameters);
  fmt::print("  without LN scales   {:>18}  ({}; PaLM's Table 1 counts these)\n",
             a.matrix_parameters, human_count(a.matrix_parameters));
  fmt::print("train FLOPs/token     {:>18.4e}  (6N + 12 L H K T, T={})\n", a.flops_per_token, T);
  fmt::print("KV cache per token    {:>18}  (fp32; multi-head would need {})\n",
             human_bytes(a.kv_cache_bytes_per_token_f32),
             human_bytes(a.kv_cache_bytes_per_token_mha_f32));
  fmt::print("memory at batch {} x {} tokens (fp32):\n", o.batch_size, T);
  fmt::print("  weights             {:>18}\n", human_bytes(a.weight_bytes));
  fmt::print("  gradients           {:>18}\n", human_bytes(a.gradient_bytes));
  fmt::print("  optimizer (Adafactor, unfactored) {:>4}\n", human_bytes(a.optimizer_bytes));
  fmt::print("  activations         {:>18}  ({} with remat)\n", human_bytes(a.activation_bytes),
             human_bytes(a.activation_bytes_remat));
  fmt::print("  training total      {:>18}\n", human_bytes(train_bytes));
  print_backends();
}

}  // namespace

void register_info(CLI::App& app) {
  auto opts = std::make_shared<InfoOptions>();
  auto* cmd = app.add_subcommand("info", "Parameter counts, FLOPs per token and memory of a model; the compute backends and devices");
  opts->model.add_to(cmd);
  cmd->add_option("--seq-len", opts->seq_len, "Sequence length T (default: max_seq_len)")->check(integer_in(1, 1 << 20));
  cmd->add_option("--batch-size", opts->batch_size, "Batch size for the activation memory")
      ->capture_default_str();
  cmd->add_flag("--json", opts->json, "Print one JSON object");
  cmd->callback([opts] { run_info(*opts); });
}

}  // namespace palm
