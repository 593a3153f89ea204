// Decode products against int8 weights on AVX-512 VNNI, against bf16 weights, and against
// fp32 weights for 1-2 input rows, on AVX-512.
//
// int8: vpdpbusd multiplies unsigned by signed bytes into int32 sums, 64 per instruction,
// so the arithmetic per weight byte stays below what the memory delivers (the widening to
// fp32 before reached 61-63% of the bandwidth floor at batch 1). The activations are
// quantized per token in groups of 64 (cpu_stored_avx512.h: a scale per group, max |x| /
// 127, round to nearest even), as llama.cpp's q8_0 path quantizes in blocks; the weights'
// signed bytes are made unsigned by adding 128 (xor 0x80), and 128 * sum(q * scale) is
// subtracted once per input row. The weights are stored in panels of 16 rows with each
// 4-byte quad of the 16 rows side by side (pack_panels), so a lane of vpdpbusd sums one
// output row: each activation quad is broadcast against the panel's quad vectors, and no
// sums across lanes remain. On rows as stored (a tile of 4 weight rows against 4 input rows,
// then sums across lanes, scales and the outputs per tile) batch 16 ran at ~25% of the
// cores' vpdpbusd rate even in cache; transposing 16 rows on the fly cost as much as the
// products (docs/PERFORMANCE.md).
//
// bf16: the weights are stored in the same panels (a 4-byte unit is a pair of bf16), widened
// exactly to fp32 in registers and multiplied by the fp32 activations: nothing is rounded,
// and the sums differ from fp32 weights' only in their order.
//
// fp32, 1-2 input rows: the weights stream from memory, each used once or twice; 8 rows
// are summed side by side, so each core reads 8 streams at once. fp32 from 3 rows is
// cpu_stored_gemv.cpp's tiled sgemm.
#include "kernels/cpu/cpu_stored_avx512.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/bf16.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
// GCC 12's _mm512_reduce_add_ps starts from an undefined vector it then overwrites
// wholly: a false "may be used uninitialized" in every caller
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cmath>
#include <cstdlib>

namespace palm {

namespace {

inline __mmask64 tail_mask64(i64 n) { return n >= 64 ? ~__mmask64(0) : n <= 0 ? 0 : (__mmask64(1) << n) - 1; }

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

// ------------------------------------------------------------------ int8
struct QuantRows {
  i64 b = 0, groups = 0;
  std::vector<std::int8_t> q;  // [groups][b][kQuantGroup]: row i's group g at (g * b + i) * 64, zero past K
  std::vector<float> scale;    // [groups][b]
  std::vector<float> offset;   // [b]: 128 * sum over k of scale(k) * q_k
};

void size_rows(i64 b, i64 K, QuantRows& qr) {
  qr.b = b;
  qr.groups = (K + kQuantGroup - 1) / kQuantGroup;
  qr.q.resize(std::size_t(qr.groups * b * kQuantGroup));  // every value is then written by quantize_row
  qr.scale.resize(std::size_t(qr.groups * b));
  qr.offset.resize(std::size_t(b));
}

inline __mmask16 tail_mask16(i64 n) { return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? 0 : __mmask16((1u << n) - 1); }

// Row i of X into qr (sized by size_rows), group by group: amax ignores NaN as std::max does
// (max(|x|, m) keeps m where |x| is NaN), q = nearbyint(x * (127 / amax)) (the default
// rounding, to nearest even) clamped to +-127.
void quantize_row(const float* X, i64 i, i64 K, QuantRows& qr) {
  static_assert(kQuantGroup == 64, "a group is four vectors of 16 floats");
  const float* x = X + i * K;
  double offset = 0;
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (i64 g = 0; g < qr.groups; ++g) {
    const i64 k0 = g * kQuantGroup;
    __m512 v[4], vmax = _mm512_setzero_ps();
    for (int u = 0; u < 4; ++u) {
      v[u] = _mm512_maskz_loadu_ps(tail_mask16(K - k0 - 16 * u), x + k0 + 16 * u);
      vmax = _mm512_max_ps(_mm512_abs_ps(v[u]), vmax);
    }
    const float amax = _mm512_reduce_max_ps(vmax);
    const float scale = amax / 127.0f;
    qr.scale[std::size_t(g * qr.b + i)] = scale;
    const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    std::int8_t* q = qr.q.data() + (g * qr.b + i) * kQuantGroup;
    __m512i sum = _mm512_setzero_si512();
    for (int u = 0; u < 4; ++u) {
      __m512i n = _mm512_cvtps_epi32(_mm512_mul_ps(v[u], inv));
      n = _mm512_min_epi32(_mm512_max_epi32(n, lo), hi);
      n = _mm512_maskz_mov_epi32(tail_mask16(K - k0 - 16 * u), n);  // past K: 0
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * u), _mm512_cvtepi32_epi8(n));
      sum = _mm512_add_epi32(sum, n);
    }
    offset += 128.0 * double(scale) * double(_mm512_reduce_add_epi32(sum));
  }
  qr.offset[std::size_t(i)] = float(offset);
}

