// Training a PaLM-style vocabulary with SentencePiece, in process.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace palm {

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  // files, directories or globs (base/file_util.h)
  std::int64_t vocab_size = 32000;
  std::string out;                  // the tokenizer directory (must not exist, or be empty)
  std::string model_type = "unigram";  // unigram | bpe
  std::int64_t max_sentences = 2000000;  // lines kept by seeded reservoir sampling
  std::uint64_t seed = 0;
  int threads = 0;
  double character_coverage = 0.9995;  // below 1: rare characters become byte tokens
  bool verbose = false;                 // SentencePiece's own log lines
};

struct TokenizerTrainReport {
  std::int64_t files = 0, bytes = 0, lines = 0, sampled = 0, invalid_lines = 0;
  std::string sha256;
};

TokenizerTrainReport train_tokenizer(const TokenizerTrainOptions& o);

}  // namespace palm
