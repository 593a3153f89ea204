// palm bench tokenizer: encode throughput of `palm tokenizer encode` (1 thread and all)
// against SentencePiece's own spm_encode on the same file and model, in one run.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/threads.h"
#include "common.h"
#include "tokenizer/tokenizer.h"

namespace palm {

namespace {

struct BenchTokOptions {
  std::string tokenizer, input;
  int repeats = 3;
  bool json = false;
};

// Best wall time of `repeats` runs of a shell command.
double best_seconds(const std::string& cmd, int repeats) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    PALM_CHECK(std::system(cmd.c_str()) == 0, "benchmark command failed: ", cmd);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void run_bench_tokenizer(const BenchTokOptions& o) {
  const auto tok = Tokenizer::load(o.tokenizer);  // validates the directory
  const double mb = double(std::filesystem::file_size(o.input)) / 1e6;
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  PALM_CHECK(n > 0, "cannot find the palm binary");
  self[n] = 0;
  const std::string model = (std::filesystem::path(o.tokenizer) / kTokenizerModelFile).string();
  const int threads = default_threads();
  auto ours = [&](int t) {
    return best_seconds(fmt::format("{} tokenizer encode --tokenizer '{}' --threads {} < '{}' > /dev/null 2>&1",
                                    self, o.tokenizer, t, o.input), o.repeats);
  };
  const double one = ours(1), all = ours(threads);
  double spm = -1;
  if (std::system("command -v spm_encode > /dev/null 2>&1") == 0) {
    spm = best_seconds(fmt::format("spm_encode --model='{}' --output_format=id < '{}' > /dev/null", model, o.input),
                       o.repeats);
  }
  fmt::print("bench tokenizer  {} ({:.1f} MB), vocab {}\n", o.input, mb, tok->vocab_size());
  fmt::print("  palm encode, 1 thread     {:8.2f} MB/s\n", mb / one);
  fmt::print("  palm encode, {} threads    {:8.2f} MB/s\n", threads, mb / all);
  if (spm > 0) {
    fmt::print("  spm_encode (library tool) {:8.2f} MB/s\n", mb / spm);
    fmt::print("  palm 1 thread / spm_encode {:7.2f}x\n", spm / one);
  } else {
    fmt::print("  spm_encode not installed (package sentencepiece): no reference\n");
  }
  if (o.json) {
    nlohmann::ordered_json j;
    j["input_mb"] = mb;
    j["encode_mb_per_s_1_thread"] = mb / one;
    j["encode_mb_per_s_all_threads"] = mb / all;
    j["threads"] = threads;
    if (spm > 0) {
      j["spm_encode_mb_per_s"] = mb / spm;
      j["ratio_1_thread_vs_spm_encode"] = spm / one;
    }
    fmt::print("{}\n", j.dump());
  }
}

}  // namespace

void register_bench_tokenizer(CLI::App& bench) {
  auto o = std::make_shared<BenchTokOptions>();
  auto* cmd = bench.add_subcommand("tokenizer", "Encode MB/s (1 thread, all) against spm_encode");
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer directory")->required();
  cmd->add_option("--input", o->input, "Text file to encode")->required()->check(CLI::ExistingFile);
  cmd->add_option("--repeats", o->repeats, "Runs per measurement (best is kept)")->capture_default_str();
  cmd->add_flag("--json", o->json, "End with one JSON line");
  cmd->callback([o] { run_bench_tokenizer(*o); });
}

}  // namespace palm
