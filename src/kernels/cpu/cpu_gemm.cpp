#include <oneapi/dnnl/dnnl.h>

#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"

namespace palm {

// oneDNN's sgemm: measured on this 2-core Zen4 against OpenBLAS and BLIS (numbers in
// docs/PERFORMANCE.md). Inside an OpenMP parallel region it runs on the calling thread.
void CpuBackend::gemm(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha,
                      const float* A, i64 lda, const float* B, i64 ldb, float beta, float* C,
                      i64 ldc) {
  if (M == 0 || N == 0) return;
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K,
                                      alpha, A, lda, B, ldb, beta, C, ldc);
  PALM_CHECK(st == dnnl_success, "oneDNN sgemm failed (status ", int(st), ") M=", M,
             " N=", N, " K=", K);
}

}  // namespace palm
