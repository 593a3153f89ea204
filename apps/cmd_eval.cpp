// palm eval: PaLM's evaluation tasks against a model, or given completions (src/eval).
#include <fmt/format.h>

#include <limits>

#include <filesystem>

#include "base/check.h"
#include "base/file_util.h"
#include "base/sha256.h"
#include "base/threads.h"
#include "common.h"
#include "eval/evaluate.h"
#include "kernels/backend.h"
#include "model/model_io.h"

namespace palm {

namespace {

namespace fs = std::filesystem;

struct EvalCli {
  EvalOptions eval;
  std::string model, tokenizer, out;
  bool no_cot = false, json = false;
  int threads = 0;
};

void run(EvalCli& o) {
  set_threads(o.threads);
  o.eval.task.cot = !o.no_cot;
  o.eval.palm_version = palm_version_string();
  ModelAndTokenizer loaded;
  std::unique_ptr<EvalModel> m;
  if (!o.model.empty()) {
    loaded = load_model_and_tokenizer(o.model, o.tokenizer);
    m = std::make_unique<EvalModel>(EvalModel{loaded.backend.get(), loaded.weights.get(), loaded.tokenizer.get()});
    o.eval.model_path = loaded.path;
    o.eval.model_sha256 = sha256_file(loaded.path);
  }
  const auto res = run_eval(o.eval, m.get());
  const std::string text = res.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (!o.out.empty()) {
    if (fs::path(o.out).has_parent_path()) fs::create_directories(fs::path(o.out).parent_path());
    write_text_atomic(o.out, text);
  }
  // A run directory keeps its results (RUN/eval/TASK-DATA.json): its model card reports them.
  if (!o.model.empty() && fs::exists(fs::path(o.model) / "config.json")) {
    const fs::path kept = fs::path(o.model) / "eval" / (o.eval.task.name + "-" + fs::path(o.eval.task.data).stem().string() + ".json");
    fs::create_directories(kept.parent_path());
    write_text_atomic(kept.string(), text);
    if (!o.json) fmt::print(stderr, "results kept in {}\n", kept.string());
  }
  if (o.json) {
    fmt::print("{}", text);
    return;
  }
  fmt::print("{:<12} {:<16} {:>10} {:>6}\n", "task", "metric", "value", "n");
  for (const auto& k : metric_keys(res)) {
    fmt::print("{:<12} {:<16} {:>10.4f} {:>6}\n", res["task"].get<std::string>(), k, res[k].get<double>(),
               res.contains("n") ? res["n"].dump() : res["tokens"].dump());
    if (res.contains("contamination") && res["contamination"]["clean"].contains(k))
      fmt::print("{:<12} {:<16} {:>10.4f} {:>6}\n", "  clean", k, res["contamination"]["clean"][k].get<double>(),
                 res["contamination"]["clean"]["n"].dump());
  }
  if (res.contains("prompts_truncated_left") && res["prompts_truncated_left"].get<std::int64_t>() > 0)
    fmt::print(stderr, "note: {} prompts were longer than the context and kept their end\n",
               res["prompts_truncated_left"].get<std::int64_t>());
}

}  // namespace

void register_eval(CLI::App& app) {
  auto o = std::make_shared<EvalCli>();
  auto* cmd = app.add_subcommand("eval", "Evaluate a model on a task (few-shot, chain-of-thought, code execution)");
  cmd->add_option("--model", o->model, "Model: safetensors file, checkpoint directory or run directory");
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer directory (default: the one stored with the model)");
  cmd->add_option("--task", o->eval.task.name, "mc | piqa | bbh | gsm8k | humaneval | mbpp | perplexity")->required();
  cmd->add_option("--data", o->eval.task.data, "Evaluation file in the task's public format")->required();
  cmd->add_option("--labels", o->eval.task.labels, "piqa: labels file (one 0/1 per line)");
  cmd->add_option("--shots", o->eval.task.shots, "Few-shot exemplars (default: gsm8k 8, mbpp 3, others 0)");
  cmd->add_option("--cot-prompts", o->eval.task.cot_prompts,
                  "bbh: chain-of-thought prompt file; gsm8k: exemplar JSONL (default train.jsonl beside --data); "
                  "mbpp: prompt split (default mbpp_prompt.jsonl beside --data)");
  cmd->add_flag("--no-cot", o->no_cot, "gsm8k: exemplars give only the answer (no chain of thought)");
  cmd->add_option("--num-samples", o->eval.num_samples, "Completions per example (pass@k needs n >= k)");
  cmd->add_option("--temperature", o->eval.temperature,
                  "Sampling temperature (default: greedy; code with n > 1: 0.8 with top-p 0.95)");
  cmd->add_option("--top-p", o->eval.top_p, "Nucleus sampling threshold");
  cmd->add_option("--limit", o->eval.task.limit, "Evaluate only the first N examples");
  cmd->add_option("--seed", o->eval.seed, "Sampling seed")->check(integer_in(0, std::numeric_limits<std::int64_t>::max()));
  cmd->add_option("--completions", o->eval.completions,
                  "Score these completions (JSONL {\"task_id\", \"completion\"}) instead of a model's");
  cmd->add_option("--contamination", o->eval.contamination,
                  "A `palm data build` directory: mark examples whose 8-grams are >= 70% in its training tokens");
  cmd->add_option("--out", o->out, "Write the results JSON here");
  cmd->add_option("--samples-out", o->eval.samples_out, "Write per-example JSONL here");
  cmd->add_option("--max-batch", o->eval.max_batch, "Sequences decoded together");
  cmd->add_option("--jobs", o->eval.jobs, "Programs executed at once (default: cores)")->check(integer_in(0, 256));
  cmd->add_option("--timeout", o->eval.sandbox.seconds, "Seconds per program")->check(finite_in(0.1, 3600));
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_flag("--json", o->json, "Print the results JSON instead of the table");
  cmd->callback([o] { run(*o); });
}

}  // namespace palm
