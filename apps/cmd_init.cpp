// palm init: a freshly initialized model as safetensors.
#include <fmt/format.h>

#include <limits>

#include "base/threads.h"
#include "common.h"
#include "model/model_io.h"
#include "model/params.h"
#include "tokenizer/tokenizer.h"

namespace palm {

namespace {

struct InitOptions {
  ConfigChoice model;
  std::uint64_t seed = 0;
  std::string out;
  std::string tokenizer;
  int threads = 0;
};

void run_init(const InitOptions& o) {
  set_threads(o.threads);
  ModelConfig c = o.model.resolve();
  std::map<std::string, std::string> meta;
  if (!o.tokenizer.empty()) {  // the vocabulary comes from the tokenizer
    const auto tok = Tokenizer::load(o.tokenizer);
    c.vocab_size = tok->vocab_size();
    meta[kTokenizerShaKey] = tok->sha256();
  }
  Backend& be = process_backend();
  Weights w(be, c);
  init_weights(be, w, o.seed);
  save_model(o.out, w, meta);
  fmt::print(stderr, "wrote {} ({} parameters, seed {})\n", o.out, param_count(c), o.seed);
}

}  // namespace

void register_init(CLI::App& app) {
  auto opts = std::make_shared<InitOptions>();
  auto* cmd = app.add_subcommand("init", "Write a freshly initialized model (safetensors)");
  opts->model.add_to(cmd);
  cmd->add_option("--seed", opts->seed, "Initialization seed")->capture_default_str()->check(integer_in(0, std::numeric_limits<std::int64_t>::max()));
  cmd->add_option("--out", opts->out, "Output .safetensors file")->required();
  cmd->add_option("--tokenizer", opts->tokenizer,
                  "Tokenizer directory: its vocab size replaces the preset's; its sha256 is recorded");
  cmd->add_option("--threads", opts->threads, "Threads (default: all cores)");
  cmd->callback([opts] { run_init(*opts); });
}

}  // namespace palm
