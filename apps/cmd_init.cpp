// palm init: a freshly initialized model as safetensors.
#include <fmt/format.h>

#include "base/threads.h"
#include "common.h"
#include "model/model_io.h"
#include "model/params.h"

namespace palm {

namespace {

struct InitOptions {
  ConfigChoice model;
  std::uint64_t seed = 0;
  std::string out;
  int threads = 0;
};

void run_init(const InitOptions& o) {
  set_threads(o.threads);
  const ModelConfig c = o.model.resolve();
  Weights w(c);
  init_weights(w, o.seed);
  save_model(o.out, w);
  fmt::print(stderr, "wrote {} ({} parameters, seed {})\n", o.out, param_count(c), o.seed);
}

}  // namespace

void register_init(CLI::App& app) {
  auto opts = std::make_shared<InitOptions>();
  auto* cmd = app.add_subcommand("init", "Write a freshly initialized model (safetensors)");
  opts->model.add_to(cmd);
  cmd->add_option("--seed", opts->seed, "Initialization seed")->capture_default_str();
  cmd->add_option("--out", opts->out, "Output .safetensors file")->required();
  cmd->add_option("--threads", opts->threads, "Threads (default: all cores)");
  cmd->callback([opts] { run_init(*opts); });
}

}  // namespace palm
