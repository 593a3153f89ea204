// Decode products against int8 weights on AVX-512 VNNI (their kernels: cpu_stored_int8.cpp),
// against bf16 weights, and against fp32 weights for 1-2 input rows, on AVX-512.
//
// int8: vpdpbusd multiplies unsigned by signed bytes into int32 sums, 64 per instruction,
// so the arithmetic per weight byte stays below what the memory delivers (the widening to
// fp32 before reached 61-63% of the bandwidth floor at batch 1). The activations are
// quantized per token in groups of 128 (cpu_stored_avx512.h: a scale per group, max |x| /
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
// bf16 (on a CPU without AVX512_BF16; with it, cpu_stored_bf16_dot.cpp's vdpbf16ps kernel
// takes every batch): the weights are stored in the same panels (a 4-byte unit is a pair of
// bf16), widened exactly to fp32 in registers and multiplied by the fp32 activations:
// nothing is rounded, and the sums differ from fp32 weights' only in their order.
//
// fp32, 1-2 input rows: the weights stream from memory, each used once or twice; 8 rows
// are summed side by side, so each core reads 8 streams at once. fp32 from 3 rows is
// cpu_stored_gemv.cpp's tiled sgemm.
#include "kernels/cpu/cpu_stored_avx512.h"

#include <omp.h>

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
#include "kernels/cpu/cpu_stored_avx512_shared.h"

#include <cmath>
#include <cstdlib>

namespace palm {

namespace {

// ------------------------------------------------------------------ fp32, 1-2 input rows
// Each weight is read from memory and used once or twice, so what bounds the product is
// how much the memory delivers to each core. One row at a time (four FMA chains per input
// row, which had beaten the compiler's one-chain loop by 5-15%) is one stream per core, and
// on Ice Lake one stream per core reads ~22.5 GB/s where 8 streams per core read ~30 (the
// read probe, bench_generate.cpp): 8 rows side by side, one chain each, read the products
// of a batch-1 step 1.25-1.4x faster there (docs/PERFORMANCE.md).

// out[r * ROWS + i] = sum_k w_i[k] * X[r][k] for ROWS weight rows (w + i * stride) and R (1
// or 2) input rows; ROWS = 1 only for the last rows. PF > 0: each row's line PF bytes ahead
// is prefetched into L2 as a line is read (kStreamAhead).
template <int R, int ROWS, int PF = 0>
void dense_rows_few(const float* w, i64 K, i64 stride, const float* X, float* out) {
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
      if (PF) _mm_prefetch(reinterpret_cast<const char*>(w + i * stride + k) + PF, _MM_HINT_T1);
      const __m512 wv = _mm512_maskz_loadu_ps(m, w + i * stride + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][i] = _mm512_fmadd_ps(wv, x[r], acc[r][i]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) out[r * ROWS + i] = _mm512_reduce_add_ps(acc[r][i]);
}

// Spans of 8 x kSpanRows rows: stream i of a span reads its kSpanRows rows one after the
// other, which lie end to end in memory, so each of the 8 streams runs kSpanRows rows long
// before it jumps (16 KB at K = 1,024) where it had run one row (4 KB, a page) and all 8
// restarted at the next 8 rows. A step's fp32 products at batch 1, the two alternating in one
// process: 1.035-1.082x as fast (median 1.05x of ten runs; 1.02-1.07x at 2 or 8 rows per
// stream, 1.00-1.05x at 16 or 64; Zen 4, docs/PERFORMANCE.md). Every row's sum is the same.
constexpr i64 kSpanRows = 4;

// The work of one fp32 product at 1-2 input rows, in items any thread may take: the spans,
// then blocks of 8 rows side by side, then row by row.
struct DenseFew {
  const float* X;
  i64 b, K;
  const float* W;
  i64 N;
  float alpha, beta;
  float* C;
  i64 spans = N / (8 * kSpanRows), rest0 = spans * 8 * kSpanRows, blocks = (N - rest0) / 8;
  i64 rest_items() const { return blocks + (N - rest0) % 8; }

