// One sequence's multi-query KV cache: one K and one V head per layer, so it is
// [L, capacity, 2K] (H times smaller than multi-head attention's), in backend memory, as
// fp32 or bf16 (KvFormat: half the bytes a decode step's attention reads).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/config.h"

namespace palm {

// Positions 0..len-1 of every layer, k (after RoPE) | v.
struct KvCache {
  KvCache(Backend& be, const ModelConfig& c, std::int64_t capacity, KvFormat format = KvFormat::kF32);
  std::int64_t capacity, len = 0, two_k;
  KvFormat format;
  DeviceArray<std::byte> data;  // [L, capacity, 2K] elements of `format`
  std::int64_t element_bytes() const { return format == KvFormat::kBF16 ? 2 : 4; }
  void* at(std::int64_t layer, std::int64_t t) { return data.data() + (layer * capacity + t) * two_k * element_bytes(); }
};

// "fp32" | "bf16"; "auto": default_kv_format(weights).
KvFormat parse_kv_format(const std::string& name, WeightFormat weights);
// bf16 beside bf16 or int8 decode weights, whose rounding the cache's adds to; fp32 beside
// fp32 weights, which decode the training forward's values exactly.
KvFormat default_kv_format(WeightFormat weights);
const char* kv_format_name(KvFormat f);

}  // namespace palm