// f[m] = sum over groups of (the group's int32 sums) * (its scale), for MR input rows from m0
// and the L <= 16 rows of one panel (lanes). The quad vectors stream from the panel, each
// met by up to 8 activation quads broadcast from qr (their offsets are constants within a
// group), so 9 loads serve 8 vpdpbusd. One or two input rows (batch 1 and 2: the
// weights come from memory) keep two chains each, so a chain's latency does not bound the
// stream. `ahead`: the next panel, fetched during this one (the first input block only).
template <int MR, bool FULL>
__attribute__((noinline)) void int8_panel_sums(const std::int8_t* panel, i64 L, i64 K, const __m512i* tail_quad,
                                               const QuantRows& qr, i64 m0, const char* ahead, __m512* f) {
  constexpr int CH = MR <= 2 ? 2 : 1;
  const __m512i flip = _mm512_set1_epi8(char(0x80));  // signed weights to unsigned: + 128
  const __mmask16 lanes = tail_mask16(L);
  const i64 full_quads = K / 4, quads = (K + 3) / 4;
  auto quad = [&](i64 j) {  // j < full_quads
    return _mm512_xor_si512(FULL ? _mm512_loadu_si512(panel + j * 64) : _mm512_maskz_loadu_epi32(lanes, panel + j * L * 4), flip);
  };
  // (apart, so that the unrolled loop over whole groups has no test for the tail)
  auto quad_or_tail = [&](i64 j) { return j == full_quads ? _mm512_xor_si512(*tail_quad, flip) : quad(j); };
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) f[m] = _mm512_setzero_ps();
  for (i64 g = 0; g < qr.groups; ++g) {
    if (ahead) {
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l) _mm_prefetch(ahead + 1024 * g + 64 * l, _MM_HINT_T0);
    }
    const i64 j0 = g * 16;
    const float* s = qr.scale.data() + g * qr.b + m0;
    // the group's rows 8 at a time (8 int32 sums in registers beside the MR float sums),
    // each block over the same 1 KB of the panel, in L1 from the first
#pragma GCC unroll 2
    for (int r0 = 0; r0 < MR; r0 += 8) {
      const std::int8_t* q = qr.q.data() + (g * qr.b + m0 + r0) * kQuantGroup;
      __m512i acc[CH][8];
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c)
#pragma GCC unroll 8
        for (int m = 0; m < 8; ++m) acc[c][m] = _mm512_setzero_si512();
      auto step = [&](const __m512i w, int d, int c) {
#pragma GCC unroll 8
        for (int m = 0; m < 8; ++m) {
          if (r0 + m >= MR) break;
          std::int32_t x4;
          std::memcpy(&x4, q + m * kQuantGroup + 4 * d, 4);
          acc[c][m] = _mm512_dpbusd_epi32(acc[c][m], w, _mm512_set1_epi32(x4));
        }
      };
      if (j0 + 16 <= full_quads) {
#pragma GCC unroll 16
        for (int d = 0; d < 16; ++d) step(quad(j0 + d), d, d % CH);
      } else {
        for (i64 j = j0; j < quads; ++j) step(quad_or_tail(j), int(j - j0), int(j % CH));
      }
#pragma GCC unroll 8
      for (int m = 0; m < 8; ++m) {
        if (r0 + m >= MR) break;
        __m512i sum = acc[0][m];
        if (CH == 2) sum = _mm512_add_epi32(sum, acc[CH - 1][m]);
        f[r0 + m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(s[r0 + m]), f[r0 + m]);
      }
    }
  }
}

// Input rows per pass over a panel: 16 float sums and 8 int32 ones in registers. With 8
// rows per pass (two passes at batch 16) a panel of K = 5,120 (80 KB) came back from L2 for
// the second; now each group's 1 KB serves both blocks of 8 rows from L1 (batch 16 products
// 5-20% faster, seven alternating runs).
constexpr int kInt8Inputs = 16;

// C[:, n0 .. n0 + L - 1] for every input row, from the panel of rows n0 .. n0 + L - 1.
// The last cols % 4 bytes of each of a panel's L rows as one quad (zero-padded).
__m512i int8_tail(const std::int8_t* panel, i64 L, i64 K) {
  alignas(64) std::int32_t tail[16] = {};
  if (K % 4) {
    const std::int8_t* t = panel + (K / 4) * L * 4;
    for (i64 r = 0; r < L; ++r) std::memcpy(&tail[r], t + r * (K % 4), std::size_t(K % 4));
  }
  return _mm512_load_si512(tail);
}

