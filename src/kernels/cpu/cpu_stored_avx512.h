// Decode products against int8 weights on AVX-512 VNNI (vpdpbusd), against bf16 weights
// for 3+ input rows on AVX512_BF16 (vdpbf16ps), and against fp32 or bf16 weights for 1-2
// input rows (widened, four FMA chains per row): cpu_stored_avx512.cpp says how, and what
// is rounded.
#pragma once
#include "kernels/backend.h"

namespace palm {

// int8 weights: activations are quantized per token, in segments of kQuantSegment values,
// each split into kQuantGroups groups with a scale each (max |x| / 127 of the group). The
// groups are strided, not contiguous: value k of a segment belongs to group
// int8_activation_group(k), the int32 lane vpdpbusd sums it into, so a lane's sum over a
// whole segment has one scale and is converted once. A group holds kQuantSegment /
// kQuantGroups = 128 values (64 at K = 1024), as many as the contiguous blocks of 128 this
// replaced.
inline constexpr i64 kQuantSegment = 2048;
inline constexpr i64 kQuantGroups = 16;
constexpr int int8_activation_group(i64 k_in_segment) { return int(k_in_segment % 64 / 4); }

// Whether this build has those kernels (rows_times_stored uses them unless
// PALM_NO_AVX512_DOT is set).
bool stored_avx512_available();

// C[b, N] = alpha * scales[n] * (X W^T) + beta * C for int8 W [N, K], or alpha * X W^T +
// beta * C for bf16 W, and for fp32 W with b <= 2 (scales unused, as in
// rows_times_stored); false (nothing done) where
// this build's CPU lacks those instructions or the case is another (fp32 from 3 rows: the
// tiled sgemm of cpu_stored_gemv.cpp).
bool stored_product_avx512(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                           float alpha, float beta, float* C);

}  // namespace palm
