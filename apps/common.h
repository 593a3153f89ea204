// Helpers shared by the subcommands: model selection options and number formatting.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "tokenizer/tokenizer.h"

#include <memory>

namespace palm {

// --preset NAME | --config FILE.json (exactly one).
struct ConfigChoice {
  std::string preset;
  std::string config_file;
  void add_to(CLI::App* cmd);
  ModelConfig resolve() const;
};

// The config stored in a weights file (safetensors path). A config given as well
// (--preset/--config, named by given_as) must agree with it in every field but the
// vocabulary size (which the tokenizer decides and is checked against it), or it is an
// error naming the fields.
ModelConfig check_weights_config(const std::string& weights, const ModelConfig* given, const std::string& given_as);

// --model accepts a safetensors file, a checkpoint directory or a run directory (its
// newest checkpoint). Returns the safetensors path; *tokenizer_dir gets the tokenizer
// stored with the checkpoint ("" for a bare file).
std::string resolve_model(const std::string& path, std::string* tokenizer_dir = nullptr);

// A model and the tokenizer it was made with (--tokenizer, or the one stored with the
// run), checked against each other: the tokenizer hash recorded in the model and the
// vocabulary size.
struct ModelAndTokenizer {
  std::string path, tokenizer_dir;
  std::unique_ptr<Backend> backend;  // holds the weights' memory: declared first, destroyed last
  std::unique_ptr<Weights> weights;
  std::unique_ptr<Tokenizer> tokenizer;
};
// `backend`: "" for the process's default (--backend).
ModelAndTokenizer load_model_and_tokenizer(const std::string& model, const std::string& tokenizer_override,
                                           const std::string& backend = "");

// CLI11 validators for numbers that must be finite and in [lo, hi] (CLI::Range lets a
// NaN through: every comparison with it is false).
CLI::Validator finite_in(double lo, double hi);
CLI::Validator integer_in(std::int64_t lo, std::int64_t hi);

// The API key of a server: --api-key, else the first line of --api-key-file, else
// $PALM_API_KEY, else none ("").
std::string resolve_api_key(const std::string& key, const std::string& key_file);

std::string human_bytes(double bytes);
std::string human_count(double n);  // 8.63B, 62.50B, ...
std::string preset_list();
std::string palm_version_string();

// The GEMM rate this machine reaches (FLOP/s): best of three runs of a 2048^3 product,
// fp32 (oneDNN sgemm) or, with a backend, its bf16 GEMM. (bench/bench_train.cpp)
class Backend;
double measure_gemm_peak(Backend* bf16_backend = nullptr, double seconds_per_run = 1.0);
// The same on any backend's own memory (an accelerator's): n^3, fp32 gemm or gemm_bf16.
double measure_backend_gemm_peak(Backend& be, bool bf16, std::int64_t n, double seconds_per_run = 1.0);  // "palm 0.x.y (commit)"
// One fp32 2048^3 sgemm on matrices kept between calls: a sample of that rate cheap enough
// (~0.1 s) to take beside every timed unit of a benchmark. seconds() runs it once.
class SgemmSample {
 public:
  SgemmSample();
  double flops() const;
  double seconds();

 private:
  std::vector<float> a_, b_, c_;
};

// Registration of each subcommand (one file each).
void register_info(CLI::App& app);
void register_init(CLI::App& app);
void register_score(CLI::App& app);
void register_bench(CLI::App& app);
void register_tokenizer(CLI::App& app);
void register_data(CLI::App& app);
void register_train(CLI::App& app);
void register_generate(CLI::App& app);
void register_eval(CLI::App& app);
void register_card(CLI::App& app);
void register_serve(CLI::App& app);
void register_dashboard(CLI::App& app);
void register_export(CLI::App& app);
void register_launch(CLI::App& app);

// MODEL_CARD.md, DATASHEET.md and card.json for a run (apps/cmd_card.cpp); `palm train`
// calls it when a run completes.
void write_model_card(const std::string& run, const std::string& info, const std::string& out_dir, bool print_json,
                      bool measure_peak);
void register_bench_tokenizer(CLI::App& bench);
void register_bench_generate(CLI::App& bench);
void register_bench_serve(CLI::App& bench);
void register_bench_comm(CLI::App& bench);

}  // namespace palm