// C[m0 + m, n0 .. n0 + L - 1] = (weight scales ws) * (f[m] - the row's offset) (+ beta C).
void int8_store(const __m512* f, int MR, i64 m0, i64 N, i64 n0, i64 L, __m512 ws, const QuantRows& qr, float beta,
                float* C) {
  const __mmask16 lanes = tail_mask16(L);
  for (int m = 0; m < MR; ++m) {
    float* c = C + (m0 + m) * N + n0;
    __m512 v = _mm512_mul_ps(ws, _mm512_sub_ps(f[m], _mm512_set1_ps(qr.offset[std::size_t(m0 + m)])));
    if (beta != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, c), v);
    _mm512_mask_storeu_ps(c, lanes, v);
  }
}

void int8_panel(const std::int8_t* W, i64 K, i64 N, i64 n0, const QuantRows& qr, const float* scales, float alpha,
                float beta, float* C) {
  const i64 L = std::min<i64>(16, N - n0);
  const std::int8_t* panel = W + n0 * K;
  const __m512i tail_quad = int8_tail(panel, L, K);
  // the next panel, fetched while this one is used, at every batch size: at batch 1 the
  // products read ~88% of the read probe without on Ice Lake and ~95% with (alternating,
  // 24 pairs); on Zen 5 batch 1 was within the noise either way (bf16 keeps none at 1-2)
  const char* ahead = n0 + 16 < N ? reinterpret_cast<const char*>(W + (n0 + 16) * K) : nullptr;
  const __m512 ws = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_maskz_loadu_ps(tail_mask16(L), scales + n0));
  for (i64 m0 = 0; m0 < qr.b; m0 += kInt8Inputs) {
    const int MR = int(std::min<i64>(kInt8Inputs, qr.b - m0));
    __m512 f[kInt8Inputs];
    with_shape<kInt8Inputs>(MR, L == 16, [&](auto mr, auto full) {
      int8_panel_sums<mr.value, full.value>(panel, L, K, &tail_quad, qr, m0, m0 == 0 ? ahead : nullptr, f);
    });
    int8_store(f, MR, m0, N, n0, L, ws, qr, beta, C);
  }
}

// Batch 1-2: f[p * MR + m] = the sums of MR input rows with P full panels side by side
// (panel p at panels + p * 16 * K), so each core reads P streams at once: on Ice Lake one
// stream per core reads ~22.5 GB/s and 8 ~30 (as fp32's 8 rows below). P = 8 at batch 1,
// 4 at batch 2 (the sums in registers).
template <int MR, int P>
__attribute__((noinline)) void int8_few_sums(const std::int8_t* panels, i64 K, const __m512i* tails,
                                             const QuantRows& qr, __m512* f) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const i64 full_quads = K / 4, quads = (K + 3) / 4;
#pragma GCC unroll 8
  for (int i = 0; i < P * MR; ++i) f[i] = _mm512_setzero_ps();
  for (i64 g = 0; g < qr.groups; ++g) {
    const i64 j0 = g * 16;
    const std::int8_t* q = qr.q.data() + g * qr.b * kQuantGroup;
    __m512i acc[P][MR];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 2
      for (int m = 0; m < MR; ++m) acc[p][m] = _mm512_setzero_si512();
    auto step = [&](int p, const __m512i w, int d) {
#pragma GCC unroll 2
      for (int m = 0; m < MR; ++m) {
        std::int32_t x4;
        std::memcpy(&x4, q + m * kQuantGroup + 4 * d, 4);
        acc[p][m] = _mm512_dpbusd_epi32(acc[p][m], _mm512_xor_si512(w, flip), _mm512_set1_epi32(x4));
      }
    };
    if (j0 + 16 <= full_quads) {
#pragma GCC unroll 16
      for (int d = 0; d < 16; ++d)
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) step(p, _mm512_loadu_si512(panels + p * 16 * K + (j0 + d) * 64), d);
    } else {
      for (i64 j = j0; j < quads; ++j)
        for (int p = 0; p < P; ++p)
          step(p, j == full_quads ? tails[p] : _mm512_loadu_si512(panels + p * 16 * K + j * 64), int(j - j0));
    }
    const float* s = qr.scale.data() + g * qr.b;
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 2
      for (int m = 0; m < MR; ++m)
        f[p * MR + m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[p][m]), _mm512_set1_ps(s[m]), f[p * MR + m]);
  }
}

