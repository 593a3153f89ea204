// Decode-time products against fp32, bf16 or int8 weights. Each thread owns a block of
// weight rows, reads each row once and uses it for all b input rows while it sits in L1;
// the loops are written so the compiler vectorizes the conversions and the FMAs.
#include <cstring>
#include <type_traits>
#include <vector>

#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"

namespace palm {

namespace {

constexpr i64 kMaxRows = 64;  // input rows per pass over the weights

inline float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// A weight row is widened to fp32 once (in a per-thread buffer) and then dotted with
// every input row, so the conversion cost does not grow with b.
template <typename T, typename Load>
void stored_product(const float* X, i64 b, i64 K, const T* W, const float* scales, i64 N, float alpha, float beta,
                    float* C, Load load) {
  for (i64 r0 = 0; r0 < b; r0 += kMaxRows) {
    const i64 rows = std::min(kMaxRows, b - r0);
#pragma omp parallel
    {
      thread_local std::vector<float> row;
      if (std::int64_t(row.size()) < K) row.resize(std::size_t(K));
      float* wf = row.data();
#pragma omp for schedule(static)
    for (i64 n = 0; n < N; ++n) {
      const T* w = W + n * K;
      float acc[kMaxRows];
      const float* wr;
      if constexpr (std::is_same_v<T, float>) {
        wr = w;
      } else if (rows <= 2) {  // few rows: convert inside the dot (one pass over the row)
        for (i64 i = 0; i < rows; ++i) {
          const float* x = X + (r0 + i) * K;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (i64 k = 0; k < K; ++k) s += load(w[k]) * x[k];
          acc[i] = s;
        }
        wr = nullptr;
      } else {
#pragma omp simd
        for (i64 k = 0; k < K; ++k) wf[k] = load(w[k]);
        wr = wf;
      }
      for (i64 i = 0; wr && i < rows; ++i) {
        const float* x = X + (r0 + i) * K;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (i64 k = 0; k < K; ++k) s += wr[k] * x[k];
        acc[i] = s;
      }
      const float sc = alpha * (scales ? scales[n] : 1.0f);
      for (i64 i = 0; i < rows; ++i) {
        float& c = C[(r0 + i) * N + n];
        c = sc * acc[i] + (beta == 0.0f ? 0.0f : beta * c);
      }
    }
    }
  }
}

}  // namespace

void CpuBackend::rows_times_stored(const float* X, i64 b, i64 K, const void* W, WeightFormat format,
                                   const float* scales, i64 N, float alpha, float beta, float* C) {
  switch (format) {
    case WeightFormat::kF32:
      stored_product(X, b, K, static_cast<const float*>(W), nullptr, N, alpha, beta, C, [](float v) { return v; });
      break;
    case WeightFormat::kBF16:
      stored_product(X, b, K, static_cast<const std::uint16_t*>(W), nullptr, N, alpha, beta, C,
                     [](std::uint16_t h) { return bf16_to_f32(h); });
      break;
    case WeightFormat::kInt8:
      PALM_ASSERT(scales != nullptr);
      stored_product(X, b, K, static_cast<const std::int8_t*>(W), scales, N, alpha, beta, C,
                     [](std::int8_t v) { return float(v); });
      break;
  }
}

}  // namespace palm
