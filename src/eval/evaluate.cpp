#include "eval/evaluate.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <thread>

#include "base/check.h"
#include "base/file_util.h"
#include "base/progress.h"
#include "base/utf8.h"
#include "data/loader.h"
#include "eval/metrics.h"
#include "infer/score.h"
#include "infer/stop.h"

namespace palm {

namespace {

using json = nlohmann::ordered_json;

struct Record {
  const EvalItem* item = nullptr;
  std::vector<std::string> outputs, extracted, status;
  std::vector<bool> correct;
  std::vector<double> choice_logprobs;  // multiple choice
  int pred = -1, pred_norm = -1;
  bool contaminated = false;
  double overlap = 0;
};

std::string task_kind_name(TaskKind k) {
  switch (k) {
    case TaskKind::kMultipleChoice: return "multiple_choice";
    case TaskKind::kGenerative: return "generative";
    case TaskKind::kCode: return "code_execution";
    case TaskKind::kPerplexity: return "perplexity";
  }
  return "";
}

// Keeps the end of a prompt that does not fit; `truncated` counts them.
std::vector<std::int32_t> fit_left(std::vector<std::int32_t> ids, std::int64_t room, std::int64_t& truncated) {
  if (std::int64_t(ids.size()) > room) {
    ids.erase(ids.begin(), ids.end() - room);
    ++truncated;
  }
  return ids;
}

// ---- multiple choice by log-likelihood ----
void score_choices(const EvalTask& t, const EvalModel& m, std::vector<Record>& recs, std::int64_t& truncated) {
  const std::int64_t ctx = m.weights->config.max_seq_len;
  Progress progress("eval " + t.name, std::int64_t(recs.size()), "examples");
  for (std::size_t r = 0; r < recs.size(); ++r) {
    Record& rec = recs[r];
    const auto context = m.tokenizer->encode(rec.item->context);
    double best = -INFINITY, best_norm = -INFINITY;
    for (std::size_t c = 0; c < rec.item->choices.size(); ++c) {
      const std::string& choice = rec.item->choices[c];
      const auto cont = m.tokenizer->encode(choice);
      PALM_CHECK(!cont.empty() && std::int64_t(cont.size()) < ctx, "example ", rec.item->id, ": choice ", c,
                 " has ", cont.size(), " tokens; the context holds ", ctx);
      std::vector<std::int32_t> seq = fit_left(context, ctx + 1 - std::int64_t(cont.size()), truncated);
      if (seq.empty()) seq.push_back(kEodId);
      const std::size_t first = seq.size();  // logprob index of the first continuation token is first - 1
      seq.insert(seq.end(), cont.begin(), cont.end());
      const auto lp = token_logprobs(*m.backend, *m.weights, seq);
      double sum = 0;
      for (std::size_t i = first - 1; i < lp.size(); ++i) sum += lp[i];
      rec.choice_logprobs.push_back(sum);
      const double norm = sum / double(choice.size());  // per byte of the choice
      if (sum > best) best = sum, rec.pred = int(c);
      if (norm > best_norm) best_norm = norm, rec.pred_norm = int(c);
    }
    rec.correct = {rec.pred == rec.item->label};
    rec.extracted = {rec.item->choices[std::size_t(rec.pred)]};
    progress.update(std::int64_t(r + 1));
  }
  progress.finish();
}

// ---- generation ----
// PaLM's code sampling (temperature 0.8, top-p 0.95) when n > 1 samples; else greedy.
SamplingOptions sampling_for(const EvalTask& t, const EvalOptions& o) {
  SamplingOptions s;
  s.seed = o.seed;
  const bool code_sampling = t.kind == TaskKind::kCode && o.num_samples > 1;
  s.temperature = o.temperature >= 0 ? o.temperature : (code_sampling ? 0.8 : 0.0);
  s.top_p = o.top_p >= 0 ? o.top_p : (code_sampling && o.temperature < 0 ? 0.95 : 1.0);
  validate(s);
  return s;
}

void generate_outputs(const EvalTask& t, const EvalOptions& o, const EvalModel& m, std::vector<Record>& recs,
                      std::int64_t& truncated) {
  const ModelConfig& c = m.weights->config;
  const SamplingOptions s = sampling_for(t, o);
  const std::int64_t budget = std::min(t.max_tokens, c.max_seq_len / 2);
  const std::int64_t room = c.max_seq_len - budget;
  std::vector<GenerationRequest> reqs;
  std::vector<std::size_t> rec_of;
  for (std::size_t r = 0; r < recs.size(); ++r) {
    const auto ids = fit_left(m.tokenizer->encode(recs[r].item->context), room, truncated);
    PALM_CHECK(!ids.empty(), "example ", recs[r].item->id, ": empty prompt");
    for (std::int64_t k = 0; k < o.num_samples; ++k) {
      GenerationRequest q;
      q.prompt = ids;
      q.max_tokens = budget;
      q.sampling = s;
      q.stream = std::uint64_t(r) * 1000003ull + std::uint64_t(k);
      reqs.push_back(std::move(q));
      rec_of.push_back(r);
    }
  }
  Progress progress("eval " + t.name, std::int64_t(reqs.size()), "completions");
  const std::size_t chunk = std::size_t(std::max<std::int64_t>(1, o.max_batch));
  for (std::size_t a = 0; a < reqs.size(); a += chunk) {
    const std::size_t b = std::min(reqs.size(), a + chunk);
    const std::vector<GenerationRequest> part(reqs.begin() + std::ptrdiff_t(a), reqs.begin() + std::ptrdiff_t(b));
    std::vector<std::string> text(part.size());
    const StopMatcher stops(t.stops);
    auto on_token = [&](std::size_t r, std::int32_t token) {
      const std::size_t grown_from = text[r].size();
      text[r] += m.tokenizer->decode({token});
      const std::size_t cut = stops.find(text[r], grown_from);
      if (cut == std::string::npos) return false;
      text[r].resize(cut);  // the stop sequence is not part of the completion
      return true;
    };
    generate(*m.backend, *m.weights, part, o.max_batch, on_token);
    for (std::size_t i = 0; i < part.size(); ++i) {
      std::string& out = text[i];
      out.resize(utf8_complete_prefix(out));  // a character cut by the token budget
      recs[rec_of[a + i]].outputs.push_back(std::move(out));
    }
    progress.update(std::int64_t(b));
  }
  progress.finish();
}

// JSONL {"task_id", "completion"}; several lines per id are several samples.
void read_completions(const EvalOptions& o, std::vector<Record>& recs) {
  std::map<std::string, std::size_t> index;
  for (std::size_t r = 0; r < recs.size(); ++r) index[recs[r].item->id] = r;
  std::ifstream in(o.completions);
  PALM_CHECK(in.good(), o.completions, ": cannot open");
  std::string line;
  std::int64_t used = 0;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    PALM_CHECK(find_invalid_utf8(line) == std::string::npos, o.completions, ":", n, ": invalid UTF-8");
    const auto j = nlohmann::json::parse(line, nullptr, false);
    PALM_CHECK(!j.is_discarded() && j.is_object() && j.contains("task_id") && j.contains("completion") &&
                   j["completion"].is_string() && (j["task_id"].is_string() || j["task_id"].is_number_integer()),
               o.completions, ":", n, ": expected {\"task_id\": ..., \"completion\": \"...\"}");
    const std::string id = j["task_id"].is_string() ? j["task_id"].get<std::string>() : j["task_id"].dump();
    const auto it = index.find(id);
    if (it == index.end()) continue;  // an example outside --limit or the shots
    recs[it->second].outputs.push_back(j["completion"].get<std::string>());
    ++used;
  }
  for (const auto& r : recs)
    PALM_CHECK(!r.outputs.empty(), o.completions, ": no completion for task_id ", r.item->id);
}

void score_generative(const EvalTask& t, std::vector<Record>& recs) {
  for (auto& r : recs) {
    for (const auto& out : r.outputs) {
      if (t.name == "gsm8k") {
        const auto got = extract_number(out);
        const double want = *extract_number(r.item->target);
        r.extracted.push_back(got ? json(*got).dump() : "");
        r.correct.push_back(got && std::fabs(*got - want) < 1e-6);  // answers are exact decimals
      } else {
        const std::string got = extract_bbh_answer(out);
        r.extracted.push_back(got);
        r.correct.push_back(got == r.item->target);
      }
    }
  }
}

void run_programs(const EvalTask& t, const EvalOptions& o, std::vector<Record>& recs) {
  struct Job {
    std::size_t rec, sample;
  };
  std::vector<Job> jobs;
  for (std::size_t r = 0; r < recs.size(); ++r) {
    recs[r].correct.assign(recs[r].outputs.size(), false);
    recs[r].status.assign(recs[r].outputs.size(), "");
    for (std::size_t k = 0; k < recs[r].outputs.size(); ++k) jobs.push_back({r, k});
  }
  const int workers = std::max(1, o.jobs > 0 ? o.jobs : int(std::thread::hardware_concurrency()));
  std::atomic<std::size_t> next{0}, done{0};
  Progress progress("run " + t.name + " programs", std::int64_t(jobs.size()), "programs");
  auto work = [&] {
    for (std::size_t j; (j = next++) < jobs.size();) {
      Record& r = recs[jobs[j].rec];
      const SandboxProgram program{r.item->program_prefix + r.outputs[jobs[j].sample], r.item->tests,
                                   r.item->test_prefix, r.item->calls};
      const SandboxResult res = run_python_sandboxed(program, o.sandbox);
      r.correct[jobs[j].sample] = res.passed;
      r.status[jobs[j].sample] = res.status;
      ++done;
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < workers; ++i) pool.emplace_back(work);
  while (done.load() < jobs.size()) {
    progress.update(std::int64_t(done.load()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  for (auto& th : pool) th.join();
  progress.finish();
}

// ---- contamination (PaLM: >= 70% of an example's 8-grams occur in the training data) ----
std::uint64_t ngram_hash(const std::int32_t* t) {
  std::uint64_t h = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 8; ++i) {
    h ^= std::uint64_t(std::uint32_t(t[i])) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ull;
  }
  return h ^ (h >> 31);
}

json mark_contamination(const EvalOptions& o, std::vector<Record>& recs) {
  const DataLoader data(o.contamination, 8, 0);
  const auto tok = Tokenizer::load(o.contamination + "/tokenizer");
  std::vector<std::uint64_t> grams;
  std::int64_t train_tokens = 0;
  for (const auto& src : data.sources()) {
    if (!src.train) continue;
    const std::uint32_t* t = src.train->tokens();
    const std::int64_t n = std::int64_t(src.train->size());
    train_tokens += n;
    std::vector<std::int32_t> w(8);
    for (std::int64_t i = 0; i + 8 <= n; ++i) {
      for (int k = 0; k < 8; ++k) w[std::size_t(k)] = std::int32_t(t[i + k]);
      grams.push_back(ngram_hash(w.data()));
    }
  }
  std::sort(grams.begin(), grams.end());
  grams.erase(std::unique(grams.begin(), grams.end()), grams.end());
  std::int64_t marked = 0, too_short = 0;
  for (auto& r : recs) {
    const auto ids = tok->encode(r.item->example);
    if (ids.size() < 8) {
      ++too_short;  // no 8-gram: cannot be judged, counted clean
      continue;
    }
    std::int64_t hits = 0;
    const std::int64_t total = std::int64_t(ids.size()) - 7;
    for (std::int64_t i = 0; i < total; ++i) hits += std::binary_search(grams.begin(), grams.end(), ngram_hash(ids.data() + i));
    r.overlap = double(hits) / double(total);
    r.contaminated = r.overlap >= 0.7;
    marked += r.contaminated;
  }
  json j;
  j["data_dir"] = o.contamination;
  j["rule"] = ">= 70% of the example's 8-grams (data tokenizer) occur in the training tokens";
  j["train_tokens"] = train_tokens;
  j["contaminated"] = marked;
  j["too_short_to_judge"] = too_short;
  return j;
}

// ---- metrics ----
void add_metrics(const EvalTask& t, const std::vector<const Record*>& recs, json& out) {
  out["n"] = recs.size();
  if (recs.empty()) return;
  if (t.kind == TaskKind::kMultipleChoice) {
    double acc = 0, norm = 0;
    for (const auto* r : recs) acc += r->pred == r->item->label, norm += r->pred_norm == r->item->label;
    out["accuracy"] = acc / double(recs.size());
    out["accuracy_norm"] = norm / double(recs.size());
  } else if (t.kind == TaskKind::kGenerative) {
    double acc = 0;
    for (const auto* r : recs) {
      double c = 0;
      for (bool b : r->correct) c += b;
      acc += c / double(r->correct.size());
    }
    out["accuracy"] = acc / double(recs.size());
  } else if (t.kind == TaskKind::kCode) {
    std::int64_t min_n = INT64_MAX;
    for (const auto* r : recs) min_n = std::min<std::int64_t>(min_n, std::int64_t(r->outputs.size()));
    for (std::int64_t k : {1, 10, 100}) {
      if (k > min_n) break;
      double sum = 0;
      for (const auto* r : recs) {
        const std::int64_t c = std::count(r->correct.begin(), r->correct.end(), true);
        sum += pass_at_k(std::int64_t(r->outputs.size()), c, k);
      }
      out["pass@" + std::to_string(k)] = sum / double(recs.size());
    }
  }
}

json perplexity(const EvalTask& t, const EvalModel& m) {
  std::vector<std::int32_t> seq{kEodId};  // a document start, so the first token is predicted too
  m.tokenizer->encode_append(t.text, seq);
  const std::int64_t T = m.weights->config.max_seq_len;
  const std::int64_t predicted = std::int64_t(seq.size()) - 1;
  // non-overlapping windows of T predictions; each window's context restarts
  Progress progress("eval perplexity", predicted, "tokens");
  double nll = 0;
  for (std::int64_t a = 0; a < predicted; a += T) {
    const std::int64_t b = std::min(predicted, a + T);
    const std::vector<std::int32_t> win(seq.begin() + a, seq.begin() + b + 1);
    for (double lp : token_logprobs(*m.backend, *m.weights, win)) nll -= lp;
    progress.update(b);
  }
  progress.finish();
  json j;
  j["bits_per_byte"] = nll / std::log(2.0) / double(t.text.size());
  j["token_perplexity"] = std::exp(nll / double(predicted));
  j["nll_nats"] = nll;
  j["tokens"] = predicted;
  j["bytes"] = t.text.size();
  j["window"] = T;
  return j;
}

}  // namespace

std::vector<std::string> metric_keys(const nlohmann::ordered_json& results) {
  std::vector<std::string> keys;
  for (const char* k : {"accuracy", "accuracy_norm", "pass@1", "pass@10", "pass@100", "bits_per_byte", "token_perplexity"})
    if (results.contains(k)) keys.push_back(k);
  return keys;
}

nlohmann::ordered_json run_eval(const EvalOptions& o, const EvalModel* m) {
  const auto start = std::chrono::steady_clock::now();
  PALM_CHECK(o.num_samples > 0, "--num-samples must be positive");
  PALM_CHECK((m == nullptr) != o.completions.empty(), m ? "give --model or --completions, not both"
                                                        : "give --model RUN or --completions FILE");
  const EvalTask t = load_task(o.task);
  json res;
  res["task"] = t.name;
  res["kind"] = task_kind_name(t.kind);
  res["data"] = o.task.data;
  if (t.kind == TaskKind::kPerplexity) {
    PALM_CHECK(m != nullptr, "perplexity needs a model (--model)");
    const json p = perplexity(t, *m);
    for (auto it = p.begin(); it != p.end(); ++it) res[it.key()] = it.value();
  } else {
    PALM_CHECK(m != nullptr || t.kind != TaskKind::kMultipleChoice,
               t.name, " is scored by log-likelihood and needs a model (--completions is for generated answers)");
    std::vector<Record> recs(t.items.size());
    for (std::size_t i = 0; i < recs.size(); ++i) recs[i].item = &t.items[i];
    std::int64_t truncated = 0;
    if (t.kind == TaskKind::kMultipleChoice) {
      score_choices(t, *m, recs, truncated);
    } else {
      if (m) generate_outputs(t, o, *m, recs, truncated);
      else read_completions(o, recs);
      if (t.kind == TaskKind::kCode) run_programs(t, o, recs);
      else score_generative(t, recs);
    }
    std::vector<const Record*> all, clean;
    for (const auto& r : recs) all.push_back(&r);
    add_metrics(t, all, res);
    res["shots"] = t.shots;
    if (t.kind != TaskKind::kMultipleChoice) {
      if (m) res["num_samples"] = o.num_samples;
      res["chain_of_thought"] = t.cot;
      res["stop_sequences"] = t.stops;
    }
    res["prompts_truncated_left"] = truncated;
    if (t.kind == TaskKind::kCode) res["sandbox"] = sandbox_isolation();
    if (!o.contamination.empty()) {
      json cj = mark_contamination(o, recs);
      for (const auto& r : recs)
        if (!r.contaminated) clean.push_back(&r);
      json cm;
      add_metrics(t, clean, cm);
      cj["clean"] = cm;
      res["contamination"] = cj;
    }
    if (!o.samples_out.empty()) {
      std::string lines;
      for (const auto& r : recs) {
        json j;
        j["task_id"] = r.item->id;
        j["prompt"] = r.item->context;
        if (t.kind == TaskKind::kMultipleChoice) {
          j["choices"] = r.item->choices;
          j["choice_logprobs"] = r.choice_logprobs;
          j["prediction"] = r.pred;
          j["prediction_norm"] = r.pred_norm;
          j["label"] = r.item->label;
          j["correct"] = bool(r.correct[0]);
        } else {
          j["outputs"] = r.outputs;
          if (!r.extracted.empty()) j["extracted"] = r.extracted;
          if (!r.status.empty()) j["status"] = r.status;
          if (!r.item->target.empty()) j["target"] = r.item->target;
          j["correct"] = r.correct;
        }
        if (!o.contamination.empty()) j["contaminated"] = r.contaminated, j["ngram_overlap"] = r.overlap;
        lines += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      }
      write_text_atomic(o.samples_out, lines);
    }
  }
  res["seed"] = o.seed;
  if (m) {
    if (t.kind == TaskKind::kGenerative || t.kind == TaskKind::kCode) {
      const SamplingOptions s = sampling_for(t, o);
      res["temperature"] = s.temperature;
      res["top_p"] = s.top_p;
    }
    res["model"] = o.model_path;
    res["model_sha256"] = o.model_sha256;
    res["tokenizer_sha256"] = m->tokenizer->sha256();
  } else {
    res["completions"] = o.completions;
  }
  res["palm_version"] = o.palm_version;
  res["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return res;
}

}  // namespace palm