  void store(i64 n, i64 step, int rows, const float* dots) const {  // rows n, n + step, ...
    for (i64 r = 0; r < b; ++r)
      for (int i = 0; i < rows; ++i) {
        float& c = C[r * N + n + i * step];
        c = alpha * dots[r * rows + i] + (beta == 0.0f ? 0.0f : beta * c);
      }
  }
  void span(i64 sp) const {
    for (i64 j = 0; j < kSpanRows; ++j) {
      const i64 n = sp * 8 * kSpanRows + j;
      float dots[16];
      if (b == 2) dense_rows_few<2, 8, kStreamAhead>(W + n * K, K, kSpanRows * K, X, dots);
      else dense_rows_few<1, 8, kStreamAhead>(W + n * K, K, kSpanRows * K, X, dots);
      store(n, kSpanRows, 8, dots);
    }
  }
  void rest(i64 blk) const {
    const i64 n = rest0 + (blk < blocks ? blk * 8 : blocks * 8 + (blk - blocks));
    float dots[16];
    if (blk < blocks) {
      if (b == 2) dense_rows_few<2, 8>(W + n * K, K, K, X, dots);
      else dense_rows_few<1, 8>(W + n * K, K, K, X, dots);
      store(n, 1, 8, dots);
    } else {
      if (b == 2) dense_rows_few<2, 1>(W + n * K, K, K, X, dots);
      else dense_rows_few<1, 1>(W + n * K, K, K, X, dots);
      store(n, 1, 1, dots);
    }
  }
};

void dense_product_few(const float* X, i64 b, i64 K, const float* W, i64 N, float alpha, float beta, float* C) {
  const DenseFew work{X, b, K, W, N, alpha, beta, C};
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (i64 sp = 0; sp < work.spans; ++sp) work.span(sp);
#pragma omp for schedule(static)
    for (i64 blk = 0; blk < work.rest_items(); ++blk) work.rest(blk);
  }
}

// ------------------------------------------------------------------ fp32, 3-16 input rows
// The weights as stored (the model's own, row-major: prefill and training read them too).
// The input rows are transposed into one vector per k (lane m: input row m), so each weight
// is broadcast once against all of them: R weight rows at a time keep R sums of 16 lanes in
// registers, one vector load and R broadcast loads per R FMAs, and no sums across lanes.
// oneDNN's sgemm on tiles of 256 weight rows (cpu_stored_gemv.cpp, which packed each tile
// first) ran a batch-16 step's products at ~50% of the FMA rate on Zen 4; dots of 4 weight
// rows x 6 input rows with sums across lanes, slower still (docs/PERFORMANCE.md).
constexpr int kDenseRows = 6;
constexpr i64 kDenseMaxRows = 16;  // the lanes; more rows: cpu_stored_gemv.cpp's tiled sgemm

// acc[i] lane m = sum_k w_i[k] * xt[k * 16 + m] for R weight rows (w + i * K).
template <int R>
__attribute__((noinline)) void dense_bcast(const float* w, i64 K, const float* xt, __m512* out) {
  __m512 acc[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  i64 k = 0;
  for (; k + 16 <= K; k += 16) {  // (software prefetch of the rows 1-2 KB ahead: no change)
#pragma GCC unroll 16
    for (int d = 0; d < 16; ++d) {
      const __m512 x = _mm512_loadu_ps(xt + (k + d) * 16);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(w[i * K + k + d]), x, acc[i]);
    }
  }
  for (; k < K; ++k) {
    const __m512 x = _mm512_loadu_ps(xt + k * 16);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(w[i * K + k]), x, acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) out[i] = acc[i];
}

void dense_product_tiles(const float* X, i64 b, i64 K, const float* W, i64 N, float alpha, float beta, float* C) {
  thread_local std::vector<float> mine;  // xt[k * 16 + m] = X[m][k], 0 past b
  auto& xt = mine;
  if (xt.size() < std::size_t(K * 16)) xt.resize(std::size_t(K * 16));
  const i64 tiles = (N + kDenseRows - 1) / kDenseRows;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (i64 k = 0; k < K; ++k)
      for (i64 m = 0; m < 16; ++m) xt[std::size_t(k * 16 + m)] = m < b ? X[m * K + k] : 0.0f;
#pragma omp for schedule(static)
    for (i64 t = 0; t < tiles; ++t) {
      const i64 n0 = t * kDenseRows;
      const int R = int(std::min<i64>(kDenseRows, N - n0));
      __m512 acc[kDenseRows];
      if (R == kDenseRows) dense_bcast<kDenseRows>(W + n0 * K, K, xt.data(), acc);
      else
        for (int i = 0; i < R; ++i) dense_bcast<1>(W + (n0 + i) * K, K, xt.data(), acc + i);  // the last N % kDenseRows rows
      alignas(64) float lanes[16];
      for (int i = 0; i < R; ++i) {
        _mm512_store_ps(lanes, acc[i]);
        for (i64 m = 0; m < b; ++m) {
          float& c = C[m * N + n0 + i];
          c = alpha * lanes[m] + (beta == 0.0f ? 0.0f : beta * c);
        }
      }
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
// widenings. At 2 rows P = 4, at 1 row P = 8: that many streams per core. `ahead`: the next P
// panels, of which this pass prefetches panels pa .. pb - 1, a line per unit.
template <int MR, int P>
__attribute__((noinline)) void bf16_panels_sums(const std::uint16_t* p0, i64 K, const __m512i* tails,
                                                const PairRows& pr, i64 m0, const char* ahead, int pa, int pb,
                                                __m512* f) {
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
    const float* x = pr.x.data() + (j * pr.b + m0) * 2;
    // 4 units per loop body, not 16: 16 (~850 instructions at 8 rows) ran at 58-63 GFLOP/s on
    // one Ice Lake core in a loop from L1 where 2-8 ran at 83-108 (the front end, not the
    // FMAs, bound the long body); a batch-16 step's bf16 products 52-65 -> 48-52 ms there
#pragma GCC unroll 4
    for (int d = 0; d < 16; ++d) {
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) w[p] = _mm512_loadu_si512(p0 + p * 16 * K + (j + d) * 32);
      if (ahead)
        for (int p = pa; p < pb; ++p) _mm_prefetch(ahead + p * 32 * K + 64 * (j + d), _MM_HINT_T0);
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
  // prefetches per block made the products ~10% slower on Ice Lake (16-18 vs 18-20 ms).
  // Spread over all passes (from 9 rows: panel 0 in the first, panel 1 in the second): all
  // in the first pass read memory at the full rate then and not at all during the second,
  // so a batch-16 step's products took about the reads plus the FMAs (Ice Lake: 42-66 ->
  // 36-48 ms, six alternations)
  const char* ahead = n0 + 16 * P < N && pr.b > 2 ? reinterpret_cast<const char*>(W + (n0 + 16 * P) * K) : nullptr;
  const int passes = int((pr.b + 7) / 8);
  for (i64 m0 = 0; m0 < pr.b; m0 += 8) {
    const int pass = int(m0 / 8), pa = pass * P / passes, pb = (pass + 1) * P / passes;
    const int MR = int(std::min<i64>(8, pr.b - m0));
    __m512 f[8 * P];
    with_shape<8>(MR, true, [&](auto mr, auto) {
      if constexpr (P == 2 || (P == 4 && mr.value <= 2) || mr.value == 1)
        bf16_panels_sums<mr.value, P>(panels, K, tails, pr, m0, ahead, pa, pb, f);
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
    int8_product_avx512(X, b, K, static_cast<const std::int8_t*>(W), scales, N, alpha, beta, C);
    return true;
  }
  if (b <= 2 && format == WeightFormat::kF32) {
    dense_product_few(X, b, K, static_cast<const float*>(W), N, alpha, beta, C);
    return true;
  }
  if (b <= kDenseMaxRows && format == WeightFormat::kF32) {
    dense_product_tiles(X, b, K, static_cast<const float*>(W), N, alpha, beta, C);
    return true;
  }
#if defined(__AVX512BF16__)
  if (format == WeightFormat::kBF16 && b >= kBf16DotRows) {
    bf16_dot_product(X, b, K, static_cast<const std::uint16_t*>(W), N, alpha, beta, C);
    return true;
  }
#endif
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
      // four at 2 rows and eight at 1 (streams per core: a batch-1 step's products 20-25 ->
      // 18-20 ms on Ice Lake with two, 3-5% less with four; eight were slower with 16 units
      // per loop body, and with 4 read 86% of the read probe against four's 80%, medians of
      // 20 alternating steps); the last panels one at a time
      const i64 rows = b == 1 ? 16 * 8 : b <= 2 ? 16 * 4 : 16 * 2, many = N / rows * rows;
#pragma omp for schedule(static) nowait
      for (i64 n0 = 0; n0 < many; n0 += rows) {
        if (b == 1) bf16_panels<8>(Wb, K, N, n0, pr, alpha, beta, C);
        else if (b <= 2) bf16_panels<4>(Wb, K, N, n0, pr, alpha, beta, C);
        else bf16_panels<2>(Wb, K, N, n0, pr, alpha, beta, C);
      }
#pragma omp for schedule(static)
      for (i64 n0 = many; n0 < N; n0 += 16) bf16_panel(Wb, K, N, n0, pr, alpha, beta, C);
    }
    return true;
  }
  return false;
}

bool stored_row_beside(const float* x, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                       float alpha, float beta, float* C, const std::function<void()>& beside) {
  if (omp_get_max_threads() < 2 || !stored_avx512_available()) return false;
  if (format == WeightFormat::kInt8)
    return int8_row_beside(x, K, static_cast<const std::int8_t*>(W), scales, N, alpha, beta, C, beside);
  if (format == WeightFormat::kF32) {
    // spans of 32 rows (128 KB at K = 1,024), dealt as threads come free
    const DenseFew work{x, 1, K, static_cast<const float*>(W), N, alpha, beta, C};
    items_beside(
        beside, work.spans, [&](i64 sp) { work.span(sp); }, work.rest_items(), [&](i64 blk) { work.rest(blk); });
    return true;
  }
  if (format != WeightFormat::kBF16) return false;
#if defined(__AVX512BF16__)
  return bf16_dot_row_beside(x, K, static_cast<const std::uint16_t*>(W), N, alpha, beta, C, beside);
#else
  thread_local PairRows mine;
  PairRows& pr = mine;
  size_pairs(1, K, pr);
  pair_rows(x, K, 0, pr.pairs, pr);
  const auto* Wb = static_cast<const std::uint16_t*>(W);
  // groups of 4 panels (64 rows, 512 KB at K = 4,096), as int8's: small enough to even the
  // threads' ends
  constexpr i64 kRows = 16 * 4;
  const i64 many = N / kRows * kRows;
  items_beside(
      beside, many / kRows, [&](i64 i) { bf16_panels<4>(Wb, K, N, i * kRows, pr, alpha, beta, C); },
      (N - many + 15) / 16, [&](i64 i) { bf16_panel(Wb, K, N, many + 16 * i, pr, alpha, beta, C); });
  return true;
#endif
}

}  // namespace palm

#else

namespace palm {
bool stored_avx512_available() { return false; }
bool stored_product_avx512(const float*, i64, i64, const void*, WeightFormat, const float*, i64, float, float, float*) {
  return false;
}
bool stored_row_beside(const float*, i64, const void*, WeightFormat, const float*, i64, float, float, float*,
                       const std::function<void()>&) {
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
