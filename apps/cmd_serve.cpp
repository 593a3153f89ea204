// palm serve: the OpenAI-compatible HTTP server (src/serve over src/infer/engine).
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "base/check.h"
#include "base/file_util.h"
#include "base/threads.h"
#include "base/signals.h"
#include "common.h"
#include "infer/engine.h"
#include "kernels/backend.h"
#include "model/decode.h"
#include "model/model_io.h"
#include "serve/server.h"
#include "tokenizer/tokenizer.h"

namespace palm {

namespace {

struct ServeCli {
  std::string model, tokenizer, weights = "fp32", kv_cache = "auto";
  ServeOptions o;
  std::int64_t max_batch = 16, max_queue = 64;
  int threads = 0;
  std::string api_key_file;
};

void run(ServeCli& c) {
  // first, before any thread exists (OpenMP's workers start with --weights bf16/int8):
  // SIGTERM / SIGINT are taken by one watcher thread, blocked everywhere else
  std::mutex serving_mu;  // the watcher never calls a server that is being destroyed
  Server* serving = nullptr;
  std::atomic<int> early_signal{0};
  const StopSignals stop_signals([&](int sig) {
    std::lock_guard<std::mutex> lock(serving_mu);
    Server* s = serving;
    if (!s) {
      early_signal = sig;
      return;
    }
    fmt::print(stderr, "palm serve: {} received: not accepting; finishing in-flight requests (at most {:.0f} s)\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT", c.o.grace_seconds);
    s->stop();
  });
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up is a failed write, not a dead server
  set_threads(c.threads);
  c.o.api_key = resolve_api_key(c.o.api_key, c.api_key_file);
  PALM_CHECK(c.max_batch > 0 && c.max_batch <= 256, "--max-batch must be in [1, 256]");
  PALM_CHECK(c.max_queue >= 0 && c.max_queue <= 4096, "--max-queue must be in [0, 4096]");
  PALM_CHECK(c.o.port >= 0 && c.o.port <= 65535, "--port must be in [0, 65535]");
  const ModelAndTokenizer loaded = load_model_and_tokenizer(c.model, c.tokenizer);
  const auto& tok = loaded.tokenizer;
  const auto& w = loaded.weights;
  if (c.o.model_name.empty()) {
    namespace fs = std::filesystem;
    const fs::path p = fs::absolute(c.model).lexically_normal();
    c.o.model_name = fs::is_directory(p) ? (p.filename().empty() ? p.parent_path().filename() : p.filename()).string()
                                         : p.stem().string();
  }
  if (c.o.run_dirs.empty()) {  // no --runs: the model's own run, when it comes from one
    namespace fs = std::filesystem;
    const fs::path m = fs::absolute(c.model).lexically_normal();
    for (const fs::path& run : {m, m.parent_path().parent_path()})  // RUN, or RUN/checkpoints/step-N
      if (fs::is_regular_file(run / "metrics.jsonl")) {
        c.o.run_dirs = {run.string()};
        break;
      }
  }
  Backend* const be = loaded.backend.get();  // the weights' memory is this backend's: compute there too
  const WeightFormat format = parse_weight_format(c.weights);
  std::unique_ptr<DecodeWeights> stored_weights;
  if (format != WeightFormat::kF32) stored_weights = std::make_unique<DecodeWeights>(*be, *w, format);

  if (early_signal) {
    fmt::print(stderr, "palm serve: signal {} received while loading: stopped\n", int(early_signal));
    return;
  }

  Engine engine(*be, *w, c.max_batch, c.max_queue, stored_weights.get(), parse_kv_format(c.kv_cache, format));
  Server server(engine, *tok, w->config, c.o);
  server.bind();
  {
    std::lock_guard<std::mutex> lock(serving_mu);
    serving = &server;
  }
  if (early_signal) server.stop();  // arrived between the check above and now
  server.listen();
  {
    std::lock_guard<std::mutex> lock(serving_mu);
    serving = nullptr;
  }
  fmt::print(stderr, "palm serve: stopped\n");
}

}  // namespace

void register_serve(CLI::App& app) {
  auto c = std::make_shared<ServeCli>();
  c->o.model_name.clear();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  cmd->add_option("--model", c->model, "Model: safetensors file, checkpoint directory or run directory")->required();
  cmd->add_option("--tokenizer", c->tokenizer, "Tokenizer directory (default: the one stored with the model)");
  cmd->add_option("--host", c->o.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", c->o.port, "Port (0: any free port, printed)")->capture_default_str();
  cmd->add_option("--max-batch", c->max_batch, "Sequences decoded together")->capture_default_str();
  cmd->add_option("--max-queue", c->max_queue, "Requests waiting for a batch slot before 429")->capture_default_str();
  auto* key = cmd->add_option("--api-key", c->o.api_key,
                              "Require 'Authorization: Bearer KEY' (visible to other users in the process list: "
                              "prefer --api-key-file or PALM_API_KEY)");
  cmd->add_option("--api-key-file", c->api_key_file, "Read the API key from the first line of this file")->excludes(key);
  cmd->add_option("--runs", c->o.run_dirs,
                  "Directories whose training runs the /runs page shows (each a run, or holding runs below it; "
                  "default: the model's own run)")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--model-name", c->o.model_name, "The model id clients send (default: the run or file name)");
  cmd->add_option("--weights", c->weights, "Decode weights: fp32, bf16 or int8")->capture_default_str();
  cmd->add_option("--kv-cache", c->kv_cache, "KV cache elements: fp32, bf16, or auto (bf16 with bf16/int8 weights)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  cmd->add_option("--max-body", c->o.max_body_bytes, "Largest request body in bytes (413 above)")
      ->capture_default_str()
      ->check(integer_in(1, std::int64_t(1) << 30));
  cmd->add_option("--max-connections", c->o.max_connections, "Open connections; more are answered 503 at once")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd->add_option("--grace", c->o.grace_seconds, "Seconds in-flight requests get on SIGTERM")->capture_default_str()->check(finite_in(0, 3600));
  cmd->add_flag("--quiet", [c](std::int64_t) { c->o.log = false; }, "No per-request log lines");
  cmd->add_option("--threads", c->threads, "Compute threads (default: all cores)");
  cmd->callback([c] { run(*c); });
}

}  // namespace palm
