// max_of (fast_math.h) with AVX-512 where the build has it.
#include "kernels/cpu/fast_math.h"

#if defined(__AVX512F__)
// GCC 12's intrinsics start from undefined vectors they then overwrite wholly: a false
// "may be used uninitialized" wherever they are inlined
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#endif

namespace palm {

float max_of(const float* x, std::int64_t n) {
#if defined(__AVX512F__)
  __m512 m = _mm512_set1_ps(x[0]);
  std::int64_t j = 0;
  for (; j + 16 <= n; j += 16) m = _mm512_max_ps(_mm512_loadu_ps(x + j), m);  // NaN in x: keeps m
  if (j < n) m = _mm512_max_ps(_mm512_mask_loadu_ps(m, __mmask16((1u << (n - j)) - 1), x + j), m);
  return _mm512_reduce_max_ps(m);
#else
  float m = x[0];
  for (std::int64_t j = 1; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
#endif
}

}  // namespace palm
