// Model cards and datasheets of a tiny real run: the real numbers (checked against the
// checkpoint's config by closed form, the data manifest, the training state and the eval
// files), valid Markdown (parsed by markdown-it, an independent parser), no unfilled
// placeholder, and missing inputs reported in the card instead of failing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data_dir.h"
#include "shell_util.h"
#include <regex>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kText = palm::testing_util::fixtures_dir() + "/text/english.txt";
const std::string kFix = palm::testing_util::fixtures_dir() + "/eval";
std::string g_dir;
std::string p(const std::string& f) { return g_dir + "/" + f; }

using Cmd = palm::testing_util::CmdResult;
Cmd sh(const std::string& cmd) { return palm::testing_util::run_shell(cmd, p("stderr.txt")); }
Cmd palm(const std::string& args) { return sh(std::string(PALM_BINARY) + " " + args); }
std::string read(const std::string& f) {
  std::ifstream in(f);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
std::string commas(long long v) {
  std::string s = std::to_string(v), o;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) o += ',';
    o += s[i];
  }
  return o;
}

// markdown-it's view of a file: headings and the cell count of every table row
json parse_markdown(const std::string& file) {
  const Cmd r = sh("node " PALM_SOURCE_DIR "/tests/js/check_markdown.mjs " + file);
  EXPECT_EQ(r.status, 0) << r.err;
  return json::parse(r.out);
}

void expect_no_placeholder(const std::string& md, const std::string& what) {
  for (const char* bad : {"{{", "}}", "TODO", "TBD", "XXX", "| ? |", " ? ", "null", "<placeholder"})
    EXPECT_EQ(md.find(bad), std::string::npos) << what << " contains '" << bad << "'";
  EXPECT_FALSE(std::regex_search(md, std::regex("\\b(nan|inf)\\b", std::regex::icase))) << what << " has a non-finite number";
}

class Card : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string t = (fs::temp_directory_path() / "palm_card_XXXXXX").string();
    g_dir = ::mkdtemp(t.data());
    // two sources, one with Cyrillic text, so the scripts and the mixture are real
    std::ofstream ru(p("ru.txt"));
    for (int i = 0; i < 300; ++i) ru << "Привет, мир! Строка номер " << i << ".\n";
    ru.close();
    ASSERT_EQ(palm("tokenizer train --input " + kText + " --input " + p("ru.txt") +
                   " --vocab-size 600 --out " + p("tok"))
                  .status,
              0);
    ASSERT_EQ(palm("data build --tokenizer " + p("tok") + " --source english=" + kText +
                   ":format=lines:weight=3 --source russian=" + p("ru.txt") +
                   ":format=lines:weight=1 --val-fraction 0.05 --out " + p("data"))
                  .status,
              0);
    std::ofstream(p("info.json")) << R"({"intended_use": "Testing palm's model cards.", "license": "MIT",
      "contact": "palm developers", "known_limitations": "Trained for 40 steps: it knows nothing."})";
    const Cmd r = palm("train --preset tiny --data " + p("data") + " --out " + p("run") +
                       " --steps 40 --batch-size 4 --seq-len 64 --checkpoint-every 20 --eval-every 20 --card-info " +
                       p("info.json"));
    ASSERT_EQ(r.status, 0) << r.err;
  }
  static void TearDownTestSuite() { fs::remove_all(g_dir); }
};

