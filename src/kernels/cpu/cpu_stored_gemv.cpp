// Decode-time products against fp32, bf16 or int8 weights. Each thread owns a block of
// weight rows, reads each row once and uses it for all b input rows while it sits in L1;
// the loops are written so the compiler vectorizes the conversions and the FMAs.
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "base/check.h"
#include "kernels/cpu/bf16.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_stored_avx512.h"

namespace palm {

namespace {

constexpr i64 kMaxRows = 64;  // input rows per pass over the weights

// Three or more input rows: each thread widens a tile of weight rows to fp32 (it stays in
// L2) and multiplies it with all input rows by oneDNN's sgemm on that thread, so the
// conversion is paid once per weight and the FMAs run at GEMM speed, not dot speed.
template <typename T, typename Load>
void stored_product_tiled(const float* X, i64 b, i64 K, const T* W, const float* scales, i64 N, float alpha,
                          float beta, float* C, Load load) {
  constexpr i64 kTile = 256;  // weight rows per tile: 256 x K fp32 (1 MiB at K = 1024; 128-512 measured)
  const i64 tiles = (N + kTile - 1) / kTile;
#pragma omp parallel
  {
    thread_local std::vector<float> wt, t;
    if (std::int64_t(wt.size()) < kTile * K) wt.resize(std::size_t(kTile * K));
    if (std::int64_t(t.size()) < kTile * b) t.resize(std::size_t(kTile * b));
#pragma omp for schedule(static)
    for (i64 tile = 0; tile < tiles; ++tile) {
      const i64 n0 = tile * kTile, rows = std::min(kTile, N - n0);
      const float* wr;
      if constexpr (std::is_same_v<T, float>) {
        wr = W + n0 * K;
      } else {
        const T* w = W + n0 * K;
#pragma omp simd
        for (i64 k = 0; k < rows * K; ++k) wt[k] = load(w[k]);
        wr = wt.data();
      }
      // t[rows, b] = Wtile X^T (sequential: we are inside a parallel region)
      const dnnl_status_t st = dnnl_sgemm('N', 'T', rows, b, K, 1.0f, wr, K, X, K, 0.0f, t.data(), b);
      PALM_CHECK(st == dnnl_success, "oneDNN sgemm failed (status ", int(st), ")");
      for (i64 i = 0; i < b; ++i) {
        float* c = C + i * N + n0;
        for (i64 r = 0; r < rows; ++r) {
          const float sc = alpha * (scales ? scales[n0 + r] : 1.0f);
          c[r] = sc * t[r * b + i] + (beta == 0.0f ? 0.0f : beta * c[r]);
        }
      }
    }
  }
}

// A weight row is widened to fp32 once (in a per-thread buffer) and then dotted with
// every input row, so the conversion cost does not grow with b.
template <typename T, typename Load>
void stored_product(const float* X, i64 b, i64 K, const T* W, const float* scales, i64 N, float alpha, float beta,
                    float* C, Load load) {
  if (b > 2) return stored_product_tiled(X, b, K, W, scales, N, alpha, beta, C, load);
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
  if (format == WeightFormat::kInt8) PALM_ASSERT(scales != nullptr);
  if (stored_avx512_available() && stored_product_avx512(X, b, K, W, format, scales, N, alpha, beta, C)) return;
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
