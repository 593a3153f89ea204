// Mixed-precision GEMM: operands rounded to bfloat16, fp32 accumulation and output, on
// oneDNN's matmul (AVX512_BF16 "brgemm" kernels where the CPU has them: ~1.4x the fp32
// sgemm rate here). Operands are converted into dense copies first; the transposes are
// expressed as strides, which the brgemm kernels take without a reference fallback.
#include <omp.h>

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

  matmul_.run(MatmulInput::kBF16, trans_a, trans_b, M, N, K, alpha, bf16_a_.data(), a_cols, bf16_b_.data(), b_cols,
              beta, C, ldc);
}

}  // namespace palm
