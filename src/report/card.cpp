#include "report/card.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace palm {

namespace {

using json = nlohmann::ordered_json;

std::string num(double v, int digits = 4) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

std::string count(double v) {  // 1234567 -> "1,234,567"
  char b[64];
  std::snprintf(b, sizeof b, "%.0f", v);
  std::string s = b, out;
  const std::size_t start = s[0] == '-' ? 1 : 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i > start && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

std::string si(double v) {  // 8.63e9 -> "8.63B"
  const char* units[] = {"", "K", "M", "B", "T"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 4) v /= 1000, ++u;
  return num(v, 3) + units[u];
}

std::string flops(double v) {  // 1.18e11 -> "118 GFLOP"
  const char* units[] = {"", "K", "M", "G", "T", "P", "E", "Z"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 7) v /= 1000, ++u;
  return num(v, 3) + " " + units[u] + "FLOP";
}

std::string pct(double v) { return num(100 * v, 3) + "%"; }

std::string str(const json& j, const char* key, const std::string& missing) {
  if (!j.contains(key) || j[key].is_null()) return missing;
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

double dbl(const json& j, const char* key) { return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN; }

// Markdown and JSON built together, section by section.
class Document {
 public:
  explicit Document(const std::string& title) { md_ << "# " << title << "\n"; }
  void section(const std::string& title) {
    flush();
    current_ = title;
  }
  void para(const std::string& text) {
    if (current_.empty()) md_ << "\n" << text << "\n";  // the preamble, before any section
    else body_ << text << "\n\n";
  }
  void table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
    body_ << "|";
    for (const auto& h : head) body_ << " " << h << " |";
    body_ << "\n|";
    for (std::size_t i = 0; i < head.size(); ++i) body_ << "---|";
    body_ << "\n";
    for (const auto& r : rows) {
      body_ << "|";
      for (const auto& c : r) body_ << " " << escape(c) << " |";
      body_ << "\n";
    }
    body_ << "\n";
  }
  void kv(const std::vector<std::pair<std::string, std::string>>& rows) {
    for (const auto& [k, v] : rows) body_ << "- **" << k << "**: " << v << "\n";
    body_ << "\n";
  }
  std::string markdown() {
    flush();
    return md_.str();
  }
  const json& sections() const { return sections_; }

 private:
  static std::string escape(const std::string& s) {
    std::string o;
    for (char c : s) o += c == '|' ? std::string("\\|") : c == '\n' ? std::string(" ") : std::string(1, c);
    return o;
  }
  void flush() {
    if (current_.empty()) return;
    std::string b = body_.str();
    while (!b.empty() && b.back() == '\n') b.pop_back();
    md_ << "\n## " << current_ << "\n\n" << b << "\n";
    sections_[current_] = b;
    body_.str("");
    current_.clear();
  }
  std::ostringstream md_, body_;
  std::string current_;
  json sections_;
};

// What only the author can state: quoted from --info, or said to be missing.
std::string author(const json& facts, const std::string& key) {
  const json& info = facts.contains("info") ? facts["info"] : json();
  if (info.is_object() && info.contains(key) && info[key].is_string() && !info[key].get<std::string>().empty())
    return info[key].get<std::string>();
  return std::string("*Not provided by the author* (the `") + key + "` field of `palm card --info FILE.json`).";
}

std::string metric_cell(const json& e) {
  std::string s;
  for (const char* k : {"accuracy", "accuracy_norm", "pass@1", "pass@10", "pass@100", "bits_per_byte"}) {
    if (e["metrics"].contains(k)) s += (s.empty() ? "" : ", ") + std::string(k) + " " + num(e["metrics"][k].get<double>());
  }
  return s.empty() ? "none" : s;
}

std::string clean_cell(const json& e) {
  if (!e.contains("clean")) return "not checked";
  std::string s = count(dbl(e, "contaminated")) + " contaminated; clean n " + str(e["clean"], "n", "0");
  for (const char* k : {"accuracy", "pass@1", "bits_per_byte"})
    if (e["clean"].contains(k)) s += ", " + std::string(k) + " " + num(e["clean"][k].get<double>());
  return s;
}

// What palm launch healed: "none", or each failure and where the run went on from.
std::string restarts_line(const json& t) {
  if (!t.contains("restarts") || t["restarts"].empty()) return "none";
  std::string s = std::to_string(t["restarts"].size()) + ":";
  for (const auto& r : t["restarts"]) {
    s += " rank " + r.value("rank", json(-1)).dump();
    if (!str(r, "host", "").empty()) s += " on " + str(r, "host", "");
    s += ": " + str(r, "cause", "?");
    if (!str(r, "detail", "").empty()) s += " (" + str(r, "detail", "") + ")";
    s += r.value("event", "") == "shrink" ? ", continued on " + r.value("to_np", json(0)).dump() + " ranks"
                                           : ", resumed from " + (str(r, "from_checkpoint", "").empty() ? std::string("the start")
                                                                                                       : str(r, "from_checkpoint", ""));
    s += ";";
  }
  s.pop_back();
  return s;
}

void evaluation_sections(Document& d, const json& f) {
  const json& evs = f["evaluations"];
  d.section("Metrics");
  if (evs.empty()) {
    d.para("No evaluation results were found in the run (" + str(f, "evaluations_note", "") +
           "). Run `palm eval --model RUN ...` (results are kept in RUN/eval/) and regenerate this card.");
  } else {
    d.para("Metrics as reported by `palm eval` (docs/evaluation.md): accuracy for multiple choice (highest "
           "log-likelihood; accuracy_norm per byte of the choice) and exact-match tasks, pass@k by the unbiased "
           "estimator of Chen et al. 2021 for code executed in a sandbox, bits per byte for text. Decision "
           "thresholds do not apply to a language model; sampling settings are listed per result.");
  }
  d.section("Evaluation Data");
  if (evs.empty()) {
    d.para("None: no evaluation was run for this model.");
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& e : evs)
      rows.push_back({str(e, "task", "?"), str(e, "data", "?"), str(e, "shots", "0"), str(e, "n", "?"),
                      str(e, "chain_of_thought", "n/a")});
    d.table({"task", "data file", "shots", "examples", "chain of thought"}, rows);
  }
  d.section("Quantitative Analyses");
  if (evs.empty()) {
    d.para("None: no evaluation results.");
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& e : evs)
      rows.push_back({str(e, "task", "?"), str(e, "n", "?"), metric_cell(e), clean_cell(e), str(e, "file", "?")});
    d.table({"task", "n", "metrics", "contamination (PaLM 8-gram rule)", "results file"}, rows);
    d.para("Results are not disaggregated by demographic or other factors: the evaluation sets carry no such "
           "annotations.");
  }
}

}  // namespace

