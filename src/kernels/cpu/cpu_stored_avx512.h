// Decode products against int8 weights on AVX-512 VNNI (vpdpbusd): cpu_stored_avx512.cpp
// says how, and what is rounded.
#pragma once
#include "kernels/backend.h"

namespace palm {

// int8 weights: activations are quantized per token in blocks of this many values.
inline constexpr i64 kQuantBlock = 128;

// C[b, N] = alpha * scales[n] * (X W^T) + beta * C for int8 W [N, K]; false (nothing
// done) where this build's CPU lacks AVX-512 VNNI or the format is another.
// Whether this build has those kernels (rows_times_stored uses them unless
// PALM_NO_AVX512_DOT is set).
bool stored_avx512_available();

bool stored_product_avx512(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                           float alpha, float beta, float* C);

}  // namespace palm
