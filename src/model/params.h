// The one list of parameters. param_list() names every tensor with its shape, place in
// the arena and initialization; allocation, init, checkpoint I/O and (later) optimizer
// state and sharding all walk it. Add a tensor here and nowhere else.
//
// Arena order: embed, then per layer: norm, q | k | v | gate | up (adjacent, so they
// form the fused input projection [E, D], E = H*K + 2K + 2F), o, down; final_norm.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/config.h"

namespace palm {

enum class ParamInit { kFanIn, kUnitNormal, kOnes };
// How tensor parallelism splits a tensor (model/tensor_parallel.h): by output rows
// (column-parallel: the embedding, q, gate, up), by input columns (row-parallel: o,
// down), or not at all (norms and the shared K/V head, replicated).
enum class TpSplit { kNone, kRows, kCols };
enum class ParamRole { kEmbedding, kNorm, kAttnQ, kAttnK, kAttnV, kMlpGate, kMlpUp, kAttnO, kMlpDown, kFinalNorm };

// Everything the code needs to know about a parameter tensor, in one place: sharding,
// gradient overlap and tensor parallelism derive from these fields, never from the name.
struct ParamInfo {
  std::string name;                  // safetensors name, e.g. "layers.3.attn.q"
  std::vector<std::int64_t> shape;   // [out, in] like torch.nn.Linear, or [D]
  std::int64_t offset = 0;           // floats from the arena start
  std::int64_t numel = 0;
  ParamInit init = ParamInit::kFanIn;
  ParamRole role = ParamRole::kEmbedding;
  std::int64_t layer = -1;           // its block, or -1 (embedding, final norm)
  TpSplit tp_split = TpSplit::kNone;
};

// The floats [offset, offset + count) of block l's tensors: contiguous by construction.
struct ParamRange {
  std::int64_t offset = 0, count = 0;
};
ParamRange layer_range(const ModelConfig& c, std::int64_t layer);

const std::vector<ParamInfo>& param_list(const ModelConfig& c);  // cached per config
std::int64_t param_count(const ModelConfig& c);

template <typename Fn>
void for_each_param(const ModelConfig& c, Fn&& fn) {
  for (const ParamInfo& p : param_list(c)) fn(p);
}

// Named per-layer views into an arena with the param_list layout (weights or gradients).
struct LayerView {
  float* norm;   // [D]
  float* w_in;   // [E, D]: q [H*K, D] | k [K, D] | v [K, D] | gate [F, D] | up [F, D]
  float* w_o;    // [D, H*K]
  float* w_down; // [D, F]
};
struct ModelView {
  float* embed;  // [V, D]
  std::vector<LayerView> layers;
  float* final_norm;  // [D]
};
ModelView make_view(const ModelConfig& c, float* base);

// Parameters of one model: immutable once loaded (inference shares them read-only).
// The arena is `be`'s memory (which must outlive it).
struct Weights {
  Weights(Backend& be, const ModelConfig& c);
  ModelConfig config;
  DeviceFloats arena;
  ModelView view;
};
// Gradients share the parameters' layout (one contiguous arena: one all-reduce).
using Gradients = Weights;

// Deterministic init from `seed`: kernels N(0, 1/fan_in), embedding N(0, 1), norms 1.
// Each tensor draws from its own stream (keyed by name), so the result is independent of
// thread count and order.
// `only` (optional, per tensor in for_each_param order): initialize just those tensors
// (a fully sharded rank writes only what it owns, so the rest never becomes resident).
void init_weights(Backend& be, Weights& w, std::uint64_t seed, const std::vector<bool>* only = nullptr);

}  // namespace palm
