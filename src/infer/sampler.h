// Choosing the next token: greedy, temperature, top-k and top-p (nucleus), reproducible
// for a seed (counter-based randomness: draw j of sequence s depends only on
// (seed, s, j)). The log-probability reported is the model's: log softmax of the raw
// logits, before temperature or truncation.
#pragma once
#include <cstdint>
#include <vector>

namespace palm {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy
  std::int64_t top_k = 0;    // 0: off
  double top_p = 1.0;        // 1: off
  std::uint64_t seed = 0;
};

void validate(const SamplingOptions& o);

struct Sampled {
  std::int32_t token;
  double logprob;
};

// logits [V]; `stream` identifies the sequence, `draw` the step.
Sampled sample_token(const float* logits, std::int64_t V, const SamplingOptions& o, std::uint64_t stream,
                     std::uint64_t draw, std::vector<std::pair<float, std::int32_t>>& scratch);

}  // namespace palm
