// llama.cpp beside palm in one run (`palm bench generate --compare-llama-cpp`): palm's
// weights written as LLaMA-shaped GGUF files (bench/gguf_writer.h) in f32, bf16 and
// q8_0, each run by llama.cpp through the npm package node-llama-cpp (pinned in
// bench/llama_cpp/package.json; bench/llama_cpp/run.mjs times it) with the same threads,
// prompt length and decode length.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/model.h"

namespace palm {

struct LlamaCppRun {
  std::string format;  // f32 | bf16 | q8_0
  double file_bytes = 0;
  double prompt_tokens_per_s = 0, decode_tokens_per_s = 0;
};

class LlamaCpp {
 public:
  // Why llama.cpp cannot run here ("" when it can): node or the npm package is missing.
  static std::string unavailable();
  static constexpr const char* kFormats[] = {"f32", "bf16", "q8_0"};

  // Writes the three GGUF files into a temporary directory (PALM_GGUF_DIR: there, kept).
  LlamaCpp(const Weights& w, int threads, std::int64_t prompt, std::int64_t tokens);
  ~LlamaCpp();
  LlamaCpp(const LlamaCpp&) = delete;
  LlamaCpp& operator=(const LlamaCpp&) = delete;

  // One llama.cpp process on format i of kFormats; throws Error with its output on failure.
  LlamaCppRun run(std::size_t i);
  const std::string& engine() const { return engine_; }

 private:
  std::filesystem::path dir_;
  bool keep_ = false;
  int threads_;
  std::int64_t prompt_, tokens_;
  std::string engine_;
};

}  // namespace palm
