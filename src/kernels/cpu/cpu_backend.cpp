#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstring>

namespace palm {

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

void CpuBackend::embedding_fwd(const std::int32_t* tokens, const float* E, float* x, i64 N,
                               i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) std::memcpy(x + n * D, E + i64(tokens[n]) * D, D * sizeof(float));
}

void CpuBackend::embedding_bwd_acc(const std::int32_t* tokens, const float* dx, float* dE,
                                   i64 N, i64 D) {
  // Threads own column blocks and walk all rows in order: no races, and each dE element
  // is summed in token order whatever the thread count.
  constexpr i64 kBlock = 64;
  const i64 blocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (i64 blk = 0; blk < blocks; ++blk) {
    const i64 d0 = blk * kBlock, d1 = std::min(D, d0 + kBlock);
    for (i64 n = 0; n < N; ++n) {
      float* dst = dE + i64(tokens[n]) * D;
      const float* src = dx + n * D;
#pragma omp simd
      for (i64 d = d0; d < d1; ++d) dst[d] += src[d];
    }
  }
}

void CpuBackend::add(const float* a, const float* b, float* out, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace palm
