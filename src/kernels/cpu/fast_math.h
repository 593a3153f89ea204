// exp that the compiler vectorizes (glibc's expf is a call per element). Cody-Waite
// range reduction x = n ln2 + r, |r| <= ln2/2, then a degree-6 polynomial for e^r:
// relative error < 2e-7 over the float range; inputs below -87 flush to 0.
#pragma once
#include <cstdint>
#include <cstring>

namespace palm {

inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // round to nearest by the 1.5 * 2^23 trick: vectorizes, unlike roundf
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693145751953125f;  // ln2 split in two for exact n*ln2_hi
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float result = p * scale;
  return x <= -87.0f ? 0.0f : result;
}

inline float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

// max(x[0..n-1]), n >= 1, ignoring NaN as std::max(m, x) does. A plain max loop stays
// scalar (GCC will not reorder a float max reduction, even under omp simd), at ~3 cycles
// per value: attention's softmax rows (~20% of a 512-token prefill's attention) and the
// cross-entropy's over the vocabulary.
float max_of(const float* x, std::int64_t n);  // fast_math.cpp

}  // namespace palm
