// One sequence's multi-query KV cache: one K and one V head per layer, so it is
// [L, capacity, 2K] (H times smaller than multi-head attention's), in backend memory.
#pragma once
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/config.h"

namespace palm {

// Positions 0..len-1 of every layer, k (after RoPE) | v.
struct KvCache {
  KvCache(Backend& be, const ModelConfig& c, std::int64_t capacity);
  std::int64_t capacity, len = 0, two_k;
  DeviceFloats data;  // [L, capacity, 2K]
  float* at(std::int64_t layer, std::int64_t t) { return data.data() + (layer * capacity + t) * two_k; }
};

}  // namespace palm
