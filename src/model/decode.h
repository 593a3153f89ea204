// Autoregressive decoding with a multi-query KV cache (kv_cache.h): prefill runs a prompt
// through the model's blocks in one pass, decode_step adds one token to each of b
// sequences. Both run block_fwd (block.h), the training forward's block.
//
// Letters: b sequences in a decode batch, D model, H heads, K head dim, F ffn, V vocab.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/kv_cache.h"
#include "model/params.h"
#include "model/stored_weights.h"

namespace palm {

// Runs a prompt of n tokens through the model in one pass (B = 1), fills `cache` with
// positions 0..n-1 and writes the last position's logits [V].
void prefill(Backend& be, const Weights& w, KvCache& cache, const std::int32_t* tokens, std::int64_t n,
             float* last_logits);

// Buffers for decode steps of up to max_batch sequences, allocated once.
struct DecodeScratch {
  DecodeScratch(Backend& be, const ModelConfig& c, std::int64_t max_batch);  // in be's memory
  std::int64_t max_batch;
  DeviceFloats x, h, mean, rstd, u, q, att, act;
  std::vector<std::int32_t> positions;
  std::vector<std::int64_t> lens;
  std::vector<const void*> rows;
};

// Adds one token to each of b sequences (each at its own position) and writes the
// next-token logits [b, V]: batched products for all sequences, attention per sequence.
// With `stored`, the products read its matrices (fp32 / bf16 / int8); without, the fp32
// weights.
void decode_step(Backend& be, const Weights& w, const std::vector<KvCache*>& caches, const std::int32_t* tokens,
                 float* logits, DecodeScratch& s, const DecodeWeights* stored = nullptr);

}  // namespace palm