// From 3 input rows: f[p * 8 + m] = the sums of MR <= 8 input rows from m0 with two full
// panels side by side (p0, then p0 + 16 rows), each activation quad broadcast once for both
// panels' vpdpbusd (one panel needs a broadcast load per vpdpbusd, and Ice Lake's two load
// ports then bound it as much as its vpdpbusd rate). The float sums stay in f (memory),
// touched once per group and row. `ahead`: the next two panels, fetched during this pass.
template <int MR>
__attribute__((noinline)) void int8_two_panel_sums(const std::int8_t* p0, i64 K, const __m512i* tails,
                                                   const QuantRows& qr, i64 m0, const char* ahead, __m512* f) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const std::int8_t* p1 = p0 + 16 * K;
  const i64 full_quads = K / 4, quads = (K + 3) / 4;
  for (int i = 0; i < 16; ++i) f[i] = _mm512_setzero_ps();
  for (i64 g = 0; g < qr.groups; ++g) {
    if (ahead) {
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l) {
        _mm_prefetch(ahead + 1024 * g + 64 * l, _MM_HINT_T0);
        _mm_prefetch(ahead + 16 * K + 1024 * g + 64 * l, _MM_HINT_T0);
      }
    }
    const i64 j0 = g * 16;
    const std::int8_t* q = qr.q.data() + (g * qr.b + m0) * kQuantGroup;
    __m512i acc[2][MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) acc[0][m] = acc[1][m] = _mm512_setzero_si512();
    auto step = [&](__m512i w0, __m512i w1, int d) {
      w0 = _mm512_xor_si512(w0, flip);
      w1 = _mm512_xor_si512(w1, flip);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        std::int32_t x4;
        std::memcpy(&x4, q + m * kQuantGroup + 4 * d, 4);
        const __m512i x = _mm512_set1_epi32(x4);
        acc[0][m] = _mm512_dpbusd_epi32(acc[0][m], w0, x);
        acc[1][m] = _mm512_dpbusd_epi32(acc[1][m], w1, x);
      }
    };
    if (j0 + 16 <= full_quads) {
#pragma GCC unroll 16
      for (int d = 0; d < 16; ++d) step(_mm512_loadu_si512(p0 + (j0 + d) * 64), _mm512_loadu_si512(p1 + (j0 + d) * 64), d);
    } else {
      for (i64 j = j0; j < quads; ++j) {
        if (j == full_quads) step(tails[0], tails[1], int(j - j0));
        else step(_mm512_loadu_si512(p0 + j * 64), _mm512_loadu_si512(p1 + j * 64), int(j - j0));
      }
    }
    const float* s = qr.scale.data() + g * qr.b + m0;
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 sm = _mm512_set1_ps(s[m]);
      f[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[0][m]), sm, f[m]);
      f[8 + m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[1][m]), sm, f[8 + m]);
    }
  }
}

// Full panels n0 and n0 + 16 for every input row, 8 rows per pass (int8_two_panel_sums).
void int8_two_panels(const std::int8_t* W, i64 K, i64 N, i64 n0, const QuantRows& qr, const float* scales, float alpha,
                     float beta, float* C) {
  const std::int8_t* panels = W + n0 * K;
  const __m512i tails[2] = {int8_tail(panels, 16, K), int8_tail(panels + 16 * K, 16, K)};
  const char* ahead = n0 + 32 < N ? reinterpret_cast<const char*>(W + (n0 + 32) * K) : nullptr;
  const __m512 ws0 = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_loadu_ps(scales + n0));
  const __m512 ws1 = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_loadu_ps(scales + n0 + 16));
  for (i64 m0 = 0; m0 < qr.b; m0 += 8) {
    const int MR = int(std::min<i64>(8, qr.b - m0));
    __m512 f[16];
    with_shape<8>(MR, true, [&](auto mr, auto) {
      int8_two_panel_sums<mr.value>(panels, K, tails, qr, m0, m0 == 0 ? ahead : nullptr, f);
    });
    int8_store(f, MR, m0, N, n0, 16, ws0, qr, beta, C);
    int8_store(f + 8, MR, m0, N, n0 + 16, 16, ws1, qr, beta, C);
  }
}

// Rows n0 .. n0 + 16 * P - 1 (full panels) for 1-2 input rows.
template <int P>
void int8_few_panels(const std::int8_t* W, i64 K, i64 N, i64 n0, const QuantRows& qr, const float* scales, float alpha,
                     float beta, float* C) {
  const std::int8_t* panels = W + n0 * K;
  __m512i tails[P];
  for (int p = 0; p < P; ++p) tails[p] = int8_tail(panels + p * 16 * K, 16, K);
  __m512 f[2 * P];
  if (qr.b == 2) int8_few_sums<2, P>(panels, K, tails, qr, f);
  else int8_few_sums<1, P>(panels, K, tails, qr, f);
  const int MR = int(qr.b);
  for (int p = 0; p < P; ++p) {
    const __m512 ws = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_loadu_ps(scales + n0 + 16 * p));
    int8_store(f + p * MR, MR, 0, N, n0 + 16 * p, 16, ws, qr, beta, C);
  }
}

// ------------------------------------------------------------------ fp32, 1-2 input rows
// Each weight is read from memory and used once or twice, so what bounds the product is
// how much the memory delivers to each core. One row at a time (four FMA chains per input
// row, which had beaten the compiler's one-chain loop by 5-15%) is one stream per core, and
// on Ice Lake one stream per core reads ~22.5 GB/s where 8 streams per core read ~30 (the
// read probe, bench_generate.cpp): 8 rows side by side, one chain each, read the products
// of a batch-1 step 1.25-1.4x faster there (docs/PERFORMANCE.md).

