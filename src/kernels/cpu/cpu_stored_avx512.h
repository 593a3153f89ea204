// Decode products against int8 weights on AVX-512 VNNI (vpdpbusd), against bf16 weights
// for 3+ input rows on AVX512_BF16 (vdpbf16ps), and against fp32 or bf16 weights for 1-2
// input rows (widened, four FMA chains per row): cpu_stored_avx512.cpp says how, and what
// is rounded.
#pragma once
#include <cstdint>

#include "kernels/backend.h"

namespace palm {

// int8 weights: activations are quantized per token in groups of kQuantGroup consecutive
// values (group k / kQuantGroup), each with its own scale (max |x| / 127 of the group), as
// llama.cpp's q8_0 path quantizes in blocks. A group is what one int32 sum of vpdpbusd
// covers before it is converted, so a group needs one scale, applied once.
inline constexpr i64 kQuantGroup = 64;

// int8 weights as stored_product_avx512 reads them: int8_pack_panels rearranges q [rows,
// cols] (row-major, as quantize_int8_rows writes it) in place into panels of 16 rows (the
// last panel holds rows % 16 where that is not 0). In a panel of L rows, 4-byte quad j < cols
// / 4 of row r lies at (j * L + r) * 4, so one 64-byte load holds quad j of 16 rows: the
// lanes of vpdpbusd are then output rows, and a product needs no sums across lanes. Row r's
// last cols % 4 bytes follow all the quads, at (cols / 4) * L * 4 + r * (cols % 4).
void int8_pack_panels(std::int8_t* q, i64 rows, i64 cols);

// Whether this build has those kernels (rows_times_stored uses them unless
// PALM_NO_AVX512_DOT is set).
bool stored_avx512_available();

// C[b, N] = alpha * scales[n] * (X W^T) + beta * C for int8 W [N, K] in panels
// (int8_pack_panels), or alpha * X W^T +
// beta * C for bf16 W, and for fp32 W with b <= 2 (scales unused, as in
// rows_times_stored); false (nothing done) where
// this build's CPU lacks those instructions or the case is another (fp32 from 3 rows: the
// tiled sgemm of cpu_stored_gemv.cpp).
bool stored_product_avx512(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                           float alpha, float beta, float* C);

}  // namespace palm
