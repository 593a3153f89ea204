#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"

namespace palm {

namespace {

void check(dnnl_status_t st, i64 M, i64 N, i64 K) {
  PALM_CHECK(st == dnnl_success, "oneDNN sgemm failed (status ", int(st), ") M=", M, " N=", N, " K=", K);
}

}  // namespace

// oneDNN's sgemm: measured on this 2-core Zen4 against OpenBLAS and BLIS (numbers in
// docs/PERFORMANCE.md). Inside an OpenMP parallel region it runs on the calling thread.
void CpuBackend::gemm(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha,
                      const float* A, i64 lda, const float* B, i64 ldb, float beta, float* C,
                      i64 ldc) {
  if (M == 0 || N == 0) return;
  // Up to 16 rows times a transposed weight matrix (decode at batch 1-16, a prompt's last
  // logits): palm's own kernel, which reads each weight row once for all rows (batch 1 at
  // 90-107% of the bandwidth floor where oneDNN's product reached 71-90%; batch 16 at
  // 370-394 tokens/s on bench-medium where the matmul primitive below reached 333-339).
  if (!trans_a && trans_b && M <= 16 && lda == K && ldb == K && ldc == N && !omp_in_parallel()) {
    rows_times_stored(A, M, K, B, WeightFormat::kF32, nullptr, N, alpha, beta, C);
    return;
  }
  // Up to a few hundred rows (prefill, larger decode batches): sgemm's packing runs this
  // shape at 30-330 GFLOP/s, oneDNN's matmul primitive on the weights in place at 80-430
  // (1.3-6x; 2,048-row products and the backward's NN/TN go the other way, 0.76-0.97x):
  // docs/PERFORMANCE.md, "sgemm or matmul".
  if (!trans_a && trans_b && M >= 8 && M <= 768 && !omp_in_parallel()) {
    matmul_.run(MatmulInput::kF32, false, true, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  check(dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), M, N,
        K);
}

}  // namespace palm
