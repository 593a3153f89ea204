// Choosing the next token: greedy, temperature, top-k and top-p (nucleus), reproducible
// for a seed (counter-based randomness: draw j of sequence s depends only on
// (seed, s, j)). The log-probability reported is the model's: log softmax of the raw
// logits, before temperature or truncation.
//
// The logits stay in the backend's memory: the full-vocabulary work (maximum, log Z, the
// top k) is Backend ops, and only their results cross to the host: two numbers for greedy
// decoding, k candidates for top-k / top-p; plain temperature sampling reads the row.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"

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

// Buffers reused from token to token (backend outputs and their host copies).
struct SamplerScratch {
  DeviceArray<std::int32_t> arg, ids;
  DeviceFloats max, values;
  DeviceArray<double> log_z;
  std::vector<float> host_values;
  std::vector<std::int32_t> host_ids;
  std::vector<std::pair<float, std::int32_t>> cand;
  std::vector<double> p;
};

// logits [V] in be's memory; `stream` identifies the sequence, `draw` the step.
Sampled sample_token(Backend& be, const float* logits, std::int64_t V, const SamplingOptions& o, std::uint64_t stream,
                     std::uint64_t draw, SamplerScratch& scratch);

}  // namespace palm
