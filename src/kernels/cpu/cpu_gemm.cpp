#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <vector>

#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"

namespace palm {

namespace {

void check(dnnl_status_t st, i64 M, i64 N, i64 K) {
  PALM_CHECK(st == dnnl_success, "oneDNN sgemm failed (status ", int(st), ") M=", M, " N=", N, " K=", K);
}

// C[M, N] = alpha A B^T + beta C as the transposed product T[N, M] = B A^T, added back
// transposed in cache-sized tiles.
void gemm_nt_transposed(i64 M, i64 N, i64 K, float alpha, const float* A, i64 lda, const float* B, i64 ldb,
                        float beta, float* C, i64 ldc) {
  thread_local std::vector<float> buffer;  // the caller's; the tile loop's threads read it by pointer
  if (std::int64_t(buffer.size()) < M * N) buffer.resize(std::size_t(M * N));
  const float* t = buffer.data();
  check(dnnl_sgemm('N', 'T', N, M, K, alpha, B, ldb, A, lda, 0.0f, buffer.data(), M), M, N, K);
  constexpr i64 kTile = 64;
#pragma omp parallel for collapse(2) schedule(static)
  for (i64 n0 = 0; n0 < N; n0 += kTile) {
    for (i64 m0 = 0; m0 < M; m0 += kTile) {
      const i64 n1 = std::min(N, n0 + kTile), m1 = std::min(M, m0 + kTile);
      for (i64 m = m0; m < m1; ++m) {
        float* c = C + m * ldc;
        if (beta == 0.0f) {
          for (i64 n = n0; n < n1; ++n) c[n] = t[n * M + m];
        } else {
          for (i64 n = n0; n < n1; ++n) c[n] = t[n * M + m] + beta * c[n];
        }
      }
    }
  }
}

}  // namespace

// oneDNN's sgemm: measured on this 2-core Zen4 against OpenBLAS and BLIS (numbers in
// docs/PERFORMANCE.md). Inside an OpenMP parallel region it runs on the calling thread.
void CpuBackend::gemm(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha,
                      const float* A, i64 lda, const float* B, i64 ldb, float beta, float* C,
                      i64 ldc) {
  if (M == 0 || N == 0) return;
  // One or two rows times a transposed weight matrix (batch-1/2 decode, a prompt's last
  // logits): palm's GEMV reads the weights at 90-107% of the bandwidth floor, oneDNN's
  // product at 71-90% (docs/PERFORMANCE.md).
  if (!trans_a && trans_b && M <= 2 && lda == K && ldb == K && ldc == N && !omp_in_parallel()) {
    rows_times_stored(A, M, K, B, WeightFormat::kF32, nullptr, N, alpha, beta, C);
    return;
  }
  // A few rows times a transposed weight matrix (prefill, batched decode): oneDNN's sgemm
  // runs this shape at 25 GFLOP/s (M = 16) to ~170 (M = 128) and the transposed product
  // (many rows) at ~280-315 (docs/PERFORMANCE.md), so compute that and transpose back.
  if (!trans_a && trans_b && M > 2 && M < 512 && N >= 4 * M && !omp_in_parallel()) {
    gemm_nt_transposed(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  check(dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), M, N,
        K);
}

}  // namespace palm