TEST_F(Card, TrainWritesACardWithTheRunsRealNumbers) {
  ASSERT_TRUE(fs::exists(p("run/MODEL_CARD.md"))) << "palm train writes the card at the end";
  const std::string md = read(p("run/MODEL_CARD.md"));
  const json card = json::parse(read(p("run/card.json")));
  const json& f = card["facts"];
  // parameters in closed form from the config the checkpoint records
  const json state = json::parse(read(p("run/checkpoints/step-40/state.json")));
  const json& c = state["config"];
  const long long V = c["vocab_size"], D = c["d_model"], L = c["n_layers"], H = c["n_heads"], K = c["head_dim"],
                  F = c["d_ff"];
  const long long params = V * D + L * (D + D * (H * K + 2 * K + 2 * F) + H * K * D + F * D) + D;
  EXPECT_EQ(f["model"]["parameters"].get<long long>(), params);
  EXPECT_NE(md.find(commas(params)), std::string::npos) << "parameter count in the card";
  EXPECT_NE(md.find("d_model " + std::to_string(D)), std::string::npos);
  // training record
  EXPECT_EQ(f["training"]["tokens_seen"].get<double>(), state["tokens_seen"].get<double>());
  EXPECT_EQ(f["training"]["tokens_seen"].get<double>(), 40.0 * 4 * 64);
  EXPECT_NE(md.find(commas(40 * 4 * 64)), std::string::npos) << "tokens seen";
  EXPECT_EQ(f["training"]["validation"].size(), 2u) << "val losses at steps 20 and 40";
  EXPECT_TRUE(f["training"].contains("mfu")) << f["training"].dump();
  EXPECT_GT(f["training"]["mfu"].get<double>(), 0.0);
  // data manifest: every source with its documents, tokens and implied epochs
  const json man = json::parse(read(p("data/manifest.json")));
  ASSERT_EQ(f["data"]["sources"].size(), 2u);
  double wsum = 0;
  for (const auto& s : man["sources"]) wsum += s["weight"].get<double>();
  for (std::size_t i = 0; i < 2; ++i) {
    const json& s = man["sources"][i];
    const json& got = f["data"]["sources"][i];
    EXPECT_EQ(got["documents"], s["documents"]);
    EXPECT_EQ(got["tokens"], s["tokens"]);
    EXPECT_NEAR(got["epochs_implied"].get<double>(),
                40.0 * 4 * 64 * s["weight"].get<double>() / wsum / s["tokens"].get<double>(), 1e-12);
    EXPECT_NE(md.find("| " + s["name"].get<std::string>() + " |"), std::string::npos);
    EXPECT_NE(md.find(commas(s["tokens"].get<long long>())), std::string::npos);
  }
  // scripts: Latin and Cyrillic both present
  const std::string ds = read(p("run/DATASHEET.md"));
  EXPECT_NE(ds.find("Latin"), std::string::npos);
  EXPECT_NE(ds.find("Cyrillic"), std::string::npos);
  // the author's statements are quoted; the others are said to be missing
  EXPECT_NE(md.find("Testing palm's model cards."), std::string::npos);
  EXPECT_NE(md.find("**License**: MIT"), std::string::npos);
  EXPECT_NE(md.find("the `ethical_considerations` field"), std::string::npos);
  EXPECT_NE(md.find("No evaluation results were found"), std::string::npos) << "a missing eval is reported";
  expect_no_placeholder(md, "MODEL_CARD.md");
  expect_no_placeholder(ds, "DATASHEET.md");
}

TEST_F(Card, ValidMarkdownInThePapersStructure) {
  ASSERT_EQ(palm("card " + p("run") + " --out " + p("cards") + " --info " + p("info.json")).status, 0);
  const json mc = parse_markdown(p("cards/MODEL_CARD.md"));
  std::vector<std::string> h2;
  for (const auto& h : mc["headings"])
    if (h["level"] == 2) h2.push_back(h["text"]);
  const std::vector<std::string> want = {"Model Details", "Intended Use", "Factors", "Metrics", "Evaluation Data",
                                         "Training Data", "Training Procedure", "Quantitative Analyses",
                                         "Ethical Considerations", "Caveats and Recommendations"};
  for (const auto& w : want) EXPECT_NE(std::find(h2.begin(), h2.end(), w), h2.end()) << w;
  EXPECT_GE(mc["tables"].size(), 1u);
  for (const auto& t : mc["tables"])
    for (const auto& cells : t) EXPECT_EQ(cells, t[0]) << "every row of a table has the header's cells";
  const json dsj = parse_markdown(p("cards/DATASHEET.md"));
  std::vector<std::string> d2;
  for (const auto& h : dsj["headings"])
    if (h["level"] == 2) d2.push_back(h["text"]);
  EXPECT_EQ(d2, (std::vector<std::string>{"Motivation", "Composition", "Collection Process",
                                          "Preprocessing, Cleaning, Labeling", "Uses", "Distribution", "Maintenance"}));
  for (const auto& t : dsj["tables"])
    for (const auto& cells : t) EXPECT_EQ(cells, t[0]);
}