// out[r * ROWS + i] = sum_k w_i[k] * X[r][k] for ROWS weight rows (w + i * K) and R (1 or 2)
// input rows; ROWS = 1 only for the last N % 8 rows.
template <int R, int ROWS>
void dense_rows_few(const float* w, i64 K, const float* X, float* out) {
  __m512 acc[R][ROWS];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) acc[r][i] = _mm512_setzero_ps();
  for (i64 k = 0; k < K; k += 16) {
    const __mmask16 m = tail_mask16(K - k);
    __m512 x[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) x[r] = _mm512_maskz_loadu_ps(m, X + r * K + k);
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) {
      const __m512 wv = _mm512_maskz_loadu_ps(m, w + i * K + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][i] = _mm512_fmadd_ps(wv, x[r], acc[r][i]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) out[r * ROWS + i] = _mm512_reduce_add_ps(acc[r][i]);
}

void dense_product_few(const float* X, i64 b, i64 K, const float* W, i64 N, float alpha, float beta, float* C) {
  const i64 blocks = N / 8;
#pragma omp parallel for schedule(static)
  for (i64 blk = 0; blk < blocks + N % 8; ++blk) {  // blocks of 8 rows, then the rest one by one
    const i64 n = blk < blocks ? blk * 8 : blocks * 8 + (blk - blocks);
    const int rows = blk < blocks ? 8 : 1;
    float dots[16];
    if (rows == 8) {
      if (b == 2) dense_rows_few<2, 8>(W + n * K, K, X, dots);
      else dense_rows_few<1, 8>(W + n * K, K, X, dots);
    } else {
      if (b == 2) dense_rows_few<2, 1>(W + n * K, K, X, dots);
      else dense_rows_few<1, 1>(W + n * K, K, X, dots);
    }
    for (i64 r = 0; r < b; ++r)
      for (int i = 0; i < rows; ++i) {
        float& c = C[r * N + n + i];
        c = alpha * dots[r * rows + i] + (beta == 0.0f ? 0.0f : beta * c);
      }
  }
}

// ------------------------------------------------------------------ bf16
// bf16 weights in panels (pack_panels: 4-byte units are pairs of bf16 here), widened
// exactly to fp32 (a lane's low bf16 shifted up, its high one masked) and multiplied by
// fp32 activations: the sums differ from fp32 weights' only in their order. Widening
// costs two instructions per 32 weights; the FMAs then equal vdpbf16ps on activations
// split into hi + lo bf16 (two per 32 weights per input row, as the tiles before did), and
// nothing is rounded.
// Activations as pairs side by side: x[(j * b + i) * 2 + e] = X[i][2j + e] (0 past K), so
// the broadcasts of one pass over a panel lie at constant offsets from one pointer.
struct PairRows {
  i64 b = 0, pairs = 0;
  std::vector<float> x;
};

void size_pairs(i64 b, i64 K, PairRows& pr) {  // every value is then written by pair_rows
  pr.b = b;
  pr.pairs = (K + 1) / 2;
  pr.x.resize(std::size_t(pr.pairs * b * 2));
}

// Units j0 .. j1 - 1 of every row of X into pr. Eight rows' eight units at a time, by an
// 8 x 8 transpose of 8-byte pairs (one pair per row and unit at a time cost ~40% of a
// batch-16 product in cache); the rest pair by pair.
void pair_rows(const float* X, i64 K, i64 j0, i64 j1, PairRows& pr) {
  const i64 b = pr.b, full = K / 2;
  auto one = [&](i64 i, i64 j) {
    float* o = pr.x.data() + (j * b + i) * 2;
    o[0] = X[i * K + 2 * j];
    o[1] = 2 * j + 1 < K ? X[i * K + 2 * j + 1] : 0.0f;
  };
  i64 i0 = 0;
  for (; i0 + 8 <= b; i0 += 8) {
    i64 j = j0;
    for (; j + 8 <= std::min(j1, full); j += 8) {
      __m512d r[8], t[8], u[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm512_castps_pd(_mm512_loadu_ps(X + (i0 + i) * K + 2 * j));  // row i's 8 pairs
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);  // 128-bit lane L: pair 2L of rows i, i + 1
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);  // pair 2L + 1
      }
      for (int h = 0; h < 8; h += 4) {  // rows h .. h + 3: u[h + e] lanes: pairs e, e + 4 of rows (h, h+1), then (h+2, h+3)
        u[h] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0x88);
        u[h + 1] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0x88);
        u[h + 2] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0xDD);
        u[h + 3] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0xDD);
      }
      for (int e = 0; e < 4; ++e) {  // unit j + e and j + e + 4: the 8 rows' pairs
        _mm512_storeu_pd(pr.x.data() + ((j + e) * b + i0) * 2, _mm512_shuffle_f64x2(u[e], u[4 + e], 0x88));
        _mm512_storeu_pd(pr.x.data() + ((j + e + 4) * b + i0) * 2, _mm512_shuffle_f64x2(u[e], u[4 + e], 0xDD));
      }
    }
    for (; j < j1; ++j)
      for (i64 i = i0; i < i0 + 8; ++i) one(i, j);
  }
  for (; i0 < b; ++i0)
    for (i64 j = j0; j < j1; ++j) one(i0, j);
}

