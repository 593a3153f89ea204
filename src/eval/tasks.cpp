#include "eval/tasks.h"

#include <filesystem>
#include <regex>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "base/check.h"
#include "base/file_util.h"
#include "base/utf8.h"
#include "eval/metrics.h"

namespace palm {

namespace {

using json = nlohmann::json;

struct Line {
  std::int64_t number;  // 1-based, for messages
  json value;
};

std::vector<Line> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  PALM_CHECK(in.good(), path, ": cannot open");
  std::vector<Line> out;
  std::string s;
  for (std::int64_t n = 1; std::getline(in, s); ++n) {
    if (s.find_first_not_of(" \t\r") == std::string::npos) continue;
    PALM_CHECK(find_invalid_utf8(s) == std::string::npos, path, ":", n, ": invalid UTF-8");
    json j = json::parse(s, nullptr, false);
    PALM_CHECK(!j.is_discarded() && j.is_object(), path, ":", n, ": not a JSON object");
    out.push_back({n, std::move(j)});
  }
  PALM_CHECK(!out.empty(), path, ": no examples");
  return out;
}

std::string str(const Line& l, const char* key, const std::string& path) {
  PALM_CHECK(l.value.contains(key) && l.value[key].is_string(), path, ":", l.number, ": \"", key,
             "\" is missing or not a string");
  return l.value[key].get<std::string>();
}

std::string id_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::string sibling(const std::string& data, const std::string& name) {
  return (std::filesystem::path(data).parent_path() / name).string();
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string s;
  for (std::size_t i = 0; i < parts.size(); ++i) s += (i ? sep : "") + parts[i];
  return s;
}

// The first `shots` examples of the evaluation file serve as exemplars and are not scored.
void check_shots(std::int64_t shots, std::size_t available, const std::string& path) {
  PALM_CHECK(shots >= 0 && std::size_t(shots) < available, path, ": --shots ", shots, " leaves no example to score (",
             available, " examples)");
}

void load_mc(const TaskOptions& o, EvalTask& t) {
  const auto lines = read_jsonl(o.data);
  t.kind = TaskKind::kMultipleChoice;
  t.shots = o.shots < 0 ? 0 : o.shots;
  check_shots(t.shots, lines.size(), o.data);
  std::vector<EvalItem> all;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const Line& l = lines[i];
    EvalItem it;
    it.id = std::to_string(i);
    it.context = str(l, "prompt", o.data);
    PALM_CHECK(l.value.contains("choices") && l.value["choices"].is_array() && l.value["choices"].size() >= 2, o.data,
               ":", l.number, ": \"choices\" must be an array of at least 2 strings");
    for (const auto& c : l.value["choices"]) {
      PALM_CHECK(c.is_string() && !c.get<std::string>().empty(), o.data, ":", l.number, ": choices must be non-empty strings");
      it.choices.push_back(c.get<std::string>());
    }
    PALM_CHECK(l.value.contains("answer") && l.value["answer"].is_number_integer(), o.data, ":", l.number,
               ": \"answer\" must be the integer index of the right choice");
    it.label = l.value["answer"].get<int>();
    PALM_CHECK(it.label >= 0 && std::size_t(it.label) < it.choices.size(), o.data, ":", l.number, ": answer ", it.label,
               " is not an index of choices");
    it.example = it.context + it.choices[std::size_t(it.label)];
    all.push_back(std::move(it));
  }
  std::string prefix;
  for (std::int64_t s = 0; s < t.shots; ++s) prefix += all[std::size_t(s)].example + "\n\n";
  for (std::size_t i = std::size_t(t.shots); i < all.size(); ++i) {
    all[i].context = prefix + all[i].context;
    t.items.push_back(std::move(all[i]));
  }
}