TEST_F(Card, EvalResultsOfTheRunAppearWithTheirNumbers) {
  ASSERT_EQ(palm("eval --model " + p("run") + " --task gsm8k --data " + kFix + "/gsm8k/test.jsonl --limit 2 --shots 1 --contamination " +
                 p("data"))
                .status,
            0);
  std::ofstream(p("ppl.txt")) << "Every model card states the numbers the run measured.";
  ASSERT_EQ(palm("eval --model " + p("run") + " --task perplexity --data " + p("ppl.txt")).status, 0);
  ASSERT_TRUE(fs::exists(p("run/eval/gsm8k-test.json"))) << "results kept with the run";
  const json r = json::parse(read(p("run/eval/gsm8k-test.json")));
  std::string ppl_file;
  for (const auto& e : fs::directory_iterator(p("run/eval")))
    if (e.path().filename().string().rfind("perplexity", 0) == 0) ppl_file = e.path().string();
  ASSERT_FALSE(ppl_file.empty());
  const json ppl = json::parse(read(ppl_file));
  const Cmd c = palm("card " + p("run") + " --json --no-peak");
  ASSERT_EQ(c.status, 0) << c.err;
  const json card = json::parse(c.out);
  ASSERT_EQ(card["facts"]["evaluations"].size(), 2u);
  for (const auto& e : card["facts"]["evaluations"]) {
    if (e["task"] == "gsm8k") {
      EXPECT_EQ(e["n"], r["n"]);
      EXPECT_EQ(e["metrics"]["accuracy"], r["accuracy"]);
      EXPECT_EQ(e["contaminated"], r["contamination"]["contaminated"]);
    } else {
      EXPECT_EQ(e["task"], "perplexity");
      EXPECT_EQ(e["metrics"]["bits_per_byte"], ppl["bits_per_byte"]);
    }
  }
  // the numbers themselves in the Markdown, as 4 significant digits
  auto sig4 = [](double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.4g", v);
    return std::string(b);
  };
  const std::string md = read(p("run/MODEL_CARD.md"));
  EXPECT_NE(md.find("| gsm8k |"), std::string::npos);
  EXPECT_NE(md.find("accuracy " + sig4(r["accuracy"].get<double>())), std::string::npos);
  const double bpb = ppl["bits_per_byte"].get<double>();
  ASSERT_GT(bpb, 0.0);
  EXPECT_NE(md.find("bits_per_byte " + sig4(bpb)), std::string::npos) << "bits_per_byte " << sig4(bpb) << " in\n" << md;
  EXPECT_NE(md.find("clean n " + std::to_string(r["contamination"]["clean"]["n"].get<int>())), std::string::npos);
  fs::remove_all(p("run/eval"));
}

TEST_F(Card, MissingOrBadInputs) {
  // a missing info file is reported in the card, not fatal
  Cmd r = palm("card " + p("run") + " --out " + p("c2") + " --info " + p("nope.json") + " --no-peak");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(read(p("c2/MODEL_CARD.md")).find("nope.json was not found"), std::string::npos);
  // an unknown key is a typo worth stopping for
  std::ofstream(p("bad_info.json")) << R"({"intended_uses": "x"})";
  r = palm("card " + p("run") + " --out " + p("c3") + " --info " + p("bad_info.json"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("unknown key 'intended_uses'"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(p("c3/MODEL_CARD.md")));
  r = palm("card " + p("data"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("not a training run directory"), std::string::npos) << r.err;
  // the data directory moved away: the card says what it cannot know
  fs::rename(p("data"), p("data_moved"));
  r = palm("card " + p("run") + " --out " + p("c4") + " --no-peak");
  fs::rename(p("data_moved"), p("data"));
  EXPECT_EQ(r.status, 0) << r.err;
  const std::string md = read(p("c4/MODEL_CARD.md"));
  EXPECT_NE(md.find("was not found when this card was made"), std::string::npos);
  expect_no_placeholder(md, "card without data");
}

}  // namespace
