// bfloat16 <-> float on the CPU: the upper 16 bits of a float, rounded to nearest even.
#pragma once
#include <cstdint>
#include <cstring>

namespace palm {

// Round to nearest even; NaN stays NaN (quiet bit forced).
inline std::uint16_t to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const std::uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<std::uint16_t>(nan ? (bits >> 16) | 0x40u : rounded >> 16);
}

inline float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace palm