void load_piqa(const TaskOptions& o, EvalTask& t) {
  PALM_CHECK(!o.labels.empty(), "piqa needs --labels FILE (one 0/1 label per line, e.g. valid-labels.lst)");
  const auto lines = read_jsonl(o.data);
  std::ifstream in(o.labels);
  PALM_CHECK(in.good(), o.labels, ": cannot open");
  std::vector<int> labels;
  std::string s;
  for (std::int64_t n = 1; std::getline(in, s); ++n) {
    if (!s.empty() && s.back() == '\r') s.pop_back();
    if (s.empty()) continue;
    PALM_CHECK(s == "0" || s == "1", o.labels, ":", n, ": label must be 0 or 1, got '", s, "'");
    labels.push_back(s[0] - '0');
  }
  PALM_CHECK(labels.size() == lines.size(), o.labels, " has ", labels.size(), " labels for ", lines.size(),
             " examples in ", o.data);
  t.kind = TaskKind::kMultipleChoice;
  t.shots = o.shots < 0 ? 0 : o.shots;
  check_shots(t.shots, lines.size(), o.data);
  std::vector<EvalItem> all;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EvalItem it;
    it.id = std::to_string(i);
    it.context = "Question: " + str(lines[i], "goal", o.data) + "\nAnswer:";
    it.choices = {" " + str(lines[i], "sol1", o.data), " " + str(lines[i], "sol2", o.data)};
    it.label = labels[i];
    it.example = it.context + it.choices[std::size_t(it.label)];
    all.push_back(std::move(it));
  }
  std::string prefix;
  for (std::int64_t k = 0; k < t.shots; ++k) prefix += all[std::size_t(k)].example + "\n\n";
  for (std::size_t i = std::size_t(t.shots); i < all.size(); ++i) {
    all[i].context = prefix + all[i].context;
    t.items.push_back(std::move(all[i]));
  }
}

void load_bbh(const TaskOptions& o, EvalTask& t) {
  const json j = json::parse(read_file(o.data), nullptr, false);
  PALM_CHECK(!j.is_discarded() && j.is_object() && j.contains("examples") && j["examples"].is_array(), o.data,
             ": expected a BIG-Bench Hard file {\"examples\": [{\"input\": ..., \"target\": ...}, ...]}");
  std::vector<std::pair<std::string, std::string>> ex;
  for (std::size_t i = 0; i < j["examples"].size(); ++i) {
    const json& e = j["examples"][i];
    PALM_CHECK(e.is_object() && e.contains("input") && e["input"].is_string() && e.contains("target") &&
                   e["target"].is_string(),
               o.data, ": example ", i, " needs string \"input\" and \"target\"");
    ex.emplace_back(e["input"].get<std::string>(), e["target"].get<std::string>());
  }
  PALM_CHECK(!ex.empty(), o.data, ": no examples");
  t.kind = TaskKind::kGenerative;
  t.stops = {"\n\nQ:", "\nQ:"};
  std::string prefix;
  std::size_t first = 0;
  if (!o.cot_prompts.empty()) {
    // The BBH prompt file: canary line, "-----", then the instruction and 3 exemplars.
    std::string text = read_file(o.cot_prompts);
    const std::size_t sep = text.find("-----\n");
    if (sep != std::string::npos) text = text.substr(sep + 6);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    PALM_CHECK(text.find("Q:") != std::string::npos, o.cot_prompts, ": no 'Q:' exemplar found (a BBH cot-prompts file?)");
    prefix = text + "\n\n";
    t.cot = true;
    t.shots = 0;
    for (std::size_t p = 0; (p = text.find("\nQ:", p)) != std::string::npos; ++p) ++t.shots;
    if (text.rfind("Q:", 0) == 0) ++t.shots;
    t.max_tokens = 256;
  } else {
    t.shots = o.shots < 0 ? 0 : o.shots;
    check_shots(t.shots, ex.size(), o.data);
    for (std::int64_t k = 0; k < t.shots; ++k) prefix += "Q: " + ex[std::size_t(k)].first + "\nA: " + ex[std::size_t(k)].second + "\n\n";
    first = std::size_t(t.shots);
    t.max_tokens = 32;
  }
  for (std::size_t i = first; i < ex.size(); ++i) {
    EvalItem it;
    it.id = std::to_string(i);
    it.context = prefix + "Q: " + ex[i].first + "\nA:" + (t.cot ? " Let's think step by step." : "");
    it.target = ex[i].second;
    it.example = ex[i].first + "\n" + ex[i].second;
    t.items.push_back(std::move(it));
  }
}

std::string gsm8k_final(const Line& l, const std::string& path) {
  const std::string a = str(l, "answer", path);
  const std::size_t h = a.rfind("####");
  PALM_CHECK(h != std::string::npos, path, ":", l.number, ": the answer has no '#### N' line");
  std::string n = a.substr(h + 4);
  n.erase(0, n.find_first_not_of(" \t"));
  while (!n.empty() && (n.back() == '\n' || n.back() == ' ' || n.back() == '\r')) n.pop_back();
  PALM_CHECK(extract_number(n).has_value(), path, ":", l.number, ": '#### ", n, "' is not a number");
  return n;
}

