// Autoregressive decoding with a multi-query KV cache: one K and one V head per layer,
// so a sequence's cache is [L, T, 2K] (H times smaller than multi-head attention).
//
// Letters: b sequences in a decode batch, D model, H heads, K head dim, F ffn, V vocab.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/params.h"

namespace palm {

// One sequence's cache: positions 0..len-1 of every layer, k (after RoPE) | v.
struct KvCache {
  KvCache(Backend& be, const ModelConfig& c, std::int64_t capacity);  // in be's memory
  std::int64_t capacity, len = 0, two_k;
  DeviceFloats data;  // [L, capacity, 2K]
  float* at(std::int64_t layer, std::int64_t t) { return data.data() + (layer * capacity + t) * two_k; }
};

// Runs a prompt of n tokens through the model in one pass (the training forward, B = 1),
// fills `cache` with positions 0..n-1 and writes the last position's logits [V].
void prefill(Backend& be, const Weights& w, KvCache& cache, const std::int32_t* tokens, std::int64_t n,
             float* last_logits);

// A weight matrix [rows, cols] stored for decoding.
struct StoredMatrix {
  WeightFormat format = WeightFormat::kF32;
  std::int64_t rows = 0, cols = 0;
  const void* data = nullptr;        // fp32: the model's own array
  std::vector<std::uint16_t> bf16;   // bf16: round-to-nearest-even copies
  std::vector<std::int8_t> q;        // int8: round(w / scale), scale = max|row| / 127
  std::vector<float> scales;
  std::int64_t bytes() const;
};

// The decode-time matrices (fused input projection, output projections, the embedding
// for the logits) in one storage format: the bytes read per decoded token.
struct DecodeWeights {
  DecodeWeights(Backend& be, const Weights& w, WeightFormat format);  // quantized on `be`
  WeightFormat format;
  struct Layer {
    StoredMatrix w_in, w_o, w_down;
  };
  std::vector<Layer> layers;
  StoredMatrix embed;
  std::int64_t bytes() const;
};
WeightFormat parse_weight_format(const std::string& name);  // fp32 | bf16 | int8

// Buffers for decode steps of up to max_batch sequences, allocated once.
struct DecodeScratch {
  DecodeScratch(Backend& be, const ModelConfig& c, std::int64_t max_batch);  // in be's memory
  std::int64_t max_batch;
  DeviceFloats x, h, mean, rstd, u, q, att, act;
  std::vector<std::int32_t> positions;
  std::vector<std::int64_t> lens;
  std::vector<const float*> rows;
};

// Adds one token to each of b sequences (each at its own position) and writes the
// next-token logits [b, V]: batched GEMMs for all sequences, attention per sequence.
// With `stored`, the products read its matrices (fp32 / bf16 / int8) through
// rows_times_stored; without, they run as oneDNN GEMMs on the fp32 weights.
void decode_step(Backend& be, const Weights& w, const std::vector<KvCache*>& caches, const std::int32_t* tokens,
                 float* logits, DecodeScratch& s, const DecodeWeights* stored = nullptr);

}  // namespace palm
