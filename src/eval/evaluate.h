// `palm eval`: runs one task against a model (or scores given completions) and returns
// the results document (docs/evaluation.md lists every key).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "eval/sandbox.h"
#include "eval/tasks.h"
#include "infer/generate.h"
#include "tokenizer/tokenizer.h"

namespace palm {

struct EvalOptions {
  TaskOptions task;
  std::int64_t num_samples = 1;
  double temperature = -1;   // -1: greedy, or PaLM's 0.8 (top-p 0.95) for code with n > 1
  double top_p = -1;         // -1: 1.0, or 0.95 with the code default above
  std::uint64_t seed = 0;
  std::string completions;   // JSONL {"task_id", "completion"}: score these, no model
  std::string contamination; // a `palm data build` directory
  std::int64_t max_batch = 16;
  int jobs = 0;              // programs run at once (0: the machine's cores)
  SandboxLimits sandbox;
  std::string samples_out;   // per-example JSONL
  std::string palm_version, model_sha256, model_path;
};

// The model side; null with --completions.
struct EvalModel {
  Backend* backend;
  const Weights* weights;
  const Tokenizer* tokenizer;
};

nlohmann::ordered_json run_eval(const EvalOptions& o, const EvalModel* model);

// The metric keys of a task's results, in report order (for the summary table).
std::vector<std::string> metric_keys(const nlohmann::ordered_json& results);

}  // namespace palm
