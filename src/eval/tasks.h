// Evaluation tasks read from their public file formats and turned into prompts
// (docs/evaluation.md states every format, prompt template and stop sequence).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace palm {

enum class TaskKind { kMultipleChoice, kGenerative, kCode, kPerplexity };

struct EvalItem {
  std::string id;       // the task's own id, else the 0-based line/example index
  std::string context;  // what the model is given (few-shot exemplars included)
  std::string example;  // the example alone (question and answer): contamination checks
  // multiple choice: the continuations scored after `context`, and the right one
  std::vector<std::string> choices;
  int label = -1;
  // generative: the expected answer (BBH's exact string, GSM8K's number)
  std::string target;
  // code: the program is program_prefix + completion; the test runner runs test_prefix
  // (trusted: HumanEval's prompt, for the helpers its tests use), then `tests`, calling
  // the program's functions named in `calls` (empty: those the tests use) (eval/sandbox.h)
  std::string program_prefix, test_prefix, tests;
  std::vector<std::string> calls;
};

struct EvalTask {
  std::string name;
  TaskKind kind = TaskKind::kGenerative;
  std::vector<EvalItem> items;
  std::vector<std::string> stops;  // generation ends at the first of these
  std::int64_t shots = 0;
  std::int64_t max_tokens = 0;     // generation budget per completion
  bool cot = false;
  std::string text;                // perplexity: the whole text
};

struct TaskOptions {
  std::string name;         // mc | piqa | bbh | gsm8k | humaneval | mbpp | perplexity
  std::string data;         // the evaluation file
  std::string labels;       // piqa: the labels file
  std::string cot_prompts;  // bbh: a BBH cot-prompts file; gsm8k: exemplars JSONL; mbpp: prompt split
  std::int64_t shots = -1;  // -1: the task's default (gsm8k 8, mbpp 3, others 0)
  bool cot = true;          // gsm8k: chain-of-thought exemplars, else answers only
  std::int64_t limit = 0;   // 0: all
};

// Reads and validates the files; malformed lines are reported with file and line number.
EvalTask load_task(const TaskOptions& o);

const std::vector<std::string>& task_names();

}  // namespace palm
