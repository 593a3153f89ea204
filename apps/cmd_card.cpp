// palm card: a model card and a datasheet from a run's own records (src/report renders;
// this file gathers the facts: checkpoint, training record, data manifest, eval results).
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "base/hardware.h"
#include "base/sha256.h"
#include "base/utf8.h"
#include "common.h"
#include "data/shard.h"
#include "kernels/backend.h"
#include "model/accounting.h"
#include "model/config.h"
#include "report/card.h"
#include "report/scripts.h"
#include "tokenizer/tokenizer.h"

namespace palm {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr std::int64_t kScriptSampleTokens = 2'000'000;  // per source

json read_json(const fs::path& p) {
  const auto j = json::parse(read_file(p.string()), nullptr, false);
  PALM_CHECK(!j.is_discarded(), p.string(), ": not valid JSON");
  return j;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

// Decodes up to kScriptSampleTokens of each source's first training shard and counts scripts.
json script_shares(const json& manifest, const fs::path& dir, const Tokenizer& tok) {
  ScriptCounter counter;
  std::int64_t sampled = 0;
  for (const auto& src : manifest["sources"]) {
    if (!src.contains("shards") || src["shards"]["train"].empty()) continue;
    const ShardReader shard((dir / src["shards"]["train"][0].get<std::string>()).string());
    const std::int64_t n = std::min<std::int64_t>(std::int64_t(shard.size()), kScriptSampleTokens);
    std::string carry;
    for (std::int64_t a = 0; a < n; a += 65536) {
      const std::int64_t b = std::min(n, a + 65536);
      std::vector<std::int32_t> ids(shard.tokens() + a, shard.tokens() + b);
      std::erase(ids, 1);  // <eod> separators are not text
      carry += tok.decode(ids);
      const std::size_t whole = utf8_complete_prefix(carry);
      counter.add(std::string_view(carry).substr(0, whole));
      carry.erase(0, whole);
    }
    sampled += n;
  }
  json out;
  out["characters"] = counter.total();
  out["sample"] = "the first " + std::to_string(kScriptSampleTokens) + " training tokens of each source (" +
                  std::to_string(sampled) + " tokens)";
  std::vector<std::pair<std::int64_t, std::string>> by;
  for (const auto& [name, c] : counter.counts()) by.emplace_back(c, name);
  std::sort(by.rbegin(), by.rend());
  out["shares"] = json::array();
  for (const auto& [c, name] : by)
    out["shares"].push_back({{"script", name}, {"share", counter.total() ? double(c) / double(counter.total()) : 0.0}});
  return out;
}

json gather_facts(const std::string& run, const std::string& info_file, bool measure_peak) {
  const fs::path rp(run);
  PALM_CHECK(fs::exists(rp / "config.json"), run, ": not a training run directory (no config.json)");
  json f;
  json notes = json::array();
  f["generated"] = {{"palm_version", palm_version_string()}, {"date", utc_now()}, {"run", fs::absolute(rp).string()}};
  const json run_config = read_json(rp / "config.json");

  // ---- checkpoint ----
  std::string tok_dir;
  const std::string model_path = resolve_model(run, &tok_dir);
  const fs::path ckpt = fs::path(model_path).parent_path();
  const json state = read_json(ckpt / "state.json");
  const ModelConfig c = config_from_json(state["config"].dump(), (ckpt / "state.json").string());
  const auto be = make_backend();
  const std::int64_t T = run_config.value("seq_len", c.max_seq_len);
  const ModelAccounting a = account(*be, c, 1, T);
  json m;  // sections are built as locals: ordered_json keeps members in a vector (references dangle)
  m["name"] = fs::absolute(rp).filename().string();
  m["config"] = json::parse(config_to_json(c));
  m["parameters"] = a.parameters;
  m["embedding_parameters"] = a.embedding_parameters;
  m["non_embedding_parameters"] = a.non_embedding_parameters;
  m["matrix_parameters"] = a.matrix_parameters;
  m["flops_per_token"] = a.flops_per_token;
  m["checkpoint"] = model_path;
  m["step"] = state["step"];
  m["sha256"] = sha256_file(model_path);
  f["model"] = m;

  // ---- vocabulary ----
  json v;
  if (!tok_dir.empty() && fs::exists(fs::path(tok_dir) / "tokenizer.json")) {
    const json tj = read_json(fs::path(tok_dir) / "tokenizer.json");
    const json& st = tj["settings"];
    v["size"] = tj["vocab_size"];
    v["model_type"] = tj["model_type"];
    v["special"] = tj["special"];
    v["byte_fallback"] = st.value("byte_fallback", "?") == "true";
    v["split_digits"] = st.value("split_digits", "?") == "true";
    v["normalization"] = st.value("normalization_rule_name", "?");
    v["sha256"] = tj["sha256"];
  } else {
    notes.push_back("the checkpoint stores no tokenizer: vocabulary details unknown");
  }
  f["vocabulary"] = v;

  // ---- training record ----
  json t;
  t["config"] = run_config;
  t["steps"] = state["step"];
  const double tokens_seen = state.value("tokens_seen", 0.0), wall = state.value("wall_seconds", 0.0);
  t["tokens_seen"] = tokens_seen;
  t["wall_seconds"] = wall;
  t["tokens_per_second"] = wall > 0 ? tokens_seen / wall : 0.0;
  t["achieved_flops_per_second"] = wall > 0 ? a.flops_per_token * tokens_seen / wall : 0.0;
  t["total_flops"] = a.flops_per_token * tokens_seen;
  if (state.contains("hardware")) t["hardware"] = state["hardware"];
  const Hardware here = describe_hardware();
  if (!state.contains("hardware")) {
    t["mfu_note"] = "not computed: the run did not record its hardware";
  } else if (state["hardware"].value("cpu", "") != here.cpu_model) {
    t["mfu_note"] = "not computed: this card was made on another CPU than the training's";
  } else if (!measure_peak) {
    t["mfu_note"] = "not computed (--no-peak)";
  } else {
    const bool bf16 = run_config.value("bf16", false);
    const double peak = measure_gemm_peak(bf16 ? be.get() : nullptr, 0.25);
    t["peak_flops_per_second"] = peak;
    t["mfu"] = t["achieved_flops_per_second"].get<double>() / peak;
    t["mfu_note"] = std::string("against the ") + (bf16 ? "bf16" : "fp32") +
                    " GEMM rate palm card measured on the training's CPU model";
  }
  json losses = json::array(), val = json::array(), events = json::array();
  std::ifstream mf(rp / "metrics.jsonl");
  for (std::string line; std::getline(mf, line);) {
    const auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;  // a line cut by a crash
    if (j.contains("loss") && j["loss"].is_number()) losses.push_back(j["loss"]);
    if (j.contains("val_loss")) val.push_back({{"step", j["step"]}, {"val_loss", j["val_loss"]}});
    if (j.value("event", "") == "rollback") events.push_back(j);
  }
  json l = json::object();
  if (!losses.empty()) {
    double mn = INFINITY, tail = 0;
    const std::size_t w = std::min<std::size_t>(10, losses.size());
    for (const auto& x : losses) mn = std::min(mn, x.get<double>());
    for (std::size_t i = losses.size() - w; i < losses.size(); ++i) tail += losses[i].get<double>() / double(w);
    l = {{"first", losses.front()}, {"min", mn}, {"final", tail}, {"final_window", w}};
  } else {
    notes.push_back("metrics.jsonl holds no training losses");
  }
  t["loss"] = l;
  t["validation"] = val;
  t["rollbacks"] = state.value("rollbacks", json::array());
  t["rollback_count"] = events.size();
  // restarts by palm launch (RUN/events.jsonl): each failure it healed, and from where
  json restarts = json::array(), failure;
  std::ifstream launch_events(rp / "events.jsonl");
  for (std::string line; std::getline(launch_events, line);) {
    const auto j = json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    const std::string e = j.value("event", "");
    if (e == "failure") failure = j;
    if ((e == "restart" || e == "shrink") && failure.is_object())
      restarts.push_back({{"event", e}, {"cause", failure.value("cause", "")}, {"rank", failure.value("rank", -1)},
                          {"host", failure.value("host", "")}, {"detail", failure.value("detail", "")},
                          {"from_checkpoint", j.value("from_checkpoint", "")}, {"to_np", j.value("to_np", 0)}}),
          failure = json();  // one entry per failure: a shrink is followed by its restart
  }
  t["restarts"] = restarts;
  f["training"] = t;

  // ---- data ----
  json d;
  const fs::path data_dir = run_config.value("data", "");
  d["dir"] = data_dir.string();
  d["manifest_sha256"] = state.value("data_manifest_sha256", "");
  d["found"] = !data_dir.empty() && fs::exists(data_dir / "manifest.json");
  if (d["found"].get<bool>()) {
    const json man = read_json(data_dir / "manifest.json");
    if (sha256_file((data_dir / "manifest.json").string()) != d["manifest_sha256"].get<std::string>())
      notes.push_back("the data directory's manifest changed since training (sha256 differs); described as it is now");
    double wsum = 0;
    for (const auto& s : man["sources"])
      if (s.value("tokens", 0.0) > 0) wsum += s.value("weight", 0.0);
    d["sources"] = json::array();
    std::int64_t val_docs = 0, val_tokens = 0;
    for (const auto& s : man["sources"]) {
      json src = s;
      const double w = wsum > 0 && s.value("tokens", 0.0) > 0 ? s.value("weight", 0.0) / wsum : 0.0;
      src["weight"] = w;
      src["epochs_implied"] = s.value("tokens", 0.0) > 0 ? tokens_seen * w / s["tokens"].get<double>() : 0.0;
      val_docs += s.value("val_documents", std::int64_t(0));
      val_tokens += s.value("val_tokens", std::int64_t(0));
      d["sources"].push_back(src);
    }
    d["documents"] = man.value("documents", 0);
    d["train_tokens"] = man.value("train_tokens", 0);
    d["val_fraction"] = man.value("val_fraction", 0.0);
    d["near_dup_threshold"] = man.value("near_dup_threshold", 0.0);
    d["val_documents"] = val_docs;
    d["val_tokens"] = val_tokens;
    const auto tok = Tokenizer::load((data_dir / "tokenizer").string());
    d["scripts"] = script_shares(man, data_dir, *tok);
  } else {
    notes.push_back("data directory " + data_dir.string() + " not found: composition, cleaning and scripts unknown");
  }
  f["data"] = d;

  // ---- evaluations (palm eval results kept in RUN/eval/) ----
  json evals = json::array();
  const fs::path ev = rp / "eval";
  std::vector<fs::path> files;
  if (fs::is_directory(ev))
    for (const auto& e : fs::directory_iterator(ev))
      if (e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& p : files) {
    const auto r = json::parse(read_file(p.string()), nullptr, false);
    if (r.is_discarded() || !r.contains("task") || !r.contains("palm_version")) {
      notes.push_back(p.string() + " is not a palm eval results file; skipped");
      continue;
    }
    json e = {{"task", r["task"]}, {"data", r.value("data", "")}, {"shots", r.value("shots", 0)},
              {"n", r.contains("n") ? r["n"] : r.value("tokens", json())}, {"file", p.string()}};
    if (r.contains("chain_of_thought")) e["chain_of_thought"] = r["chain_of_thought"];
    json metrics = json::object();
    for (const char* k : {"accuracy", "accuracy_norm", "pass@1", "pass@10", "pass@100", "bits_per_byte"})
      if (r.contains(k)) metrics[k] = r[k];
    e["metrics"] = metrics;
    if (r.contains("contamination")) {
      e["contaminated"] = r["contamination"]["contaminated"];
      e["clean"] = r["contamination"]["clean"];
    }
    if (r.value("model_sha256", "") != m["sha256"].get<std::string>())
      notes.push_back(p.filename().string() + " evaluated another checkpoint (model sha256 " +
                      r.value("model_sha256", std::string("unknown")) + ")");
    evals.push_back(e);
  }
  f["evaluations"] = evals;
  f["evaluations_note"] = files.empty() ? "no results in " + ev.string() : std::to_string(files.size()) + " files in " + ev.string();

  // ---- the author's statements ----
  f["info"] = json::object();
  if (info_file.empty()) {
    notes.push_back("no --info file: intended use, limitations, ethics, license and contact were not provided");
  } else if (!fs::exists(info_file)) {
    notes.push_back("the info file " + info_file + " was not found: author statements missing");
    fmt::print(stderr, "palm: warning: {} not found; the card says the author's statements are missing\n", info_file);
  } else {
    const json info = read_json(info_file);
    PALM_CHECK(info.is_object(), info_file, ": expected a JSON object of strings");
    const auto& keys = card_info_keys();
    for (const auto& [k, val] : info.items()) {
      PALM_CHECK(std::find(keys.begin(), keys.end(), k) != keys.end(), info_file, ": unknown key '", k,
                 "' (known: model_name, authors, intended_use, out_of_scope_uses, factors, known_limitations, "
                 "ethical_considerations, caveats_and_recommendations, license, contact, data_motivation, "
                 "data_collection, data_uses, data_distribution, data_maintenance)");
      PALM_CHECK(val.is_string(), info_file, ": '", k, "' must be a string");
    }
    f["info"] = info;
  }
  f["notes"] = notes;
  return f;
}

struct CardCli {
  std::string run, info, out;
  bool json = false, no_peak = false;
};

}  // namespace

void write_model_card(const std::string& run, const std::string& info, const std::string& out_dir, bool print_json,
                      bool measure_peak) {
  const auto docs = render_card(gather_facts(run, info, measure_peak));
  const fs::path out = out_dir.empty() ? fs::path(run) : fs::path(out_dir);
  fs::create_directories(out);
  write_text_atomic((out / "MODEL_CARD.md").string(), docs.model_card_md);
  write_text_atomic((out / "DATASHEET.md").string(), docs.datasheet_md);
  const std::string j = docs.json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  write_text_atomic((out / "card.json").string(), j);
  if (print_json) {
    fmt::print("{}", j);
  } else {
    fmt::print(stderr, "wrote {}, {} and {}\n", (out / "MODEL_CARD.md").string(), (out / "DATASHEET.md").string(),
               (out / "card.json").string());
  }
}

void register_card(CLI::App& app) {
  auto o = std::make_shared<CardCli>();
  auto* cmd = app.add_subcommand("card", "Write MODEL_CARD.md, DATASHEET.md and card.json for a training run");
  cmd->add_option("run", o->run, "Run directory")->required();
  cmd->add_option("--info", o->info,
                  "JSON of the author's statements (intended_use, out_of_scope_uses, known_limitations, "
                  "ethical_considerations, license, contact, ...; see docs/cards.md)");
  cmd->add_option("--out", o->out, "Output directory (default: the run directory)");
  cmd->add_flag("--json", o->json, "Print the card's JSON to stdout");
  cmd->add_flag("--no-peak", o->no_peak, "Do not measure the GEMM peak (no MFU)");
  cmd->callback([o] { write_model_card(o->run, o->info, o->out, o->json, !o->no_peak); });
}

}  // namespace palm
