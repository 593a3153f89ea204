// Decode products against int8 weights on AVX-512 VNNI (vpdpbusd), against bf16 weights
// (widened in registers), and against fp32 weights for 1-2 input rows (four FMA chains per
// row), with int8 and bf16 weights in panels of 16 rows: cpu_stored_avx512.cpp says how, and
// what is rounded.
#pragma once
#include <cstdint>
#include <functional>

#include "kernels/backend.h"

namespace palm {

// int8 weights: activations are quantized per token in groups of kQuantGroup consecutive
// values (group k / kQuantGroup), each with its own scale (max |x| / 127 of the group), as
// llama.cpp's q8_0 path quantizes in blocks (of 32). A group is what one int32 sum of
// vpdpbusd covers before it is converted, so a group needs one scale, applied once: a
// conversion and an FMA per group and input row, 12-20% of a batch-16 product at groups of
// 64. Groups of 128 made a bench-medium step's products at batch 16 1.07-1.09x as fast
// (batch 1 the same) for a mean |dlogprob| of 0.0356 / 0.0351 at batch 1 / 16 against
// 0.0351 / 0.0334 (the weights' own rounding dominates); 256: ~1.13x, the activations'
// rounding error 1.7x that of 64 (docs/PERFORMANCE.md, session 22).
inline constexpr i64 kQuantGroup = 128;

// int8 and bf16 weights as stored_product_avx512 reads them: pack_panels rearranges a
// row-major matrix of `rows` rows of row_bytes bytes (as quantize_int8_rows or quantize_bf16
// write it) in place into panels of 16 rows (the last panel holds rows % 16 where that is
// not 0), in 4-byte units (4 int8 weights, or 2 bf16). In a panel of L rows, unit j <
// row_bytes / 4 of row r lies at (j * L + r) * 4 bytes, so one 64-byte load holds unit j of
// 16 rows: a vector lane then sums one output row, and a product needs no sums across
// lanes. Row r's last row_bytes % 4 bytes follow all the units, at (row_bytes / 4) * L * 4
// + r * (row_bytes % 4).
void pack_panels(void* w, i64 rows, i64 row_bytes);

// bf16 weights from this many input rows on (every batch), on a CPU with AVX512_BF16: the
// activations are rounded to bf16 (nearest even) and multiplied on vdpbf16ps
// (cpu_stored_bf16_dot.cpp); a CPU without it widens the weights and rounds nothing. (From
// 3 rows until session 24: batch 1-2 widened too, until the memory read ~65 GB/s and the
// widening's arithmetic showed behind it; docs/PERFORMANCE.md.)
inline constexpr i64 kBf16DotRows = 1;
// kBf16DotRows where this build has that kernel (and PALM_NO_AVX512_DOT is not set), else 0.
i64 bf16_dot_min_rows();

// Whether this build has those kernels (rows_times_stored uses them unless
// PALM_NO_AVX512_DOT is set).
bool stored_avx512_available();

// C[b, N] = alpha * scales[n] * (X W^T) + beta * C for int8 W [N, K] in panels
// (pack_panels), or alpha * X W^T + beta * C for bf16 W in panels, and for fp32 W as
// stored with b <= 2 (scales unused, as in rows_times_stored); false (nothing done) where
// this build's CPU lacks those instructions or the case is another (fp32 from 3 rows: the
// tiled sgemm of cpu_stored_gemv.cpp).
bool stored_product_avx512(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                           float alpha, float beta, float* C);

// As stored_product_avx512 for one input row x (W int8, bf16 or fp32), while `beside` runs
// on the calling thread: the other threads start on the weights (groups of 4 panels, or
// spans of 32 fp32 rows, dealt out as threads come free) and the caller joins them when
// beside returns. false (nothing done, beside not run) where this build lacks the kernels,
// PALM_NO_AVX512_DOT is set or only one thread runs.
bool stored_row_beside(const float* x, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                       float alpha, float beta, float* C, const std::function<void()>& beside);

}  // namespace palm