void load_gsm8k(const TaskOptions& o, EvalTask& t) {
  const auto lines = read_jsonl(o.data);
  const std::string shots_file = o.cot_prompts.empty() ? sibling(o.data, "train.jsonl") : o.cot_prompts;
  t.kind = TaskKind::kGenerative;
  t.cot = o.cot;
  t.shots = o.shots < 0 ? 8 : o.shots;
  t.stops = {"\n\nQuestion:", "\nQuestion:"};
  t.max_tokens = o.cot ? 256 : 16;
  std::string prefix;
  if (t.shots > 0) {
    PALM_CHECK(std::filesystem::exists(shots_file), "gsm8k exemplars: ", shots_file,
               " not found (give the training split with --cot-prompts FILE)");
    const auto ex = read_jsonl(shots_file);
    PALM_CHECK(std::size_t(t.shots) <= ex.size(), shots_file, " has only ", ex.size(), " exemplars for --shots ", t.shots);
    for (std::int64_t k = 0; k < t.shots; ++k) {
      const Line& l = ex[std::size_t(k)];
      const std::string answer = o.cot ? gsm8k_cot_answer(str(l, "answer", shots_file))
                                       : "The answer is " + gsm8k_final(l, shots_file) + ".";
      prefix += "Question: " + str(l, "question", shots_file) + "\nAnswer: " + answer + "\n\n";
    }
  }
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EvalItem it;
    it.id = std::to_string(i);
    const std::string q = str(lines[i], "question", o.data);
    it.context = prefix + "Question: " + q + "\nAnswer:";
    it.target = gsm8k_final(lines[i], o.data);
    it.example = q + "\n" + str(lines[i], "answer", o.data);
    t.items.push_back(std::move(it));
  }
}

void load_humaneval(const TaskOptions& o, EvalTask& t) {
  const auto lines = read_jsonl(o.data);
  t.kind = TaskKind::kCode;
  t.shots = 0;
  t.max_tokens = 384;
  t.stops = {"\nclass", "\ndef", "\n#", "\nif", "\nprint"};  // Chen et al. 2021
  for (const Line& l : lines) {
    EvalItem it;
    it.id = str(l, "task_id", o.data);
    it.context = str(l, "prompt", o.data);
    it.program_prefix = it.context;
    it.test_prefix = it.context;
    const std::string entry = str(l, "entry_point", o.data);
    it.tests = str(l, "test", o.data) + "\n\ncheck(" + entry + ")\n";
    it.calls = {entry};
    it.example = it.context + (l.value.contains("canonical_solution") && l.value["canonical_solution"].is_string()
                                   ? l.value["canonical_solution"].get<std::string>()
                                   : "");
    t.items.push_back(std::move(it));
  }
}

// Names of the functions and classes a Python source defines at column 0.
std::vector<std::string> top_level_definitions(const std::string& source) {
  static const std::regex def(R"(^(?:async\s+def|def|class)\s+([A-Za-z_][A-Za-z_0-9]*))", std::regex::multiline);
  std::vector<std::string> names;
  for (auto it = std::sregex_iterator(source.begin(), source.end(), def); it != std::sregex_iterator(); ++it)
    if (std::find(names.begin(), names.end(), (*it)[1].str()) == names.end()) names.push_back((*it)[1].str());
  return names;
}

// Austin et al. 2021's prompt: the task, its tests, and the code between [BEGIN] / [DONE].
std::string mbpp_prompt(const Line& l, const std::string& path) {
  PALM_CHECK(l.value.contains("test_list") && l.value["test_list"].is_array(), path, ":", l.number,
             ": \"test_list\" must be an array of strings");
  std::vector<std::string> tests;
  for (const auto& x : l.value["test_list"]) {
    PALM_CHECK(x.is_string(), path, ":", l.number, ": test_list entries must be strings");
    tests.push_back(x.get<std::string>());
  }
  return "You are an expert Python programmer, and here is your task: " + str(l, "text", path) +
         " Your code should pass these tests:\n\n" + join(tests, "\n") + "\n";
}