const std::vector<std::string>& card_info_keys() {
  static const std::vector<std::string> keys = {
      "model_name",        "authors",     "intended_use",     "out_of_scope_uses", "factors",
      "known_limitations", "ethical_considerations", "caveats_and_recommendations", "license", "contact",
      "data_motivation",   "data_collection", "data_uses", "data_distribution", "data_maintenance"};
  return keys;
}

CardDocuments render_card(const json& f) {
  const json& m = f["model"];
  const json& c = m["config"];
  const json& v = f["vocabulary"];
  const json& t = f["training"];
  const json& data = f["data"];
  const std::string name = f.contains("info") && f["info"].contains("model_name") ? f["info"]["model_name"].get<std::string>()
                                                                                  : str(m, "name", "palm model");
  CardDocuments out;

  // ---------------- model card ----------------
  Document d("Model card: " + name);
  d.para("Generated by `palm card` from the run itself (" + str(f["generated"], "palm_version", "palm") + ", " +
         str(f["generated"], "date", "") + "). Facts come from the checkpoint, the training record, the data "
         "manifest and `palm eval` results; author statements come from the info file or are marked as not "
         "provided.");
  d.section("Model Details");
  d.kv({{"Developed by", author(f, "authors")},
        {"Model", "decoder-only Transformer of the PaLM family (Chowdhery et al. 2022): parallel attention + "
                  "SwiGLU blocks with fused input projections, multi-query attention (one shared key/value head), "
                  "RoPE, shared input/output embedding with logits scaled by 1/sqrt(d_model), no biases"},
        {"Preset", str(t["config"], "preset", "custom configuration")},
        {"Configuration", "d_model " + str(c, "d_model", "?") + ", layers " + str(c, "n_layers", "?") + ", heads " +
                              str(c, "n_heads", "?") + " x " + str(c, "head_dim", "?") + ", d_ff " + str(c, "d_ff", "?") +
                              ", vocabulary " + str(c, "vocab_size", "?") + ", context " + str(c, "max_seq_len", "?") +
                              ", RoPE base " + str(c, "rope_base", "?") + ", LayerNorm eps " + str(c, "norm_eps", "?")},
        {"Parameters", count(dbl(m, "parameters")) + " (" + si(dbl(m, "parameters")) + "); embedding " +
                           count(dbl(m, "embedding_parameters")) + ", non-embedding " +
                           count(dbl(m, "non_embedding_parameters")) + ", matrices only " +
                           count(dbl(m, "matrix_parameters"))},
        {"Training FLOPs per token", flops(dbl(m, "flops_per_token")) + " (6N + 12 L H K T, PaLM Appendix B)"},
        {"Vocabulary", "SentencePiece " + str(v, "model_type", "?") + ", " + str(v, "size", "?") + " pieces; special "
                           "tokens " + str(v, "special", "{}") + "; byte fallback " + str(v, "byte_fallback", "?") +
                           "; digits split " + str(v, "split_digits", "?") + "; normalization " +
                           str(v, "normalization", "?") + "; sha256 " + str(v, "sha256", "?")},
        {"Checkpoint", str(m, "checkpoint", "?") + " (step " + str(m, "step", "?") + ", sha256 " +
                           str(m, "sha256", "?") + ")"},
        {"Software", str(f["generated"], "palm_version", "?")},
        {"License", author(f, "license")},
        {"Contact", author(f, "contact")}});
  d.section("Intended Use");
  d.kv({{"Intended use", author(f, "intended_use")}, {"Out-of-scope uses", author(f, "out_of_scope_uses")}});
  d.section("Factors");
  std::string scripts;
  if (data.contains("scripts") && data["scripts"].contains("shares")) {
    for (const auto& s : data["scripts"]["shares"]) {
      if (s["share"].get<double>() < 0.001) continue;
      scripts += (scripts.empty() ? "" : ", ") + s["script"].get<std::string>() + " " + pct(s["share"].get<double>());
    }
  }
  d.para("Writing systems in the training text (share of characters): " +
         (scripts.empty() ? std::string("not measured (data directory not available).") : scripts + ".") +
         " The model's behaviour on languages and scripts that are rare or absent there is not measured.");
  d.para("Author-stated factors: " + author(f, "factors"));
  evaluation_sections(d, f);
  d.section("Training Data");
  if (data.value("found", false)) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : data["sources"])
      rows.push_back({str(s, "name", "?"), num(dbl(s, "weight"), 3), count(dbl(s, "documents")), count(dbl(s, "tokens")),
                      num(dbl(s, "epochs_implied"), 3)});
    d.table({"source", "sampling weight", "documents", "training tokens", "epochs seen"}, rows);
    d.para("Details in DATASHEET.md. Data directory: " + str(data, "dir", "?") + " (manifest sha256 " +
           str(data, "manifest_sha256", "?") + ").");
  } else {
    d.para("The data directory recorded by the run (" + str(data, "dir", "?") + ") was not found when this card was "
           "made; only the run's own record is available: manifest sha256 " + str(data, "manifest_sha256", "?") + ".");
  }
  d.section("Training Procedure");
  std::vector<std::pair<std::string, std::string>> tr = {
      {"Steps", count(dbl(t, "steps"))},
      {"Tokens seen", count(dbl(t, "tokens_seen"))},
      {"Batch", str(t["config"], "batch_size", "?") + " sequences x " + str(t["config"], "seq_len", "?") +
                    " tokens" +
                    (t["config"].value("batch_ramp", "").empty() ? std::string("")
                                                                 : ", ramp " + t["config"]["batch_ramp"].get<std::string>())},
      {"Optimizer", str(t["config"], "optimizer", "?") + ", learning-rate schedule " + str(t["config"], "lr_schedule", "?") +
                        " (peak " + str(t["config"], "lr", "?") + "), gradient clipping " + str(t["config"], "clip_norm", "?") +
                        ", z-loss " + str(t["config"], "z_loss", "?") + ", seed " + str(t["config"], "seed", "?") +
                        (t["config"].value("bf16", false) ? ", bf16 GEMMs" : ", fp32")},
      {"Wall time", num(dbl(t, "wall_seconds"), 4) + " s"},
      {"Hardware", t.contains("hardware") ? str(t["hardware"], "cpu", "?") + ", " + str(t["hardware"], "threads", "?") +
                                                " threads of " + str(t["hardware"], "logical_cpus", "?") +
                                                " logical CPUs, GPUs " + str(t["hardware"], "gpus", "?")
                                          : std::string("not recorded by this run")},
      {"Throughput", num(dbl(t, "tokens_per_second"), 4) + " tokens/s, " + flops(dbl(t, "achieved_flops_per_second")) +
                         "/s"},
      {"MFU", std::isnan(dbl(t, "mfu")) ? str(t, "mfu_note", "not computed")
                                        : pct(dbl(t, "mfu")) + " of " + flops(dbl(t, "peak_flops_per_second")) + "/s (" +
                                              str(t, "mfu_note", "") + ")"},
      {"Total training compute", flops(dbl(t, "total_flops"))},
      {"Loss", "first " + num(dbl(t["loss"], "first")) + ", lowest " + num(dbl(t["loss"], "min")) + ", final " +
                   num(dbl(t["loss"], "final")) + " (mean of the last " + str(t["loss"], "final_window", "?") + " steps)"},
      {"Validation loss", t["validation"].empty()
                              ? std::string("not measured")
                              : "first " + num(t["validation"].front()["val_loss"].get<double>()) + " (step " +
                                    t["validation"].front()["step"].dump() + "), last " +
                                    num(t["validation"].back()["val_loss"].get<double>()) + " (step " +
                                    t["validation"].back()["step"].dump() + ")"},
      {"Loss spikes and rollbacks", count(dbl(t, "rollback_count")) + (t["rollbacks"].empty() ? "" : ": " + t["rollbacks"].dump())},
      {"Restarts (palm launch)", restarts_line(t)}};
  d.kv(tr);
  d.section("Ethical Considerations");
  d.para(author(f, "ethical_considerations"));
  d.section("Caveats and Recommendations");
  d.kv({{"Known limitations", author(f, "known_limitations")},
        {"Recommendations", author(f, "caveats_and_recommendations")}});
  if (f.contains("notes") && !f["notes"].empty()) {
    std::string notes;
    for (const auto& n : f["notes"]) notes += "- " + n.get<std::string>() + "\n";
    d.para("What this card could not determine:\n\n" + notes);
  }
  out.model_card_md = d.markdown();
  out.json["model_card"] = d.sections();

  // ---------------- datasheet ----------------
  Document s("Datasheet: training data of " + name);
  s.para("Generated by `palm card` from the data manifest (" + str(data, "dir", "?") + ") and the run's record; "
         "answers that only the dataset's author can give come from the info file or are marked as not provided.");
  s.section("Motivation");
  s.para(author(f, "data_motivation"));
  s.section("Composition");
  if (data.value("found", false)) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& src : data["sources"])
      rows.push_back({str(src, "name", "?"), str(src, "kind", "?"), str(src, "paths", "?"), count(dbl(src, "files")),
                      count(dbl(src, "documents")), count(dbl(src, "bytes")), count(dbl(src, "tokens"))});
    s.table({"source", "kind", "inputs", "files", "documents", "bytes", "training tokens"}, rows);
    s.kv({{"Documents in total", count(dbl(data, "documents"))},
          {"Training tokens in total", count(dbl(data, "train_tokens"))},
          {"Validation split", "a document is held out when hash(seed, content) < " + str(data, "val_fraction", "?") +
                                   "; held out: " + count(dbl(data, "val_documents")) + " documents, " +
                                   count(dbl(data, "val_tokens")) + " tokens"},
          {"Writing systems", scripts.empty() ? std::string("not measured")
                                              : scripts + " (of " + count(dbl(data["scripts"], "characters")) +
                                                    " characters decoded from " + str(data["scripts"], "sample", "?") + ")"}});
  } else {
    s.para("The data directory was not found; its composition cannot be described.");
  }
  s.section("Collection Process");
  s.para(author(f, "data_collection"));
  if (data.value("found", false)) s.para("Inputs as recorded in the manifest are listed under Composition.");
  s.section("Preprocessing, Cleaning, Labeling");
  if (data.value("found", false)) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& src : data["sources"])
      rows.push_back({str(src, "name", "?"), count(dbl(src, "duplicates")), count(dbl(src, "near_duplicates")),
                      count(dbl(src, "invalid_utf8_documents")), count(dbl(src, "filtered_documents")),
                      count(dbl(src, "malformed_lines"))});
    s.table({"source", "exact duplicates removed", "near-duplicates removed", "invalid UTF-8 documents skipped",
             "filtered documents", "malformed lines"},
            rows);
    s.para("Exact duplicates by a 128-bit content hash; near-duplicates by MinHash (128 permutations, LSH 32x4) at "
           "Jaccard >= " + str(data, "near_dup_threshold", "?") + "; tokenized with the run's tokenizer and packed with "
           "<eod> between documents (docs/data.md). No labels.");
  } else {
    s.para("Not available: the data directory was not found.");
  }
  s.section("Uses");
  if (data.value("found", false)) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& src : data["sources"]) rows.push_back({str(src, "name", "?"), num(dbl(src, "epochs_implied"), 3)});
    s.para("Used to train " + name + " for " + count(dbl(t, "tokens_seen")) + " tokens. Epochs per source implied by the "
           "tokens seen and the sampling weights:");
    s.table({"source", "epochs"}, rows);
  }
  s.para("Other uses: " + author(f, "data_uses"));
  s.section("Distribution");
  s.para(author(f, "data_distribution"));
  s.section("Maintenance");
  s.para(author(f, "data_maintenance"));
  out.datasheet_md = s.markdown();
  out.json["datasheet"] = s.sections();
  out.json["facts"] = f;
  return out;
}

}  // namespace palm
