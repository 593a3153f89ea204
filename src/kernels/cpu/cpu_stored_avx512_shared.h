// Shared by the AVX-512 decode-product kernels (cpu_stored_avx512.cpp, cpu_stored_int8.cpp):
// masks for partial vectors, compile-time shapes for the unrolled loops, and the int8
// product's entry point. Include only where __AVX512F__, __AVX512BW__ and __AVX512VNNI__ are
// defined.
#pragma once
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <functional>
#include <type_traits>

#include "kernels/backend.h"

namespace palm {

inline __mmask16 tail_mask16(i64 n) { return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? 0 : __mmask16((1u << n) - 1); }

// fn(std::integral_constant<int, MR>{}, std::bool_constant<full>{}) for a run-time MR in
// 1 .. MAX and whether a panel has all 16 rows: compile-time constants for the kernels'
// unrolled loops.
template <int MAX, typename Fn>
void with_shape(int MR, bool full, Fn&& fn) {
  if constexpr (MAX > 1) {
    if (MR < MAX) return with_shape<MAX - 1>(MR, full, fn);
  }
  if (full) fn(std::integral_constant<int, MAX>{}, std::true_type{});
  else fn(std::integral_constant<int, MAX>{}, std::false_type{});
}

// A product's items beside other work (stored_row_beside): the calling thread runs `beside`
// while the others start on items 0 .. items - 1 of `first`, then on those of `rest`, dealt
// as threads come free, and the caller joins them when beside returns.
template <typename First, typename Rest>
void items_beside(const std::function<void()>& beside, i64 first_items, First&& first, i64 rest_items, Rest&& rest) {
#pragma omp parallel
  {
    if (omp_get_thread_num() == 0) beside();
#pragma omp for schedule(dynamic) nowait
    for (i64 i = 0; i < first_items; ++i) first(i);
#pragma omp for schedule(dynamic) nowait
    for (i64 i = 0; i < rest_items; ++i) rest(i);
  }
}

// bf16 panels (pack_panels, a 4-byte unit = two bf16): a panel's last value of each of its
// L rows where K is odd (kept after all the units), as a unit with 0.
inline __m512i bf16_tail(const std::uint16_t* panel, i64 L, i64 K) {
  alignas(64) std::uint32_t tail[16] = {};
  if (K % 2)
    for (i64 r = 0; r < L; ++r) tail[r] = panel[(K / 2) * L * 2 + r];
  return _mm512_load_si512(tail);
}

// C[m0 + m, n0 .. n0 + L - 1] = alpha f[m] (+ beta C) for MR rows: lane l of f[m] is output n0 + l.
inline void bf16_store(const __m512* f, int MR, i64 m0, i64 N, i64 n0, i64 L, float alpha, float beta, float* C) {
  const __mmask16 lanes = tail_mask16(L);
  for (int m = 0; m < MR; ++m) {
    float* c = C + (m0 + m) * N + n0;
    __m512 v = _mm512_mul_ps(_mm512_set1_ps(alpha), f[m]);
    if (beta != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, c), v);
    _mm512_mask_storeu_ps(c, lanes, v);
  }
}

// Batch 1-2's weight streams (fp32 batch 1-2, int8 batch 1, bf16 batch 1-2 on vdpbf16ps)
// prefetch each stream's line this many bytes ahead into L2 as a line is read: Zen 4's own
// prefetchers left a batch-1 step's products at ~0.78 of the read probe when the memory read
// ~65 GB/s. A step's products, alternating in one process: fp32 batch 1 1.09-1.13x as fast
// there (1.02-1.04x at ~37 GB/s), batch 2 1.05-1.07x, int8 batch 1 1.05-1.09x; 512 B and 2 KB
// a little less, into L1 (T0) much slower. Not for int8 at batch 2 (0.82-0.94x) nor for the
// widening bf16 kernel (0.94-0.98x): docs/PERFORMANCE.md, session 24.
inline constexpr int kStreamAhead = 1024;

// acc + vpdpbusd(w, the 4 bytes at x in every lane), the broadcast embedded in the
// instruction ({1to16}, riding its load) instead of a vpbroadcastd of its own: GCC 12 folds
// a broadcast into the instruction only where one instruction uses it, and the batch
// kernels use each for two panels. A batch-16 step's int8 products 1.04-1.05x as fast (Zen 4,
// alternating in one process; docs/PERFORMANCE.md, session 24).
inline __m512i dpbusd_broadcast(__m512i acc, __m512i w, const void* x) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*static_cast<const std::int32_t*>(x)));
  return acc;
}

// C[b, N] = alpha * scales[n] * (X W^T) + beta * C for int8 W [N, K] in panels (pack_panels):
// cpu_stored_int8.cpp.
void int8_product_avx512(const float* X, i64 b, i64 K, const std::int8_t* W, const float* scales, i64 N, float alpha,
                         float beta, float* C);

// int8_product_avx512 for one input row while `beside` runs on the calling thread
// (stored_row_beside): cpu_stored_int8.cpp.
bool int8_row_beside(const float* x, i64 K, const std::int8_t* W, const float* scales, i64 N, float alpha, float beta,
                     float* C, const std::function<void()>& beside);

// C[b, N] = alpha * X W^T + beta * C for bf16 W [N, K] in panels, X rounded to bf16 (where
// __AVX512BF16__ is defined: cpu_stored_bf16_dot.cpp).
void bf16_dot_product(const float* X, i64 b, i64 K, const std::uint16_t* W, i64 N, float alpha, float beta, float* C);

// bf16_dot_product for one input row while `beside` runs on the calling thread
// (stored_row_beside), where __AVX512BF16__ is defined.
bool bf16_dot_row_beside(const float* x, i64 K, const std::uint16_t* W, i64 N, float alpha, float beta, float* C,
                         const std::function<void()>& beside);

}  // namespace palm
