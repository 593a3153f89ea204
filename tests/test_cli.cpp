// Integration tests: the real build/palm binary, driven as a user would, including bad
// input (one "palm: error:" line on stderr, non-zero exit, nothing half-written).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "shell_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using palm::testing_util::CmdResult;

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string t = (fs::temp_directory_path() / "palm_cli_XXXXXX").string();
    dir_ = ::mkdtemp(t.data());
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string path(const std::string& f) { return (fs::path(dir_) / f).string(); }

  static CmdResult run(const std::string& args) { return sh(std::string(PALM_BINARY) + " " + args); }
  static CmdResult sh(const std::string& cmd) { return palm::testing_util::run_shell(cmd, path("stderr.txt")); }
  static void expect_error(const std::string& args, const std::string& fragment) {
    const CmdResult r = run(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << args << "\nstderr: " << r.err;
    EXPECT_TRUE(r.out.empty()) << args << "\nstdout: " << r.out;
  }
  static std::string tiny_model() {
    const std::string m = path("tiny.safetensors");
    if (!fs::exists(m)) {
      const CmdResult r = run("init --preset tiny --seed 3 --out " + m);
      EXPECT_EQ(r.status, 0) << r.err;
    }
    return m;
  }
  static std::string dir_;
};
std::string Cli::dir_;

TEST_F(Cli, VersionAndHelpEverywhere) {
  CmdResult r = run("--version");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out.rfind("palm ", 0), 0u) << r.out;
  for (const char* cmd : {"", "info", "init", "score", "bench", "bench train", "bench tokenizer", "tokenizer",
                          "tokenizer train", "tokenizer encode", "tokenizer decode", "tokenizer info",
                          "data", "data build", "data info", "train", "plot", "generate", "serve", "dashboard",
                          "bench generate"}) {
    r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.status, 0) << cmd;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << cmd << ": " << r.out;
  }
  r = run("");
  EXPECT_NE(r.status, 0) << "no subcommand is an error";
  r = run("frobnicate");
  EXPECT_NE(r.status, 0);
}

TEST_F(Cli, InfoReproducesThePaperTable1) {
  struct Row {
    const char* preset;
    long long params;
    double billions;
  };
  // PaLM Table 1: 8.63B, 62.50B, 540.35B. Our exact counts include the LayerNorm scales
  // (2.19M for 540B); without them 540B rounds to the paper's 540.35B.
  for (Row row : {Row{"palm-8b", 8632012800LL, 8.63}, Row{"palm-62b", 62495662080LL, 62.50},
                  Row{"palm-540b", 540356474880LL, 540.35}}) {
    const CmdResult r = run(std::string("info --preset ") + row.preset + " --json");
    ASSERT_EQ(r.status, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["parameters"].get<long long>(), row.params) << row.preset;
    EXPECT_NEAR(j["matrix_parameters"].get<double>() / 1e9, row.billions, 0.005) << row.preset;
  }
  const json j = json::parse(run("info --preset palm-540b --json").out);
  // Appendix B: 6N + 12 L H K T = 3.28 TFLOPs per token at T = 2048
  EXPECT_NEAR(j["flops_per_token"].get<double>() / 1e12, 3.28, 0.005);
  EXPECT_EQ(j["kv_cache_bytes_per_token"].get<long long>(), 118LL * 2 * 256 * 4);
  const CmdResult text = run("info --preset bench-small --seq-len 256 --batch-size 8");
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.out.find("activations"), std::string::npos);
}