void load_mbpp(const TaskOptions& o, EvalTask& t) {
  const auto lines = read_jsonl(o.data);
  t.kind = TaskKind::kCode;
  t.shots = o.shots < 0 ? 3 : o.shots;
  t.max_tokens = 384;
  t.stops = {"[DONE]"};
  std::string prefix;
  if (t.shots > 0) {
    // the paper's exemplars: task ids 2, 3, 4 of the prompt split
    const std::string file = o.cot_prompts.empty() ? sibling(o.data, "mbpp_prompt.jsonl") : o.cot_prompts;
    PALM_CHECK(std::filesystem::exists(file), "mbpp exemplars: ", file,
               " not found (give the prompt split with --cot-prompts FILE)");
    const auto ex = read_jsonl(file);
    std::int64_t used = 0;
    for (const std::int64_t want : {2, 3, 4, 1, 5, 6, 7, 8, 9, 10}) {
      for (const Line& l : ex) {
        if (used < t.shots && l.value.contains("task_id") && l.value["task_id"] == want) {
          prefix += mbpp_prompt(l, file) + "[BEGIN]\n" + str(l, "code", file) + "\n[DONE]\n\n";
          ++used;
        }
      }
    }
    PALM_CHECK(used == t.shots, file, " has only ", used, " exemplars (task ids 1-10) for --shots ", t.shots);
  }
  for (const Line& l : lines) {
    EvalItem it;
    PALM_CHECK(l.value.contains("task_id"), o.data, ":", l.number, ": \"task_id\" is missing");
    it.id = id_text(l.value["task_id"]);
    const std::string p = mbpp_prompt(l, o.data);
    it.context = prefix + p + "[BEGIN]\n";
    std::string setup = l.value.contains("test_setup_code") && l.value["test_setup_code"].is_string()
                            ? l.value["test_setup_code"].get<std::string>()
                            : "";
    // the setup runs in the test runner after the solution loaded: it may use the
    // solution's classes (task 367), through handles
    std::vector<std::string> tests;
    for (const auto& x : l.value["test_list"]) tests.push_back(x.get<std::string>());
    it.tests = setup + "\n" + join(tests, "\n") + "\n";
    // the functions and classes the reference solution defines (task 126's is named `sum`):
    // those names, and no other, reach the program from the tests
    if (l.value.contains("code") && l.value["code"].is_string()) it.calls = top_level_definitions(l.value["code"].get<std::string>());
    it.example = p + (l.value.contains("code") && l.value["code"].is_string() ? l.value["code"].get<std::string>() : "");
    t.items.push_back(std::move(it));
  }
}

void load_perplexity(const TaskOptions& o, EvalTask& t) {
  t.kind = TaskKind::kPerplexity;
  t.text = read_file(o.data);
  const std::size_t bad = find_invalid_utf8(t.text);
  PALM_CHECK(bad == std::string::npos, o.data, ": invalid UTF-8 at byte ", bad);
  PALM_CHECK(!t.text.empty(), o.data, ": empty");
}

}  // namespace

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {"mc", "piqa", "bbh", "gsm8k", "humaneval", "mbpp", "perplexity"};
  return names;
}

EvalTask load_task(const TaskOptions& o) {
  PALM_CHECK(!o.data.empty(), "--data FILE is required");
  PALM_CHECK(std::filesystem::exists(o.data), o.data, ": no such file");
  PALM_CHECK(o.limit >= 0, "--limit must be >= 0");
  EvalTask t;
  t.name = o.name;
  if (o.name == "mc") load_mc(o, t);
  else if (o.name == "piqa") load_piqa(o, t);
  else if (o.name == "bbh") load_bbh(o, t);
  else if (o.name == "gsm8k") load_gsm8k(o, t);
  else if (o.name == "humaneval") load_humaneval(o, t);
  else if (o.name == "mbpp") load_mbpp(o, t);
  else if (o.name == "perplexity") load_perplexity(o, t);
  else PALM_CHECK(false, "unknown task '", o.name, "' (tasks: ", join(task_names(), ", "), ")");
  if (o.limit > 0 && std::size_t(o.limit) < t.items.size()) t.items.resize(std::size_t(o.limit));
  std::set<std::string> ids;
  for (const auto& it : t.items) PALM_CHECK(ids.insert(it.id).second, o.data, ": task_id ", it.id, " appears twice");
  return t;
}

}  // namespace palm
