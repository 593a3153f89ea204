// The decode-time copies of the weight matrices in a storage format (fp32 / bf16 / int8
// with per-row scales): the bytes read per decoded token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/params.h"

namespace palm {

// A weight matrix [rows, cols] stored for decoding.
struct StoredMatrix {
  WeightFormat format = WeightFormat::kF32;
  std::int64_t rows = 0, cols = 0;
  const void* data = nullptr;          // fp32: the model's own array
  DeviceArray<std::uint16_t> bf16;     // bf16: round-to-nearest-even copies
  DeviceArray<std::int8_t> q;          // int8: round(w / scale), scale = max|row| / 127
  DeviceFloats scales;                 // (all in the backend's memory)
  std::int64_t bytes() const;
};

// The fused input projection, the output projections and the embedding (for the logits).
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

}  // namespace palm
