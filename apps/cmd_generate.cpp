// palm generate: text from a trained model through the KV-cache engine (src/infer).
#include <fmt/format.h>

#include <limits>

#include <fstream>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/threads.h"
#include "base/utf8.h"
#include "common.h"
#include "infer/generate.h"
#include "infer/stop.h"
#include "kernels/backend.h"
#include "model/decode.h"
#include "model/model_io.h"
#include "tokenizer/tokenizer.h"

namespace palm {

namespace {

struct GenerateCli {
  std::string model, tokenizer, prompt, prompts_file, truncate, weights = "fp32", kv_cache = "auto";
  std::int64_t max_tokens = 64, num_samples = 1, max_batch = 16;
  SamplingOptions sampling;
  std::vector<std::string> stop;
  bool json = false;
  int threads = 0;
};

void run_generate(const GenerateCli& o) {
  set_threads(o.threads);
  PALM_CHECK(o.prompt.empty() != o.prompts_file.empty(), "give exactly one of --prompt and --prompts-file");
  PALM_CHECK(o.num_samples > 0 && o.max_batch > 0, "--num-samples and --max-batch must be positive");
  PALM_CHECK(o.truncate.empty() || o.truncate == "left", "--truncate accepts only 'left'");
  validate(o.sampling);
  const ModelAndTokenizer loaded = load_model_and_tokenizer(o.model, o.tokenizer);
  const auto& tok = loaded.tokenizer;
  const auto& w = loaded.weights;
  const ModelConfig& c = w->config;

  std::vector<std::string> prompts;
  if (!o.prompt.empty()) {
    prompts.push_back(o.prompt);
  } else {
    std::ifstream in(o.prompts_file);
    PALM_CHECK(in.good(), o.prompts_file, ": cannot open");
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line, nullptr, false);
      PALM_CHECK(!j.is_discarded() && ((j.is_object() && j.contains("prompt") && j["prompt"].is_string()) || j.is_string()),
                 o.prompts_file, ":", n, ": expected {\"prompt\": \"...\"} or a JSON string");
      prompts.push_back(j.is_string() ? j.get<std::string>() : j["prompt"].get<std::string>());
    }
    PALM_CHECK(!prompts.empty(), o.prompts_file, ": no prompts");
  }
  std::vector<GenerationRequest> reqs;
  std::vector<std::size_t> prompt_of;
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    std::vector<std::int32_t> ids = tok->encode(prompts[p]);
    PALM_CHECK(!ids.empty(), "prompt ", p, " is empty");
    const std::int64_t room = c.max_seq_len - 1;
    if (std::int64_t(ids.size()) > room) {
      PALM_CHECK(o.truncate == "left", "prompt ", p, " has ", ids.size(), " tokens; the context holds ", c.max_seq_len,
                 " (use --truncate left to keep its end)");
      ids.erase(ids.begin(), ids.end() - room);
    }
    for (std::int64_t s = 0; s < o.num_samples; ++s) {
      GenerationRequest r;
      r.prompt = ids;
      r.max_tokens = o.max_tokens;
      r.sampling = o.sampling;
      r.stream = p * 1000003ull + std::uint64_t(s);
      reqs.push_back(r);
      prompt_of.push_back(p);
    }
  }
  const StopMatcher stops(o.stop);
  const bool stream_out = !o.json && reqs.size() == 1;
  std::vector<std::string> text(reqs.size());
  std::size_t printed = 0;
  auto on_token = [&](std::size_t r, std::int32_t token) {
    const std::size_t grown_from = text[r].size();
    text[r] += tok->decode({token});
    const std::size_t cut = stops.find(text[r], grown_from);
    const bool stop = cut != std::string::npos;
    if (stop) text[r].resize(cut);  // the stop string is not part of the output
    if (stream_out) {
      // hold back what could still become a stop string, and split characters
      std::size_t upto = stop ? text[r].size() : (text[r].size() > stops.hold_back() ? text[r].size() - stops.hold_back() : 0);
      upto = std::max(upto, printed);
      upto = printed + utf8_complete_prefix(std::string_view(text[r]).substr(printed, upto - printed));
      std::fwrite(text[r].data() + printed, 1, upto - printed, stdout);
      std::fflush(stdout);
      printed = upto;
    }
    return stop;
  };
  Backend* const be = loaded.backend.get();  // the weights' memory is this backend's: compute there too
  const WeightFormat format = parse_weight_format(o.weights);
  std::unique_ptr<DecodeWeights> stored_weights;
  if (format != WeightFormat::kF32) stored_weights = std::make_unique<DecodeWeights>(*be, *w, format);
  GenerationStats st;
  const auto results = generate(*be, *w, reqs, o.max_batch, on_token, &st, stored_weights.get(),
                                 parse_kv_format(o.kv_cache, format));
  if (stream_out) {
    std::fwrite(text[0].data() + printed, 1, text[0].size() - printed, stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  if (!stream_out) {
    for (std::size_t r = 0; r < results.size(); ++r) {
      if (o.json) {
        nlohmann::ordered_json j;
        if (prompts.size() > 1 || o.num_samples > 1) j["index"] = prompt_of[r];
        j["prompt_tokens"] = reqs[r].prompt;
        j["tokens"] = results[r].tokens;
        j["logprobs"] = results[r].logprobs;
        j["text"] = text[r];  // a character cut by max_tokens is replaced (U+FFFD) when dumped
        j["finish_reason"] = results[r].finish_reason;
        fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      } else {
        fmt::print("--- prompt {} sample {}\n{}\n", prompt_of[r], r % std::size_t(o.num_samples), text[r]);
      }
    }
  }
  fmt::print(stderr, "prefill {} tokens at {:.1f} tokens/s; decode {} tokens at {:.1f} tokens/s\n", st.prefill_tokens,
             st.prefill_tokens / std::max(st.prefill_seconds, 1e-9), st.decode_tokens,
             st.decode_tokens / std::max(st.decode_seconds, 1e-9));
}

}  // namespace

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateCli>();
  auto* cmd = app.add_subcommand("generate", "Generate text with the KV-cache engine (greedy or sampled)");
  cmd->add_option("--model", o->model, "Safetensors file, checkpoint directory or run directory")->required();
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer directory (default: the one stored with the run)");
  cmd->add_option("--prompt", o->prompt, "Prompt text (output streams to stdout)");
  cmd->add_option("--prompts-file", o->prompts_file, "JSONL of {\"prompt\": ...}: batched, JSONL out with --json");
  cmd->add_option("--max-tokens", o->max_tokens, "Tokens to generate at most")->capture_default_str();
  cmd->add_option("--temperature", o->sampling.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "Sample from the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass (1 = off)")->capture_default_str();
  cmd->add_option("--seed", o->sampling.seed, "Sampling seed")->capture_default_str()->check(integer_in(0, std::numeric_limits<std::int64_t>::max()));
  cmd->add_option("--stop", o->stop, "Stop at this string (repeatable; not included in the output)");
  cmd->add_option("--num-samples", o->num_samples, "Samples per prompt")->capture_default_str();
  cmd->add_option("--max-batch", o->max_batch, "Sequences decoded together")->capture_default_str();
  cmd->add_option("--truncate", o->truncate, "'left': keep the end of a prompt longer than the context");
  cmd->add_option("--weights", o->weights, "Decode with fp32, bf16 or int8 (per-row scales) weight storage")
      ->capture_default_str();
  cmd->add_option("--kv-cache", o->kv_cache, "KV cache elements: fp32, bf16, or auto (bf16 with bf16/int8 weights)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  cmd->add_flag("--json", o->json, "One JSON object per result: prompt_tokens, tokens, logprobs, text, finish_reason");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace palm