// f[m] = the dots of MR input rows from m0 with the L <= 16 rows of one panel (lanes).
// Up to 8 input rows sum the two halves of a unit apart (HALVES = 2; one or two rows also
// keep two chains per half, as the int8 kernel does), so chains are many and short; more
// rows sum both into one chain per row, which leaves registers for 16 rows.
template <int MR, bool FULL>
__attribute__((noinline)) void bf16_panel_sums(const std::uint16_t* panel, i64 L, i64 K, const __m512i* tail_pair,
                                               const PairRows& pr, i64 m0, const char* ahead, __m512* f) {
  constexpr int CH = MR <= 2 ? 2 : 1, HALVES = MR <= 8 ? 2 : 1;
  const __mmask16 lanes = tail_mask16(L);
  const __m512i high = _mm512_set1_epi32(int(0xFFFF0000u));
  const i64 full_pairs = K / 2, pairs = (K + 1) / 2;
  __m512 acc[CH][HALVES][MR];
#pragma GCC unroll 16
  for (int c = 0; c < CH; ++c)
#pragma GCC unroll 16
    for (int h = 0; h < HALVES; ++h)
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) acc[c][h][m] = _mm512_setzero_ps();
  auto pair = [&](i64 j) {  // j < full_pairs
    return FULL ? _mm512_loadu_si512(panel + j * 32) : _mm512_maskz_loadu_epi32(lanes, panel + j * L * 2);
  };
  // x: unit j's activations of input rows m0 .. m0 + MR - 1
  auto step = [&](const __m512i w, const float* x, int c) {
    const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)), odd = _mm512_castsi512_ps(_mm512_and_si512(w, high));
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      acc[c][0][m] = _mm512_fmadd_ps(even, _mm512_set1_ps(x[2 * m]), acc[c][0][m]);
      acc[c][HALVES - 1][m] = _mm512_fmadd_ps(odd, _mm512_set1_ps(x[2 * m + 1]), acc[c][HALVES - 1][m]);
    }
  };
  i64 j = 0;
  for (; j + 16 <= full_pairs; j += 16) {  // 1 KB of a full panel per block
    if (ahead) {
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l) _mm_prefetch(ahead + 64 * (j + l), _MM_HINT_T0);
    }
    const float* x = pr.x.data() + (j * pr.b + m0) * 2;
#pragma GCC unroll 16
    for (int d = 0; d < 16; ++d) step(pair(j + d), x + d * 2 * pr.b, d % CH);
  }
  for (; j < pairs; ++j) step(j == full_pairs ? *tail_pair : pair(j), pr.x.data() + (j * pr.b + m0) * 2, int(j % CH));
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
    __m512 s = acc[0][0][m];
    if (HALVES == 2) s = _mm512_add_ps(s, acc[0][HALVES - 1][m]);
    if (CH == 2) s = _mm512_add_ps(s, _mm512_add_ps(acc[CH - 1][0][m], acc[CH - 1][HALVES - 1][m]));
    f[m] = s;
  }
}

// f[p * 8 + m] = the dots of MR input rows from m0 with P full panels side by side (panel p
// at p0 + p * 16 rows): each activation is broadcast once for all P panels' FMAs. One panel
// at 16 rows per pass needs a broadcast load per FMA, and Ice Lake's two load ports then
// bound it as much as its two FMA ports (which the widening shares): batch 16 ran at ~55%
// of the FMA rate there. With P = 2 and 8 rows, 16 + 4 loads serve 32 FMAs and 4
// widenings. At 1-2 rows (batch 1-2) P = 4: four streams per core. `ahead`: the next P
// panels, to prefetch during this pass.
template <int MR, int P>
__attribute__((noinline)) void bf16_panels_sums(const std::uint16_t* p0, i64 K, const __m512i* tails,
                                                const PairRows& pr, i64 m0, const char* ahead, __m512* f) {
  const __m512i high = _mm512_set1_epi32(int(0xFFFF0000u));
  const i64 full_pairs = K / 2, pairs = (K + 1) / 2;
  __m512 acc[P][MR];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) acc[p][m] = _mm512_setzero_ps();
  // w[p]: unit j of panel p; x: unit j's activations of the MR rows
  auto step = [&](const __m512i* w, const float* x) {
    __m512 even[P], odd[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      even[p] = _mm512_castsi512_ps(_mm512_slli_epi32(w[p], 16));
      odd[p] = _mm512_castsi512_ps(_mm512_and_si512(w[p], high));
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 xe = _mm512_set1_ps(x[2 * m]), xo = _mm512_set1_ps(x[2 * m + 1]);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[p][m] = _mm512_fmadd_ps(even[p], xe, acc[p][m]);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[p][m] = _mm512_fmadd_ps(odd[p], xo, acc[p][m]);
    }
  };
  __m512i w[P];
  i64 j = 0;
  for (; j + 16 <= full_pairs; j += 16) {  // 1 KB of each panel per block
    if (ahead) {
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l)
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) _mm_prefetch(ahead + p * 32 * K + 64 * (j + l), _MM_HINT_T0);
    }
    const float* x = pr.x.data() + (j * pr.b + m0) * 2;