// palm info without a model: the backends and devices; --backend picks one or says why not.
TEST_F(Cli, InfoListsTheBackendsAndBackendChoosesOne) {
  const CmdResult r = run("info --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_GE(j["backends"].size(), 2u);
  EXPECT_EQ(j["backends"][0]["name"], "cpu");
  EXPECT_TRUE(j["backends"][0]["usable"].get<bool>());
  EXPECT_EQ(j["backends"][0]["devices"].size(), 1u);
  EXPECT_EQ(j["backends"][1]["name"], "cuda");
  const bool cuda = j["backends"][1]["usable"].get<bool>();
  EXPECT_EQ(j["backends"][cuda ? 1 : 0]["default"], true) << "the default is cuda where a GPU is, else cpu";
  if (!cuda) {
    EXPECT_FALSE(j["backends"][1]["why_not"].get<std::string>().empty());
    // a run on it is refused before any work, naming why (this build or the machine)
    const CmdResult c = run("--backend cuda info --preset tiny");
    EXPECT_NE(c.status, 0);
    EXPECT_TRUE(c.err.find("built without CUDA") != std::string::npos || c.err.find("no CUDA device") != std::string::npos)
        << c.err;
  }
  // after the subcommand too, and the model's info then carries the backends
  const CmdResult t = run("info --preset tiny --backend cpu --json");
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(json::parse(t.out)["backends"][0]["default"], true);
  expect_error("--backend tpu info", "--backend: tpu not in");
}

TEST_F(Cli, ScoreMatchesThePyTorchReference) {
  const std::string m = tiny_model();
  const std::string toks = "5 17 3 200 511 0 42 42 42 7";
  const CmdResult r = run("score --model " + m + " --tokens \"" + toks + "\" --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const json got = json::parse(r.out);
  const CmdResult ref = sh("/usr/bin/python3 " PALM_SOURCE_DIR "/tools/palm_ref.py score --model " + m +
                     " --tokens \"" + toks + "\"");
  ASSERT_EQ(ref.status, 0) << ref.err;
  const json want = json::parse(ref.out);
  ASSERT_EQ(got["logprobs"].size(), 9u);
  for (std::size_t i = 0; i < 9; ++i) {
    EXPECT_NEAR(got["logprobs"][i].get<double>(), want["logprobs"][i].get<double>(), 1e-4) << i;
  }
  EXPECT_NEAR(got["mean_nll"].get<double>(), want["mean_nll"].get<double>(), 1e-4);
  // the same through --tokens-file
  std::ofstream(path("toks.txt")) << toks << "\n";
  const CmdResult f = run("score --model " + m + " --tokens-file " + path("toks.txt") + " --json");
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(json::parse(f.out), got);
}

TEST_F(Cli, InitIsDeterministicPerSeed) {
  ASSERT_EQ(run("init --preset tiny --seed 9 --out " + path("a.safetensors")).status, 0);
  ASSERT_EQ(run("init --preset tiny --seed 9 --out " + path("b.safetensors")).status, 0);
  ASSERT_EQ(run("init --preset tiny --seed 10 --out " + path("c.safetensors")).status, 0);
  EXPECT_EQ(sh("cmp -s " + path("a.safetensors") + " " + path("b.safetensors")).status, 0);
  EXPECT_NE(sh("cmp -s " + path("a.safetensors") + " " + path("c.safetensors")).status, 0);
  std::ofstream(path("cfg.json")) << R"({"vocab_size": 97, "d_model": 48, "n_layers": 2,
      "n_heads": 3, "head_dim": 16, "d_ff": 80, "max_seq_len": 13})";
  const CmdResult r = run("init --config " + path("cfg.json") + " --out " + path("cfg.safetensors"));
  EXPECT_EQ(r.status, 0) << r.err;
  const json info = json::parse(run("info --config " + path("cfg.json") + " --json").out);
  EXPECT_EQ(info["config"]["vocab_size"], 97);
}

TEST_F(Cli, BadInputIsOneClearErrorLine) {
  const std::string m = tiny_model();
  expect_error("score --model " + m + " --tokens \"1 2 512\"", "id 512 at position 2 is outside the vocabulary [0, 512)");
  expect_error("score --model " + m + " --tokens \"1 x 2\"", "'x' is not a token id");
  expect_error("score --model " + m + " --tokens \"1 -4\"", "out of range");
  expect_error("score --model " + m + " --tokens \"1\"", "need at least 2 tokens");
  std::string long_seq;
  for (int i = 0; i < 258; ++i) long_seq += "1 ";
  expect_error("score --model " + m + " --tokens \"" + long_seq + "\"", "longer than the model's max_seq_len");
  expect_error("score --model " + path("nope.safetensors") + " --tokens \"1 2\"", "nope.safetensors: no such file or directory");
  std::ofstream(path("junk.safetensors")) << "this is not a model at all";
  expect_error("score --model " + path("junk.safetensors") + " --tokens \"1 2\"", "corrupt safetensors");
  expect_error("info --preset palm-9000b", "unknown preset 'palm-9000b'");
  std::ofstream(path("bad.json")) << R"({"vocab_size": 10, "d_model": "big"})";
  expect_error("info --config " + path("bad.json"), "'d_model' must be an integer");
  std::ofstream(path("odd.json")) << R"({"vocab_size": 10, "d_model": 8, "n_layers": 1,
      "n_heads": 1, "head_dim": 3, "d_ff": 8, "max_seq_len": 8})";
  expect_error("info --config " + path("odd.json"), "head_dim must be even");
  // an unwritable output leaves no file behind
  expect_error("init --preset tiny --out " + path("missing/dir/x.safetensors"), "cannot create a temporary file");
  EXPECT_FALSE(fs::exists(path("missing")));
  // a model too large for this machine's memory is refused up front
  expect_error("init --preset palm-540b --out " + path("huge.safetensors"), "out of memory");
  EXPECT_FALSE(fs::exists(path("huge.safetensors")));
}

