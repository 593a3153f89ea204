// Shared by the AVX-512 decode-product kernels (cpu_stored_avx512.cpp, cpu_stored_int8.cpp):
// masks for partial vectors, compile-time shapes for the unrolled loops, and the int8
// product's entry point. Include only where __AVX512F__, __AVX512BW__ and __AVX512VNNI__ are
// defined.
#pragma once
#include <immintrin.h>

#include <cstdint>
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

// C[b, N] = alpha * scales[n] * (X W^T) + beta * C for int8 W [N, K] in panels (pack_panels):
// cpu_stored_int8.cpp.
void int8_product_avx512(const float* X, i64 b, i64 K, const std::int8_t* W, const float* scales, i64 N, float alpha,
                         float beta, float* C);

// C[b, N] = alpha * X W^T + beta * C for bf16 W [N, K] in panels, X rounded to bf16 (where
// __AVX512BF16__ is defined: cpu_stored_bf16_dot.cpp).
void bf16_dot_product(const float* X, i64 b, i64 K, const std::uint16_t* W, i64 N, float alpha, float beta, float* C);

}  // namespace palm
