// Generation for many requests at once (tokens in, tokens out): each prompt is
// prefilled in one pass, then every decode step advances all unfinished sequences
// together (batched GEMMs). Text-level concerns (stop strings, streaming) belong to the
// caller, through the on_token callback.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "infer/sampler.h"
#include "kernels/backend.h"
#include "model/params.h"

namespace palm {

struct GenerationRequest {
  std::vector<std::int32_t> prompt;
  std::int64_t max_tokens = 64;
  SamplingOptions sampling;
  std::uint64_t stream = 0;  // distinguishes samples of the same prompt and seed
};

struct GenerationResult {
  std::vector<std::int32_t> tokens;
  std::vector<double> logprobs;
  std::string finish_reason;  // "stop" (end of document or the callback) | "length"
};

struct GenerationStats {
  std::int64_t prefill_tokens = 0, decode_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// on_token(request index, token) returns true to stop that sequence ("stop").
// <eod> stops a sequence; so does reaching max_tokens or the context ("length").
// `stored`: decode with bf16/int8 weight copies (model/decode.h); null: fp32.
struct DecodeWeights;
std::vector<GenerationResult> generate(Backend& be, const Weights& w, const std::vector<GenerationRequest>& requests,
                                       std::int64_t max_batch,
                                       const std::function<bool(std::size_t, std::int32_t)>& on_token,
                                       GenerationStats* stats = nullptr, const DecodeWeights* stored = nullptr,
                                       KvFormat kv = KvFormat::kF32);

}  // namespace palm