#pragma GCC unroll 16
    for (int d = 0; d < 16; ++d) {
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) w[p] = _mm512_loadu_si512(p0 + p * 16 * K + (j + d) * 32);
      step(w, x + d * 2 * pr.b);
    }
  }
  for (; j < pairs; ++j) {
    for (int p = 0; p < P; ++p) w[p] = j == full_pairs ? tails[p] : _mm512_loadu_si512(p0 + p * 16 * K + j * 32);
    step(w, pr.x.data() + (j * pr.b + m0) * 2);
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) f[p * 8 + m] = acc[p][m];
}

// Input rows per pass over a panel: 16 sums in registers. With 8 rows per pass, as int8,
// the panel (32 KB at K = 1,024) and the activations' pairs (64 KB at batch 16) did not
// both stay in L1 for the second pass.
constexpr int kBf16Inputs = 16;

// Panel n0's last value of each row where K is odd, as a pair with 0.
__m512i bf16_tail(const std::uint16_t* panel, i64 L, i64 K) {
  alignas(64) std::uint32_t tail[16] = {};
  if (K % 2)
    for (i64 r = 0; r < L; ++r) tail[r] = panel[(K / 2) * L * 2 + r];
  return _mm512_load_si512(tail);
}

// C[m0 + m, n0 .. n0 + L - 1] = alpha f[m] (+ beta C) for MR rows.
void bf16_store(const __m512* f, int MR, i64 m0, i64 N, i64 n0, i64 L, float alpha, float beta, float* C) {
  const __mmask16 lanes = tail_mask16(L);
  for (int m = 0; m < MR; ++m) {
    float* c = C + (m0 + m) * N + n0;
    __m512 v = _mm512_mul_ps(_mm512_set1_ps(alpha), f[m]);
    if (beta != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, c), v);
    _mm512_mask_storeu_ps(c, lanes, v);
  }
}

void bf16_panel(const std::uint16_t* W, i64 K, i64 N, i64 n0, const PairRows& pr, float alpha, float beta, float* C) {
  const i64 L = std::min<i64>(16, N - n0);
  const std::uint16_t* panel = W + n0 * K;
  const __m512i tail_pair = bf16_tail(panel, L, K);
  // at 1-2 input rows the core's own prefetcher keeps up (Zen 5: 0-17% faster without;
  // Ice Lake: within the noise)
  const char* ahead = n0 + 16 < N && pr.b > 2 ? reinterpret_cast<const char*>(W + (n0 + 16) * K) : nullptr;
  for (i64 m0 = 0; m0 < pr.b; m0 += kBf16Inputs) {
    const int MR = int(std::min<i64>(kBf16Inputs, pr.b - m0));
    __m512 f[kBf16Inputs];
    with_shape<kBf16Inputs>(MR, L == 16, [&](auto mr, auto full) {
      bf16_panel_sums<mr.value, full.value>(panel, L, K, &tail_pair, pr, m0, m0 == 0 ? ahead : nullptr, f);
    });
    bf16_store(f, MR, m0, N, n0, L, alpha, beta, C);
  }
}

// Full panels n0 .. n0 + 16 * P - 1 together (bf16_panels_sums), 8 input rows per pass.
template <int P>
void bf16_panels(const std::uint16_t* W, i64 K, i64 N, i64 n0, const PairRows& pr, float alpha, float beta, float* C) {
  const std::uint16_t* panels = W + n0 * K;
  __m512i tails[P];
  for (int p = 0; p < P; ++p) tails[p] = bf16_tail(panels + p * 16 * K, 16, K);
  // the next P panels prefetched from 3 rows only: at batch 1 the four panels' burst of 64
  // prefetches per block made the products ~10% slower on Ice Lake (16-18 vs 18-20 ms)
  const char* ahead = n0 + 16 * P < N && pr.b > 2 ? reinterpret_cast<const char*>(W + (n0 + 16 * P) * K) : nullptr;
  for (i64 m0 = 0; m0 < pr.b; m0 += 8) {
    const int MR = int(std::min<i64>(8, pr.b - m0));
    __m512 f[8 * P];
    with_shape<8>(MR, true, [&](auto mr, auto) {
      if constexpr (P == 2 || mr.value <= 2)
        bf16_panels_sums<mr.value, P>(panels, K, tails, pr, m0, m0 == 0 ? ahead : nullptr, f);
    });
    for (int p = 0; p < P; ++p) bf16_store(f + 8 * p, MR, m0, N, n0 + 16 * p, 16, alpha, beta, C);
  }
}


}  // namespace

