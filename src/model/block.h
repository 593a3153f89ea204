// PaLM's parallel block, y = x + Attn(LN(x)) + MLP(LN(x)), and the output head: the one
// implementation that training, scoring, prefill and decode all run. What differs between
// them is an argument: where the rows sit (BlockRows: whole sequences, or one new position
// per cached sequence) and which copy of the weights the products read (BlockWeights).
//
// Letters: N rows, D model, H heads, K head dim, F ffn, E = H*K + 2K + 2F, V vocab.
#pragma once
#include <cstdint>

#include "kernels/backend.h"
#include "model/activations.h"
#include "model/kv_cache.h"
#include "model/params.h"
#include "model/stored_weights.h"

namespace palm {

// Where a block's N = B*T rows sit and what they attend to.
struct BlockRows {
  // B sequences of T rows, row b*T + t at position t, causal attention within each
  // sequence (training, scoring, prefill). With `caches` (prefill: B == 1) the rows' k|v
  // are also written to caches[0] at positions 0..T-1.
  std::int64_t B = 0, T = 0;
  KvCache* const* caches = nullptr;
  // Decoding (T == 1): row i is the next position of caches[i] (positions[i] ==
  // caches[i]->len, lens[i] == len + 1) and attends to that cache. cache_rows: B slots
  // of scratch for each cache's first row of this layer.
  const std::int32_t* positions = nullptr;
  const std::int64_t* lens = nullptr;
  const void** cache_rows = nullptr;
  bool decoding() const { return positions != nullptr; }
};

// The matrices a block's products read: the fp32 weights (training: optionally as bf16
// GEMMs, fp32 accumulation), or for decoding their stored bf16 / int8 / fp32 copies.
struct BlockWeights {
  const LayerView& f32;
  const DecodeWeights::Layer* stored = nullptr;
  bool bf16_gemms = false;
};

// x_out = x_in + Attn(LN(x_in)) + MLP(LN(x_in)) for block `layer`; fills a (its attention state
// only for whole sequences). x_out may be x_in (decoding updates the stream in place).
// With tensor parallelism (tp) the two branches' partial sums go through `branch` and one
// all-reduce; c is then the rank's local config.
void block_fwd(Backend& be, const ModelConfig& c, const BlockWeights& w, const BlockRows& rows, std::int64_t layer,
               LayerActs& a, const float* x_in, float* x_out, const TensorParallel* tp = nullptr,
               float* branch = nullptr);

// logits [n, V] = LN_final(x) E^T / sqrt(D), through h, mean and rstd ([n, D], [n], [n]);
// `stored`: the embedding's decode copy, read instead of the fp32 one.
void head_fwd(Backend& be, const ModelConfig& c, const ModelView& w, const StoredMatrix* stored, bool bf16_gemms,
              const float* x, std::int64_t n, float* h, float* mean, float* rstd, float* logits);

}  // namespace palm
