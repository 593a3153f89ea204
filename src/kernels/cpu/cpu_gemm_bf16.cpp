// Mixed-precision GEMM: operands rounded to bfloat16, fp32 accumulation and output, on
// oneDNN's matmul (AVX512_BF16 "brgemm" kernels where the CPU has them: ~1.4x the fp32
// sgemm rate here). Operands are converted into dense copies first; the transposes are
// expressed as strides, which the brgemm kernels take without a reference fallback.
#include <omp.h>

#include <algorithm>

#include "base/check.h"
#include "kernels/cpu/bf16.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_matmul.h"

namespace palm {

namespace {

// rows x cols of src (row stride ld) into a dense bf16 copy.
void convert(const float* src, i64 rows, i64 cols, i64 ld, std::uint16_t* dst) {
#pragma omp parallel for schedule(static)
  for (i64 r = 0; r < rows; ++r) {
    const float* s = src + r * ld;
    std::uint16_t* d = dst + r * cols;
#pragma omp simd
    for (i64 c = 0; c < cols; ++c) d[c] = to_bf16(s[c]);
  }
}

}  // namespace

void CpuBackend::gemm_bf16(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha,
                           const float* A, i64 lda, const float* B, i64 ldb, float beta,
                           float* C, i64 ldc) {
  if (M == 0 || N == 0) return;
  PALM_ASSERT(!omp_in_parallel());
  std::lock_guard<std::mutex> lock(bf16_mu_);
  // Stored shapes: A is [M, K] or (transposed) [K, M]; B is [K, N] or [N, K].
  const i64 a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const i64 b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  if (bf16_a_.size() < std::size_t(a_rows * a_cols)) bf16_a_.resize(a_rows * a_cols);
  if (bf16_b_.size() < std::size_t(b_rows * b_cols)) bf16_b_.resize(b_rows * b_cols);
  convert(A, a_rows, a_cols, lda, bf16_a_.data());
  convert(B, b_rows, b_cols, ldb, bf16_b_.data());

  // With A transposed (training's weight gradients, dY^T X), oneDNN's matmul ran 550-690
  // GFLOP/s at 4,736-32,000 rows of C on this machine but 840-880 on the same products in
  // blocks of 2,048 rows (a probe; docs/PERFORMANCE.md), so those run as row blocks.
  constexpr i64 kRowBlock = 2048;
  const i64 block = trans_a ? kRowBlock : M;
  for (i64 m0 = 0; m0 < M; m0 += block) {
    const i64 rows = std::min(block, M - m0);
    // A's rows m0.. are columns of the stored [K, M] copy when transposed
    const std::uint16_t* a = bf16_a_.data() + (trans_a ? m0 : m0 * a_cols);
    matmul_.run(MatmulInput::kBF16, trans_a, trans_b, rows, N, K, alpha, a, a_cols, bf16_b_.data(), b_cols, beta,
                C + m0 * ldc, ldc);
  }
}

}  // namespace palm