bool stored_avx512_available() {
  static const bool on = std::getenv("PALM_NO_AVX512_DOT") == nullptr;  // the A/B switch of docs/PERFORMANCE.md
  return on;
}

bool stored_product_avx512(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                           float alpha, float beta, float* C) {
  if (format == WeightFormat::kInt8) {
    thread_local QuantRows mine;  // reused between calls; the workers use the caller's
    QuantRows& qr = mine;
    size_rows(b, K, qr);
    const auto* Wq = static_cast<const std::int8_t*>(W);
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (i64 i = 0; i < b; ++i) quantize_row(X, i, K, qr);
      // (the loop's barrier: every row is quantized before any product)
      // batch 1-2: 8 or 4 full panels at a time (that many streams per core); the rest
      // panel by panel
      const i64 rows = b == 1 ? 16 * 8 : b == 2 ? 16 * 4 : 16 * 2, few = N / rows * rows;
#pragma omp for schedule(static) nowait
      for (i64 n0 = 0; n0 < few; n0 += rows) {
        if (b == 1) int8_few_panels<8>(Wq, K, N, n0, qr, scales, alpha, beta, C);
        else if (b == 2) int8_few_panels<4>(Wq, K, N, n0, qr, scales, alpha, beta, C);
        else int8_two_panels(Wq, K, N, n0, qr, scales, alpha, beta, C);
      }
#pragma omp for schedule(static)
      for (i64 n0 = few; n0 < N; n0 += 16) int8_panel(Wq, K, N, n0, qr, scales, alpha, beta, C);
    }
    return true;
  }
  if (b <= 2 && format == WeightFormat::kF32) {
    dense_product_few(X, b, K, static_cast<const float*>(W), N, alpha, beta, C);
    return true;
  }
  if (format == WeightFormat::kBF16) {
    thread_local PairRows mine;  // reused between calls; the workers use the caller's
    PairRows& pr = mine;
    size_pairs(b, K, pr);
    const auto* Wb = static_cast<const std::uint16_t*>(W);
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (i64 j = 0; j < pr.pairs; j += 64) pair_rows(X, K, j, std::min(j + 64, pr.pairs), pr);
      // full panels two at a time from 3 rows (each activation broadcast serves both),
      // four at 1-2 rows (four streams per core: a batch-1 step's products 20-25 -> 18-20 ms
      // on Ice Lake with two, 3-5% less with four; eight were slower); the last panels one
      // at a time
      const i64 rows = b <= 2 ? 16 * 4 : 16 * 2, many = N / rows * rows;
#pragma omp for schedule(static) nowait
      for (i64 n0 = 0; n0 < many; n0 += rows) {
        if (b <= 2) bf16_panels<4>(Wb, K, N, n0, pr, alpha, beta, C);
        else bf16_panels<2>(Wb, K, N, n0, pr, alpha, beta, C);
      }
#pragma omp for schedule(static)
      for (i64 n0 = many; n0 < N; n0 += 16) bf16_panel(Wb, K, N, n0, pr, alpha, beta, C);
    }
    return true;
  }
  return false;
}

}  // namespace palm

#else

namespace palm {
bool stored_avx512_available() { return false; }
bool stored_product_avx512(const float*, i64, i64, const void*, WeightFormat, const float*, i64, float, float, float*) {
  return false;
}
}  // namespace palm

#endif

namespace palm {

void pack_panels(void* w, i64 rows, i64 row_bytes) {
  auto* q = static_cast<std::uint8_t*>(w);
  const i64 quads = row_bytes / 4, rest = row_bytes % 4;
#pragma omp parallel
  {
    std::vector<std::uint8_t> rowwise;  // one panel as it was
#pragma omp for schedule(static)
    for (i64 n0 = 0; n0 < rows; n0 += 16) {
      const i64 L = std::min<i64>(16, rows - n0);
      std::uint8_t* panel = q + n0 * row_bytes;
      rowwise.assign(panel, panel + L * row_bytes);
      for (i64 r = 0; r < L; ++r) {
        const std::uint8_t* row = rowwise.data() + r * row_bytes;
        for (i64 j = 0; j < quads; ++j) std::memcpy(panel + (j * L + r) * 4, row + 4 * j, 4);
        std::memcpy(panel + quads * L * 4 + r * rest, row + 4 * quads, std::size_t(rest));
      }
    }
  }
}

}  // namespace palm