TEST_F(Cli, EveryNumberIsRangeChecked) {
  // each of these was accepted (or crashed, or hung) before
  const std::string m = tiny_model();
  expect_error("info --preset tiny --seq-len 99999999999999999999", "--seq-len: must be an integer in [1, 1048576]");
  expect_error("info --preset tiny --seq-len -1", "--seq-len: must be an integer in [1, 1048576]");
  expect_error("train --preset tiny --data d --out r --seed -1", "--seed: must be an integer in [0,");
  expect_error("train --preset tiny --data d --out r --clip-norm -1", "--clip-norm: must be a finite number in [0,");
  expect_error("train --preset tiny --data d --out r --seq-len -1", "--seq-len: must be an integer in [1,");
  expect_error("serve --model " + m + " --grace nan", "--grace: must be a finite number in [0, 3600], got 'nan'");
  for (const char* t : {"0", "-1", "nan", "inf", "1e300"})
    expect_error(std::string("eval --task gsm8k --data d --completions c --timeout ") + t, "--timeout: must be a finite number");
  expect_error("eval --task gsm8k --data d --completions c --jobs 100000", "--jobs: must be an integer in [0, 256]");
  expect_error("score --model " + m + " --tokens \"1 2\" --threads 100000", "--threads must be in [0, 1024]");
  // a model file whose config claims an absurd context: refused before allocating
  std::ifstream in(m, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  std::string header = bytes.substr(8, n);
  const std::string key = "\\\"max_seq_len\\\":256";
  const std::size_t at = header.find(key);
  ASSERT_NE(at, std::string::npos) << header.substr(0, 300);
  header.replace(at, key.size(), "\\\"max_seq_len\\\":4611686018427387904");
  while (header.size() % 8) header += ' ';
  const std::uint64_t hn = header.size();
  std::ofstream out(path("huge_ctx.safetensors"), std::ios::binary);
  out.write(reinterpret_cast<const char*>(&hn), 8);
  out << header << bytes.substr(8 + n);
  out.close();
  expect_error("score --model " + path("huge_ctx.safetensors") + " --tokens \"1 2\"", "max_seq_len must be at most 1048576");
}

TEST_F(Cli, TokenizerTrainEncodeDecodeInfo) {
  const std::string tok = path("tok");
  CmdResult r = run("tokenizer train --input '/usr/lib/python3.11/json/*.py' --input /usr/share/games/fortunes/ru "
                    "--vocab-size 700 --max-sentences 20000 --out " + tok);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run("tokenizer info --tokenizer " + tok + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const json info = json::parse(r.out);
  EXPECT_EQ(info["vocab_size"], 700);
  EXPECT_EQ(info["special"], json::parse(R"({"pad": 0, "eod": 1, "unk": 2})"));
  EXPECT_EQ(info["byte_tokens"], 256);
  const json meta = json::parse(std::ifstream(tok + "/tokenizer.json"));
  EXPECT_EQ(meta["sha256"], info["sha256"]);
  EXPECT_EQ(meta["settings"]["byte_fallback"], "true");
  EXPECT_EQ(meta["settings"]["split_digits"], "true");

  // a multilingual file with code through the streaming commands, both thread counts
  std::ofstream(path("mixed.txt")) << "  Привет, мир!\r\n\tdef f(x):  return 42\n\n東京 🙂 \u2581\n"
                                   << std::string(100000, 'x') << "\nend without newline";
  for (int threads : {1, 2}) {
    r = sh("cat " + path("mixed.txt") + " | " PALM_BINARY " tokenizer encode --threads " + std::to_string(threads) +
           " --tokenizer " + tok + " | " PALM_BINARY " tokenizer decode --tokenizer " + tok + " | cmp - " + path("mixed.txt"));
    EXPECT_EQ(r.status, 0) << "round trip with " << threads << " threads: " << r.err;
  }
  r = run("tokenizer encode --tokenizer " + tok + " --text '2024' --pieces");
  EXPECT_EQ(r.out, "2 0 2 4\n");
  // bad input
  std::ofstream(path("bad.txt"), std::ios::binary) << "fine line\nthen \xff here";
  r = sh(PALM_BINARY " tokenizer encode --tokenizer " + tok + " < " + path("bad.txt"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("invalid UTF-8 at byte offset 15"), std::string::npos) << r.err;
  r = sh("echo '5 99999' | " PALM_BINARY " tokenizer decode --tokenizer " + tok);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("outside the vocabulary"), std::string::npos) << r.err;
  expect_error("tokenizer train --input /usr/lib/python3.11/json/ --vocab-size 700 --out " + tok, "already exists");
  expect_error("tokenizer info --tokenizer " + path("nope"), "not a tokenizer directory");
}

TEST_F(Cli, ScoreTextThroughTheTokenizer) {
  const std::string tok = path("tok2");
  ASSERT_EQ(run("tokenizer train --input /usr/lib/python3.11/json/ --vocab-size 500 --out " + tok).status, 0);
  const std::string m = path("tokmodel.safetensors");
  CmdResult r = run("init --preset tiny --tokenizer " + tok + " --out " + m);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string text = "import json  # 12";
  r = run("score --model " + m + " --tokenizer " + tok + " --text '" + text + "' --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const CmdResult ids = run("tokenizer encode --tokenizer " + tok + " --text '" + text + "'");
  const CmdResult by_ids = run("score --model " + m + " --tokens '" + ids.out + "' --json");
  ASSERT_EQ(by_ids.status, 0) << by_ids.err;
  EXPECT_EQ(json::parse(r.out), json::parse(by_ids.out));
  // a model made for another tokenizer is refused
  const std::string other = path("tok3");
  ASSERT_EQ(run("tokenizer train --input /usr/lib/python3.11/json/ --vocab-size 500 --seed 1 --max-sentences 300 --out " + other).status, 0);
  expect_error("score --model " + m + " --tokenizer " + other + " --text 'x y'", "was made for the tokenizer with sha256");
  expect_error("score --model " + m + " --text 'x y'", "--text needs --tokenizer");
}

TEST_F(Cli, DataBuildAndInfo) {
  const std::string tok = path("dtok");
  ASSERT_EQ(run("tokenizer train --input /usr/lib/python3.11/json/ --vocab-size 500 --out " + tok).status, 0);
  std::ofstream(path("books.txt")) << "one book line\nanother line\none book line\n";
  const std::string out = path("data");
  CmdResult r = run("data build --tokenizer " + tok + " --source 'books=" + path("books.txt") +
                    ":format=lines:weight=3' --source 'code=/usr/lib/python3.11/json/*.py:kind=code' --out " + out);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run("data info " + out + " --json --tokens 1e6");
  ASSERT_EQ(r.status, 0) << r.err;
  const json m = json::parse(r.out);
  ASSERT_EQ(m["sources"].size(), 2u);
  EXPECT_EQ(m["sources"][0]["documents"], 2);
  EXPECT_EQ(m["sources"][0]["duplicates"], 1);
  EXPECT_DOUBLE_EQ(m["sources"][0]["weight"].get<double>(), 0.75);
  EXPECT_NEAR(m["sources"][1]["epochs"].get<double>(), 0.25e6 / m["sources"][1]["tokens"].get<double>(), 1e-9);
  r = run("data info " + out + " --tokens 1e6");
  EXPECT_NE(r.out.find("books"), std::string::npos);
  EXPECT_NE(r.out.find("epochs"), std::string::npos);
  // the default corpus from Debian packages (capped, with a given tokenizer to stay quick)
  r = run("data build --default --max-mb 3 --tokenizer " + tok + " --out " + path("default"));
  ASSERT_EQ(r.status, 0) << r.err;
  const json d = json::parse(run("data info " + path("default") + " --json").out);
  std::vector<std::string> names;
  for (const auto& s : d["sources"]) names.push_back(s["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"fortunes", "bible", "jargon", "perldoc", "python"}));
  for (const auto& s : d["sources"]) EXPECT_GT(s["tokens"].get<long>(), 1000) << s["name"];
  // bad input
  expect_error("data build --tokenizer " + tok + " --source 'x=" + path("nothing*.txt") + "' --out " + path("d2"), "no files match");
  expect_error("data build --tokenizer " + tok + " --source 'x=" + path("books.txt") + ":colour=red' --out " + path("d2"), "unknown option 'colour=red'");
  expect_error("data build --tokenizer " + tok + " --source 'x=" + path("books.txt") + "' --out " + out, "already exists");
  expect_error("data build --tokenizer " + path("nope") + " --source 'x=" + path("books.txt") + "' --out " + path("d2"), "not a tokenizer directory");
  expect_error("data info " + path("nope"), "not a data directory");
  EXPECT_FALSE(fs::exists(path("d2")));
}

TEST_F(Cli, GenerateAgreesWithScoreAndBatchesExactly) {
  const std::string tok = path("gtok");
  ASSERT_EQ(run("tokenizer train --input '/usr/lib/python3.11/json/*.py' --vocab-size 500 --out " + tok).status, 0);
  const std::string m = path("gen.safetensors");
  ASSERT_EQ(run("init --preset tiny --seed 4 --tokenizer " + tok + " --out " + m).status, 0);
  const std::string common = "generate --model " + m + " --tokenizer " + tok + " --json --max-tokens 12";
  CmdResult r = run(common + " --prompt 'import json'");
  ASSERT_EQ(r.status, 0) << r.err;
  const json g = json::parse(r.out);
  ASSERT_EQ(g["tokens"].size(), 12u);
  EXPECT_EQ(g["finish_reason"], "length");
  EXPECT_NE(r.err.find("decode"), std::string::npos) << "tokens/s on stderr";
  // logprobs are the model's: palm score of prompt + generated tokens gives the same
  std::string all;
  for (const auto& t : g["prompt_tokens"]) all += std::to_string(t.get<int>()) + " ";
  for (const auto& t : g["tokens"]) all += std::to_string(t.get<int>()) + " ";
  const json sc = json::parse(run("score --model " + m + " --tokens '" + all + "' --json").out);
  const std::size_t np = g["prompt_tokens"].size();
  for (std::size_t i = 0; i < 12; ++i)
    EXPECT_NEAR(g["logprobs"][i].get<double>(), sc["logprobs"][np - 1 + i].get<double>(), 1e-4) << i;
  // text is the decoding of the tokens
  std::string ids;
  for (const auto& t : g["tokens"]) ids += std::to_string(t.get<int>()) + " ";
  EXPECT_EQ(sh("echo '" + ids + "' | " PALM_BINARY " tokenizer decode --tokenizer " + tok).out, g["text"].get<std::string>());
  // a batch of prompts equals each prompt alone (greedy)
  std::ofstream(path("prompts.jsonl")) << "{\"prompt\": \"import json\"}\n{\"prompt\": \"def f(x):\\n    return\"}\n\"class A:\"\n";
  r = run(common + " --prompts-file " + path("prompts.jsonl"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<json> batch;
  for (std::size_t at = 0, nl; (nl = r.out.find('\n', at)) != std::string::npos; at = nl + 1) batch.push_back(json::parse(r.out.substr(at, nl - at)));
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[0]["tokens"], g["tokens"]);
  const json alone = json::parse(run(common + " --prompt 'class A:'").out);
  EXPECT_EQ(batch[2]["tokens"], alone["tokens"]);
  // sampling is reproducible for a seed and differs across seeds
  const std::string samp = common + " --prompt 'import json' --temperature 1.0 --top-p 0.9 --top-k 50";
  EXPECT_EQ(json::parse(run(samp + " --seed 1").out)["tokens"], json::parse(run(samp + " --seed 1").out)["tokens"]);
  EXPECT_NE(json::parse(run(samp + " --seed 1").out)["tokens"], json::parse(run(samp + " --seed 2").out)["tokens"]);
  // a stop string ends the text before it
  const std::string text = g["text"];
  const std::string stop = text.substr(text.size() / 2, 2);
  const json st = json::parse(run(common + " --prompt 'import json' --stop '" + stop + "'").out);
  EXPECT_EQ(st["finish_reason"], "stop");
  EXPECT_EQ(st["text"].get<std::string>(), text.substr(0, text.find(stop)));
  // streaming output for one prompt is the same text
  EXPECT_EQ(run("generate --model " + m + " --tokenizer " + tok + " --max-tokens 12 --prompt 'import json'").out, text + "\n");
  // bad input
  std::string long_prompt(2000, 'x');
  expect_error(common + " --prompt '" + long_prompt + "'", "use --truncate left");
  EXPECT_EQ(run(common + " --prompt '" + long_prompt + "' --truncate left").status, 0);
  expect_error(common + " --prompt 'x' --top-p 0", "top-p must be in (0, 1]");
  expect_error("generate --model " + m + " --prompt 'x'", "no tokenizer stored with it");
}

TEST_F(Cli, BenchTrainBf16TimesPalmsFp32StepInTheSameRun) {
  // #21's bf16 training goal is a ratio to palm's own fp32 step measured in one run: --bf16
  // alternates fp32 steps with the bf16 ones and reports both, and bf16's effect on the loss
  // and gradients (same weights and batch).
  const CmdResult r = run("bench train --preset tiny --batch-size 2 --seq-len 32 --steps 2 --bf16 --no-reference --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("palm fp32 forward+backward"), std::string::npos) << r.out;
  const auto j = json::parse(r.out.substr(r.out.rfind("\n{") + 1), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  const double bf16 = j["tokens_per_s"].get<double>(), fp32 = j["fp32_tokens_per_s"].get<double>();
  EXPECT_TRUE(bf16 > 0 && fp32 > 0 && std::isfinite(bf16) && std::isfinite(fp32)) << bf16 << " " << fp32;
  EXPECT_DOUBLE_EQ(j["ratio_vs_fp32"].get<double>(), bf16 / fp32);
  // bf16 GEMMs move the loss by ~1e-5 relative and keep the gradient's direction
  EXPECT_NEAR(j["loss_bf16"].get<double>(), j["loss_fp32"].get<double>(), 1e-3 * j["loss_fp32"].get<double>());
  EXPECT_NE(j["loss_bf16"].get<double>(), j["loss_fp32"].get<double>());  // the GEMMs really were bf16
  EXPECT_GT(j["grad_cosine_bf16_vs_fp32"].get<double>(), 0.999);
  EXPECT_FALSE(j.contains("reference_tokens_per_s"));  // --no-reference
  // without --bf16 there is no fp32 comparison to make
  const CmdResult f = run("bench train --preset tiny --batch-size 2 --seq-len 32 --steps 1 --no-reference --json");
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_FALSE(json::parse(f.out.substr(f.out.rfind("\n{") + 1))["fp32_tokens_per_s"].is_number());
}

TEST_F(Cli, BenchGenerateMeasuresEachFormatsLogprobChangeAtBatch1And16) {
  // From 3 rows on, the stored bf16 and int8 products run other kernels than at batch 1
  // (bf16: activations rounded to bf16 for vdpbf16ps where the CPU has AVX512_BF16; int8: the
  // same quantization, another loop), so the bench measures the logprob change against fp32
  // at both batch sizes.
  const CmdResult r = run("bench generate --preset tiny --prompt 16 --tokens 4 --no-reference --rounds 3 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = json::parse(r.out.substr(r.out.rfind("\n{") + 1), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  auto mean = [&](const char* f, const char* key) { return j[std::string("stored_") + f][key].get<double>(); };
  for (const char* key : {"mean_abs_dlogprob", "mean_abs_dlogprob_batch16"}) {
    EXPECT_LT(mean("fp32", key), 1e-4) << key;  // fp32 stored weights: the same products up to summation order
    EXPECT_GT(mean("bf16", key), 1e-5) << key;  // the weights really were rounded
    EXPECT_LT(mean("bf16", key), 0.02) << key;  // bf16 weights change a logprob by ~2^-9 relative per weight
    EXPECT_GT(mean("int8", key), mean("bf16", key)) << key;  // int8 rounds weights and activations coarser
    EXPECT_LT(mean("int8", key), 0.1) << key;
  }
  // the batch-16 kernels round little more than batch 1's (bf16 with AVX512_BF16 rounds the
  // activations too, to 8 significant bits, as the weights): within 2x of its change
  for (const char* f : {"bf16", "int8"})
    EXPECT_LT(mean(f, "mean_abs_dlogprob_batch16"), 2 * mean(f, "mean_abs_dlogprob")) << f;
  // % of the floor and of the GEMM rate: per round (--rounds 3 here) a fraction, the median
  // of the rounds reported (how a round's fraction is made: tests/test_paired_rate.cpp)
  auto paired = [&](const json& parent, const char* median, const char* rounds) {
    auto f = parent[rounds].get<std::vector<double>>();
    ASSERT_EQ(f.size(), 3u) << rounds;
    for (double v : f) EXPECT_TRUE(v > 0.0 && std::isfinite(v)) << rounds << " " << v;
    std::sort(f.begin(), f.end());
    EXPECT_DOUBLE_EQ(parent[median].get<double>(), f[1]) << median;
  };
  paired(j, "decode_floor_fraction", "decode_floor_fractions");
  paired(j, "prefill_gemm_fraction", "prefill_gemm_fractions");
  for (const char* f : {"fp32", "bf16", "int8"}) paired(j[std::string("stored_") + f], "floor_fraction", "floor_fractions");
  for (const json* p : {&j, &j["stored_fp32"], &j["stored_bf16"], &j["stored_int8"]})
    EXPECT_GT((*p)["batch16_over_batch1"].get<double>(), 0.0);  // per round, the median
  expect_error("bench generate --preset tiny --rounds 0", "--rounds: Value 0 not in range");
  expect_error("bench generate --preset tiny --tokens 1", "--tokens: must be an integer in [2, 1048576], got '1'");
  expect_error("bench generate --preset tiny --prompt 0", "--prompt: must be an integer in [1, 1048576], got '0'");
}

TEST_F(Cli, LlamaCppRunsPalmsWeightsWrittenAsGguf) {
  // palm's weights as LLaMA-shaped GGUF files in f32, bf16 and q8_0, loaded and run by
  // llama.cpp itself (the npm package node-llama-cpp): its loader checks every tensor's
  // name, shape and type against the architecture, so a wrong file is refused
  const std::string pkg = std::string(PALM_SOURCE_DIR) + "/bench/llama_cpp/node_modules/node-llama-cpp";
  if (!fs::exists(pkg)) {
    if (const char* ci = std::getenv("CI"); ci && std::string(ci) == "true") FAIL() << "CI=true but " << pkg << " is missing";
    GTEST_SKIP() << pkg << " is not installed (make deps: npm ci --omit=optional in bench/llama_cpp)";
  }
  const CmdResult r = run("bench generate --preset tiny --prompt 32 --tokens 8 --no-reference --compare-llama-cpp --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = json::parse(r.out.substr(r.out.rfind("\n{") + 1), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_NE(j["llama_cpp"]["engine"].get<std::string>().find("llama.cpp"), std::string::npos);
  // file sizes: tiny is 151,744 parameters; f32 4 bytes each, bf16 2 (norms stay f32),
  // q8_0 34 bytes per 32 values; plus the header and vocabulary (512 pieces)
  const double params = 151744, norms = 64 * 3;
  const std::map<std::string, double> bytes = {
      {"f32", 4 * params}, {"bf16", 2 * (params - norms) + 4 * norms}, {"q8_0", 34.0 / 32 * (params - norms) + 4 * norms}};
  for (const auto& [name, want] : bytes) {
    const json& f = j["llama_cpp"][name];
    EXPECT_GT(f["decode_tokens_per_s"].get<double>(), 0) << name;
    EXPECT_GT(f["prompt_tokens_per_s"].get<double>(), 0) << name;
    EXPECT_GT(f["file_bytes"].get<double>(), want) << name;
    EXPECT_LT(f["file_bytes"].get<double>(), want + 64 * 1024) << name << ": header and vocabulary are small";
  }
}

}  // namespace
