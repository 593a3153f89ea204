// palm score: log-probability of each token given its prefix.
#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/check.h"
#include "base/file_util.h"
#include "base/threads.h"
#include "common.h"
#include "kernels/backend.h"
#include "infer/score.h"
#include "model/model.h"
#include "model/model_io.h"
#include "tokenizer/tokenizer.h"

namespace palm {

namespace {

struct ScoreOptions {
  std::string model;
  std::string tokens;
  std::string tokens_file;
  std::string tokenizer;
  std::string text;
  bool json = false;
  int threads = 0;
};

std::vector<std::int32_t> parse_tokens(const std::string& text, const std::string& where) {
  std::vector<std::int32_t> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    PALM_CHECK(used == word.size(), where, ": '", word, "' is not a token id");
    PALM_CHECK(v >= 0 && v <= 0x7fffffff, where, ": token id ", word, " is out of range");
    ids.push_back(static_cast<std::int32_t>(v));
  }
  return ids;
}

void run_score(const ScoreOptions& o) {
  set_threads(o.threads);
  PALM_CHECK(int(!o.tokens.empty()) + int(!o.tokens_file.empty()) + int(!o.text.empty()) == 1,
             "give exactly one of --tokens, --tokens-file and --text");
  std::string stored_tokenizer;
  const std::string model_path = resolve_model(o.model, &stored_tokenizer);
  const std::string tokenizer = o.tokenizer.empty() ? stored_tokenizer : o.tokenizer;
  PALM_CHECK(o.text.empty() || !tokenizer.empty(), "--text needs --tokenizer DIR (or a run/checkpoint that stores one)");
  const auto be = make_backend();  // declared before the weights: outlives their memory
  const auto w = load_model(*be, model_path);
  const ModelConfig& c = w->config;
  std::vector<std::int32_t> seq;
  if (!o.text.empty()) {
    const auto tok = Tokenizer::load(tokenizer);
    const auto meta = read_model_metadata(model_path);
    const auto it = meta.find(kTokenizerShaKey);
    PALM_CHECK(it == meta.end() || it->second == tok->sha256(), o.model, " was made for the tokenizer with sha256 ",
               it->second, ", not ", tokenizer, " (sha256 ", tok->sha256(), ")");
    PALM_CHECK(tok->vocab_size() == c.vocab_size, tokenizer, " has ", tok->vocab_size(),
               " tokens but the model's vocabulary is ", c.vocab_size);
    seq = tok->encode(o.text);
  } else {
    seq = o.tokens_file.empty() ? parse_tokens(o.tokens, "--tokens")
                                : parse_tokens(read_file(o.tokens_file), o.tokens_file);
  }
  const std::vector<double> logprobs = token_logprobs(*be, *w, seq);
  const std::int64_t T = std::int64_t(logprobs.size());
  LossStats s;
  for (double lp : logprobs) s.loss -= lp / double(T);
  if (o.json) {
    nlohmann::ordered_json j;
    j["logprobs"] = logprobs;
    j["mean_nll"] = s.loss;
    fmt::print("{}\n", j.dump());
    return;
  }
  fmt::print("{:>6} {:>8} {:>12}\n", "pos", "token", "logprob");
  for (std::int64_t t = 0; t < T; ++t) fmt::print("{:>6} {:>8} {:>12.6f}\n", t + 1, seq[t + 1], logprobs[t]);
  fmt::print("mean_nll {:.6f}  perplexity {:.4f}\n", s.loss, std::exp(s.loss));
}

}  // namespace

void register_score(CLI::App& app) {
  auto opts = std::make_shared<ScoreOptions>();
  auto* cmd = app.add_subcommand(
      "score", "Log-probability of each token given its prefix (tokens 2..n; the first has no prefix)");
  cmd->add_option("--model", opts->model, "Model: safetensors file, checkpoint directory or run directory")->required();
  cmd->add_option("--tokens", opts->tokens, "Token ids separated by spaces, e.g. \"5 17 3\"");
  cmd->add_option("--tokens-file", opts->tokens_file, "File of whitespace-separated token ids");
  cmd->add_option("--tokenizer", opts->tokenizer, "Tokenizer directory (for --text)");
  cmd->add_option("--text", opts->text, "Text to score (tokenized with --tokenizer)");
  cmd->add_flag("--json", opts->json, "Print {\"logprobs\": [...], \"mean_nll\": x}");
  cmd->add_option("--threads", opts->threads, "Threads (default: all cores)");
  cmd->callback([opts] { run_score(*opts); });
}

}  // namespace palm
