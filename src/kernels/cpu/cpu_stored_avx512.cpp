// Decode products against int8 weights on AVX-512 VNNI, and against bf16 weights for
// three or more input rows on AVX512_BF16.
//
// int8: vpdpbusd multiplies unsigned by signed bytes into int32 sums, 64 per instruction,
// so the arithmetic per weight byte stays below what the memory delivers (the widening to
// fp32 before reached 61-63% of the bandwidth floor at batch 1). The activations are
// quantized per token in groups (cpu_stored_avx512.h: a scale per group, max |x| / 127,
// round to nearest even), as llama.cpp's q8_0 path quantizes in blocks; the weights'
// signed bytes are made unsigned by adding 128 (xor 0x80), and 128 * sum(q * scale) is
// subtracted once per input row. A group is the values one int32 lane of vpdpbusd sums
// (k % 64 / 4 within a segment), so a lane's sum over a segment needs one scale, applied
// once. From 3 input rows on, a tile of 4 weight rows meets 4 input rows: 8 loads per 16
// vpdpbusd, where one weight row against 8 input rows needed 18 (these cores load one
// 64-byte vector per cycle or so: in cache, 4 x 4 ran ~2x the vpdpbusd per ns of 1 x 8).
// At batch 1 and 2 each weight row is used alone from registers, in short chains.
//
// bf16, 3+ input rows: vdpbf16ps multiplies pairs of bf16 into fp32 sums, 32 products per
// instruction, on the weights as stored. Each activation is split into two bf16, hi =
// bf16(x) and lo = bf16(x - hi), and both are multiplied: hi + lo carries 16 significant
// bits: hi + lo is within 2^-18 |x| of x, so each term is off by at most 2^-18 |x| |w|,
// where rounding x to one bf16 would cost 2^-9 (the weights' own rounding). A tile of 8 weight
// rows meets 2 input rows at a time (16 sums in registers).
//
// fp32 and bf16, 1-2 input rows: the weights stream from memory, each used once or twice;
// a row is widened to fp32 (exact for bf16) and summed in four FMA chains per input row,
// so the core keeps more reads in flight than the compiler's one-chain loop did (a
// vdpbf16ps kernel at batch 1 measured no faster than widening, docs/PERFORMANCE.md).
#include "kernels/cpu/cpu_stored_avx512.h"

#include "kernels/cpu/bf16.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
// GCC 12's _mm512_reduce_add_ps starts from an undefined vector it then overwrites
// wholly: a false "may be used uninitialized" in every caller
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace palm {

namespace {

inline __mmask64 tail_mask64(i64 n) { return n >= 64 ? ~__mmask64(0) : n <= 0 ? 0 : (__mmask64(1) << n) - 1; }

// ------------------------------------------------------------------ int8
struct QuantRows {
  i64 Kp = 0, segments = 0;
  std::vector<std::int8_t> q;   // [b, Kp], zero past K
  std::vector<float> scale;     // [b, segments, kQuantGroups]
  std::vector<float> offset;    // [b]: 128 * sum over k of scale(k) * q_k
};

void size_rows(i64 b, i64 K, QuantRows& qr) {
  qr.Kp = (K + 63) / 64 * 64;
  qr.segments = (K + kQuantSegment - 1) / kQuantSegment;
  qr.q.assign(std::size_t(b * qr.Kp), 0);
  qr.scale.assign(std::size_t(b * qr.segments * kQuantGroups), 0.0f);
  qr.offset.assign(std::size_t(b), 0.0f);
}

inline __mmask16 tail_mask16(i64 n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// Row i of X into qr (sized by size_rows). Vectorized; the same arithmetic as the scalar
// definition: a group's amax ignores NaN as std::max does, q = nearbyint(x * (127 / amax))
// (the default rounding, to nearest even) clamped to +-127. The 16 floats at j (j % 16 == 0)
// of a segment hold groups 4 (j % 64 / 16) .. +3, four lanes each, so four vectors of
// maxima and of inverse scales cover a segment.
void quantize_row(const float* X, i64 i, i64 K, QuantRows& qr) {
  static_assert(kQuantGroups == 16, "a group per int32 lane of a 64-byte vector");
  const float* x = X + i * K;
  std::int8_t* q = qr.q.data() + i * qr.Kp;
  double offset = 0;
  for (i64 seg = 0; seg < qr.segments; ++seg) {
    const i64 k0 = seg * kQuantSegment, n = std::min(K - k0, kQuantSegment);
    __m512 vmax[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (i64 j = 0; j < n; j += 16)  // max(|x|, m) keeps m where |x| is NaN
      vmax[j / 16 % 4] = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask16(n - j), x + k0 + j)), vmax[j / 16 % 4]);
    alignas(64) float m[64], inv[64];
    for (int v = 0; v < 4; ++v) _mm512_store_ps(m + 16 * v, vmax[v]);
    float* scale = qr.scale.data() + (i * qr.segments + seg) * kQuantGroups;
    for (int g = 0; g < 16; ++g) {  // group g: m[4g .. 4g + 3]
      const float amax = std::max(std::max(m[4 * g], m[4 * g + 1]), std::max(m[4 * g + 2], m[4 * g + 3]));
      scale[g] = amax / 127.0f;
      for (int u = 0; u < 4; ++u) inv[4 * g + u] = amax > 0.0f ? 127.0f / amax : 0.0f;
    }
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512i vsum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    for (i64 j = 0; j < n; j += 16) {
      const __mmask16 mk = tail_mask16(n - j);
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + k0 + j), _mm512_load_ps(inv + j % 64)));
      v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
      _mm512_mask_cvtepi32_storeu_epi8(q + k0 + j, mk, v);
      vsum[j / 16 % 4] = _mm512_add_epi32(vsum[j / 16 % 4], v);  // the masked-off lanes are 0
    }
    alignas(64) std::int32_t sum[64];
    for (int v = 0; v < 4; ++v) _mm512_store_si512(sum + 16 * v, vsum[v]);
    for (int t = 0; t < 64; ++t) offset += 128.0 * double(scale[t / 4]) * double(sum[t]);
  }
  qr.offset[std::size_t(i)] = float(offset);
}

// d[n * MR + m] = the int32 sums over k0 <= k < k1 of (w[n]_k + 128) q[m]_k, lane by lane,
// for NR weight rows (stride K) and MR input rows (stride Kp). Each 64-byte load meets
// several others in registers: an NR x MR tile needs NR + MR loads per NR * MR vpdpbusd,
// where one weight row against 8 input rows needed 18 per 16 (in cache, 4 x 4 ran ~2x the
// vpdpbusd per ns of 1 x 8: the loads were the bound). Not inlined: in its callers' loops
// GCC 12 copied the 16 sums between registers on every step.
template <int NR, int MR>
__attribute__((noinline)) void int8_sums(const std::int8_t* w, i64 K, i64 k0, i64 k1, const std::int8_t* q, i64 Kp,
                                         const std::int8_t* ahead, __m512i* d) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  __m512i acc[NR][MR];
#pragma GCC unroll 4
  for (int n = 0; n < NR; ++n)
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) acc[n][m] = _mm512_setzero_si512();
  for (i64 k = k0; k < k1; k += 64) {
    // past K the weights load as 0 (128 after the flip), against activations padded with 0
    const __mmask64 mask = tail_mask64(K - k);
    __m512i wv[NR];
#pragma GCC unroll 4
    for (int n = 0; n < NR; ++n) wv[n] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, w + n * K + k), flip);
    if (ahead) {  // the next tile (NR rows, NR * K contiguous bytes), front to back while
                  // this one is used: at batch 3-8, fetching its rows side by side as the
                  // loads here do measured ~1.2x slower. Non-temporal (into L1, not kept
                  // in L2): batch 16 11.0 -> 10.5 ms per step, batch 4 6.2 -> 5.4 ms.
#pragma GCC unroll 4
      for (int n = 0; n < NR; ++n) _mm_prefetch(reinterpret_cast<const char*>(ahead + NR * k + n * 64), _MM_HINT_NTA);
    }
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
      __m512i x = _mm512_loadu_si512(q + m * Kp + k);
      asm("" : "+v"(x));  // one load in a register: GCC otherwise folds it into each vpdpbusd
#pragma GCC unroll 4
      for (int n = 0; n < NR; ++n) acc[n][m] = _mm512_dpbusd_epi32(acc[n][m], wv[n], x);
    }
  }
#pragma GCC unroll 4
  for (int n = 0; n < NR; ++n)
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) d[n * MR + m] = acc[n][m];
}

// out[i] = the sum of v[i]'s 16 lanes, for 16 vectors: a tree of shuffles and adds, 46
// instructions where 16 separate reductions take ~160 (at K = 1024 a 4 x 4 tile has 256
// vpdpbusd).
void sum_lanes16(const __m512* v, float* out) {
  __m512 u[8], t[4];
  for (int i = 0; i < 8; ++i)  // 128-bit lanes 0-1: v[2i]'s halves added, 2-3: v[2i+1]'s
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44), _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)  // 128-bit lane L: v[4i + L]'s quarters added
    t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88), _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xDD));
  const __m512 p0 = _mm512_add_ps(_mm512_unpacklo_ps(t[0], t[1]), _mm512_unpackhi_ps(t[0], t[1]));
  const __m512 p1 = _mm512_add_ps(_mm512_unpacklo_ps(t[2], t[3]), _mm512_unpackhi_ps(t[2], t[3]));
  // lane 4L + j: the sum of v[4j + L]
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(p0, p1, 0x44), _mm512_shuffle_ps(p0, p1, 0xEE));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, s));
}

constexpr int kInt8TileRows = 4, kInt8TileInputs = 4;

// dots[n * MR + m] = sum_k w[n]_k x[m0 + m]_k as quantized (the offset subtracted), for NR
// weight rows from w and MR input rows from m0.
template <int NR, int MR>
void int8_tile(const std::int8_t* w, i64 K, const QuantRows& qr, i64 m0, const std::int8_t* ahead, float* dots) {
  const i64 per_row = qr.segments * kQuantGroups;
  __m512 acc[16];
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (i64 seg = 0; seg < qr.segments; ++seg) {
    __m512i d[NR * MR];
    int8_sums<NR, MR>(w, K, seg * kQuantSegment, std::min(K, (seg + 1) * kQuantSegment), qr.q.data() + m0 * qr.Kp, qr.Kp,
                      ahead, d);
    const float* s = qr.scale.data() + m0 * per_row + seg * kQuantGroups;
#pragma GCC unroll 16
    for (int i = 0; i < NR * MR; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[i]), _mm512_loadu_ps(s + (i % MR) * per_row), acc[i]);
  }
  float sums[16];
  sum_lanes16(acc, sums);
  for (int i = 0; i < NR * MR; ++i) dots[i] = sums[i] - qr.offset[std::size_t(m0 + i % MR)];
}

// out[r] = the same dots for one weight row and R (1 or 2) input rows from r0. At batch 1
// and 2 the weights stream from memory, and reading one row at a time front to back beat
// the 4-row tiles (batch 1: 4.2 vs 4.7 ms per bench-medium step): per 128 values two
// vpdpbusd from zero, converted and added into two alternating float sums per row with
// the lanes' scales.
template <int R>
void int8_rows_few(const std::int8_t* w, i64 K, const QuantRows& qr, i64 r0, float* out, const std::int8_t* next) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const std::int8_t* q = qr.q.data() + r0 * qr.Kp;
  const i64 Kp = qr.Kp, per_row = qr.segments * kQuantGroups;
  const float* scale = qr.scale.data() + r0 * per_row;
  __m512 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  // the weight tail is loaded as 0 (then 128 after the flip) against activations padded with 0
  auto load = [&](i64 k) {
    const __m512i wv = k + 64 <= K ? _mm512_loadu_si512(w + k) : _mm512_maskz_loadu_epi8(tail_mask64(K - k), w + k);
    return _mm512_xor_si512(wv, flip);
  };
  static_assert(kQuantSegment % 128 == 0, "a block of 128 lies in one segment");
  __m512 acc2[R];  // a second float chain per row (odd blocks)
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc2[r] = _mm512_setzero_ps();
  auto block = [&](i64 k, __m512* sums) {
    const __m512i w0 = load(k);
    if (next) {  // rows ahead, fetched while this row is used from registers
      _mm_prefetch(reinterpret_cast<const char*>(next + k), _MM_HINT_NTA);
      _mm_prefetch(reinterpret_cast<const char*>(next + k + 64), _MM_HINT_NTA);
    }
    const bool two = k + 64 < K;  // the block's second vector holds weights
    const __m512i w1 = two ? load(k + 64) : _mm512_setzero_si512();
    const float* s = scale + k / kQuantSegment * kQuantGroups;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, _mm512_loadu_si512(q + r * Kp + k));
      if (two) d0 = _mm512_dpbusd_epi32(d0, w1, _mm512_loadu_si512(q + r * Kp + k + 64));
      sums[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_loadu_ps(s + r * per_row), sums[r]);
    }
  };
  for (i64 k = 0; k < K; k += 256) {
    block(k, acc);
    if (k + 128 < K) block(k + 128, acc2);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm512_add_ps(acc[r], acc2[r]);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(acc[r]) - qr.offset[std::size_t(r0 + r)];
}

// C[:, n0 .. n0 + NR - 1] for every input row, in tiles of up to kInt8TileInputs rows.
template <int NR>
void int8_rows(const std::int8_t* w, i64 K, const QuantRows& qr, i64 b, i64 n0, i64 N, const std::int8_t* ahead,
               const float* scales, float alpha, float beta, float* C) {
  float dots[16];
  for (i64 m0 = 0; m0 < b; m0 += kInt8TileInputs) {
    const int MR = int(std::min<i64>(kInt8TileInputs, b - m0));
    const std::int8_t* pf = m0 == 0 ? ahead : nullptr;  // the next tile, during the first pass
    switch (MR) {
      case 1: int8_tile<NR, 1>(w, K, qr, m0, pf, dots); break;
      case 2: int8_tile<NR, 2>(w, K, qr, m0, pf, dots); break;
      case 3: int8_tile<NR, 3>(w, K, qr, m0, pf, dots); break;
      default: int8_tile<NR, kInt8TileInputs>(w, K, qr, m0, pf, dots); break;
    }
    for (int n = 0; n < NR; ++n)
      for (int m = 0; m < MR; ++m) {
        float& c = C[(m0 + m) * N + n0 + n];
        c = alpha * scales[n0 + n] * dots[n * MR + m] + (beta == 0.0f ? 0.0f : beta * c);
      }
  }
}

// ------------------------------------------------------------------ fp32 and bf16, 1-2 input rows
// Each weight is read from memory and used once or twice, so what bounds the product is
// how many reads the core keeps in flight. The compiler's loop (one omp simd sum per row)
// kept one FMA chain, whose latency filled the core's window ahead of the later loads:
// four chains per row measured 5-15% more bytes/s at batch 1 in fp32 and bf16, paired
// with the read probe (docs/PERFORMANCE.md). bf16 is widened exactly (its 16 bits become
// the top of an fp32), so the sums differ from the fp32 path's only in their order.
inline __m512 widen16(const float* w) { return _mm512_loadu_ps(w); }
inline __m512 widen16(const std::uint16_t* w) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))), 16));
}
inline __m512 widen16(const float* w, __mmask16 m) { return _mm512_maskz_loadu_ps(m, w); }
inline __m512 widen16(const std::uint16_t* w, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w)), 16));
}

// out[r] = sum_k w[k] * X[r][k] for one weight row and R (1 or 2) input rows.
template <int R, typename T>
void dense_rows_few(const T* w, i64 K, const float* X, float* out) {
  __m512 acc[R][4];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  i64 k = 0;
  for (; k + 64 <= K; k += 64) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512 wv = widen16(w + k + 16 * j);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(X + r * K + k + 16 * j), acc[r][j]);
    }
  }
  for (; k < K; k += 16) {
    const __mmask16 m = tail_mask16(K - k);
    const __m512 wv = widen16(w + k, m);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, X + r * K + k), acc[r][0]);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    out[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_add_ps(acc[r][2], acc[r][3])));
}

template <typename T>
void dense_product_few(const float* X, i64 b, i64 K, const T* W, i64 N, float alpha, float beta, float* C) {
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) {
    float dots[2];
    if (b == 2) dense_rows_few<2>(W + n * K, K, X, dots);
    else dense_rows_few<1>(W + n * K, K, X, dots);
    for (i64 r = 0; r < b; ++r) {
      float& c = C[r * N + n];
      c = alpha * dots[r] + (beta == 0.0f ? 0.0f : beta * c);
    }
  }
}

// ------------------------------------------------------------------ bf16
#if defined(__AVX512BF16__)
// Activations as bf16 halves: [2][b][Kp] (hi, then lo), K padded with zeros to Kp.
struct SplitRows {
  i64 Kp = 0;
  std::vector<std::uint16_t> h;
};

void split_rows(const float* X, i64 b, i64 K, SplitRows& sr) {
  sr.Kp = (K + 31) / 32 * 32;
  sr.h.assign(std::size_t(2 * b * sr.Kp), 0);
  std::uint16_t* hi = sr.h.data();
  std::uint16_t* lo = hi + b * sr.Kp;
  for (i64 i = 0; i < b; ++i) {
    const float* x = X + i * K;
#pragma omp simd
    for (i64 k = 0; k < K; ++k) {
      const std::uint16_t h = to_bf16(x[k]);
      hi[i * sr.Kp + k] = h;
      lo[i * sr.Kp + k] = to_bf16(x[k] - bf16_to_f32(h));
    }
  }
}

inline __mmask32 tail_mask32(i64 n) { return n >= 32 ? ~__mmask32(0) : (__mmask32(1) << n) - 1; }

// out[n * RM + m] = sum_k w[n][k] * (hi + lo)[m0 + m][k] for RN weight rows, RM input rows.
template <int RN, int RM>
void bf16_tile(const std::uint16_t* w, i64 K, const SplitRows& sr, i64 b, i64 m0, float* out, const std::uint16_t* next) {
  const std::uint16_t* hi = sr.h.data() + m0 * sr.Kp;
  const std::uint16_t* lo = hi + b * sr.Kp;
  __m512 acc[RN][RM];
#pragma GCC unroll 8
  for (int n = 0; n < RN; ++n)
#pragma GCC unroll 8
    for (int m = 0; m < RM; ++m) acc[n][m] = _mm512_setzero_ps();
  for (i64 k = 0; k < K; k += 32) {
    const __mmask32 mask = tail_mask32(K - k);  // the weights' tail is read as 0
    __m512bh wv[RN];
#pragma GCC unroll 8
    for (int n = 0; n < RN; ++n) wv[n] = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + n * K + k);
    if (next) {  // the next tile, so its first pass does not wait on memory (batch 16: ~1.35x)
#pragma GCC unroll 8
      for (int n = 0; n < RN; ++n) _mm_prefetch(reinterpret_cast<const char*>(next + n * K + k), _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (int m = 0; m < RM; ++m) {
      const __m512bh xh = (__m512bh)_mm512_loadu_si512(hi + m * sr.Kp + k);
      const __m512bh xl = (__m512bh)_mm512_loadu_si512(lo + m * sr.Kp + k);
#pragma GCC unroll 8
      for (int n = 0; n < RN; ++n) acc[n][m] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[n][m], wv[n], xh), wv[n], xl);
    }
  }
#pragma GCC unroll 8
  for (int n = 0; n < RN; ++n)
#pragma GCC unroll 8
    for (int m = 0; m < RM; ++m) out[n * RM + m] = _mm512_reduce_add_ps(acc[n][m]);
}

constexpr int kBf16TileRows = 8, kBf16TileInputs = 2;

template <int RN>
void bf16_rows(const std::uint16_t* W, i64 K, const SplitRows& sr, i64 b, i64 n0, i64 N, float alpha, float beta,
               float* C) {
  float dots[RN * kBf16TileInputs];
  for (i64 m0 = 0; m0 < b; m0 += kBf16TileInputs) {
    const int RM = int(std::min<i64>(kBf16TileInputs, b - m0));
    if (RM == kBf16TileInputs) {
      bf16_tile<RN, kBf16TileInputs>(W + n0 * K, K, sr, b, m0, dots, m0 == 0 && n0 + 2 * RN <= N ? W + (n0 + RN) * K : nullptr);
    } else {
      bf16_tile<RN, 1>(W + n0 * K, K, sr, b, m0, dots, nullptr);
    }
    for (int n = 0; n < RN; ++n)
      for (int m = 0; m < RM; ++m) {
        float& c = C[(m0 + m) * N + n0 + n];
        c = alpha * dots[n * RM + m] + (beta == 0.0f ? 0.0f : beta * c);
      }
  }
}

#endif  // __AVX512BF16__

}  // namespace

bool stored_avx512_available() {
  static const bool on = std::getenv("PALM_NO_AVX512_DOT") == nullptr;  // the A/B switch of docs/PERFORMANCE.md
  return on;
}

bool stored_product_avx512(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                           float alpha, float beta, float* C) {
  if (format == WeightFormat::kInt8) {
    QuantRows qr;
    size_rows(b, K, qr);
    const auto* Wq = static_cast<const std::int8_t*>(W);
    const i64 full = N / kInt8TileRows * kInt8TileRows;
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (i64 i = 0; i < b; ++i) quantize_row(X, i, K, qr);
      // (the loop's barrier: every row is quantized before any product)
      if (b <= 2) {  // the weights stream from memory: one row at a time, short chains
#pragma omp for schedule(static)
        for (i64 n = 0; n < N; ++n) {
          float dots[2];
          const std::int8_t* next = n + 4 < N ? Wq + (n + 4) * K : nullptr;
          if (b == 2) int8_rows_few<2>(Wq + n * K, K, qr, 0, dots, next);
          else int8_rows_few<1>(Wq + n * K, K, qr, 0, dots, next);
          for (i64 r = 0; r < b; ++r) {
            float& c = C[r * N + n];
            c = alpha * scales[n] * dots[r] + (beta == 0.0f ? 0.0f : beta * c);
          }
        }
      } else {
#pragma omp for schedule(static)
        for (i64 n0 = 0; n0 < N; n0 += kInt8TileRows) {
          if (n0 < full) {
            const std::int8_t* ahead = n0 + 2 * kInt8TileRows <= N ? Wq + (n0 + kInt8TileRows) * K : nullptr;
            int8_rows<kInt8TileRows>(Wq + n0 * K, K, qr, b, n0, N, ahead, scales, alpha, beta, C);
          } else {
            for (i64 n = n0; n < N; ++n) int8_rows<1>(Wq + n * K, K, qr, b, n, N, nullptr, scales, alpha, beta, C);
          }
        }
      }
    }
    return true;
  }
  if (b <= 2 && format == WeightFormat::kF32) {
    dense_product_few(X, b, K, static_cast<const float*>(W), N, alpha, beta, C);
    return true;
  }
  if (b <= 2 && format == WeightFormat::kBF16) {
    dense_product_few(X, b, K, static_cast<const std::uint16_t*>(W), N, alpha, beta, C);
    return true;
  }
#if defined(__AVX512BF16__)
  if (format == WeightFormat::kBF16 && b >= 3) {
    thread_local SplitRows mine;  // reused between calls; the workers read the caller's
    const SplitRows& sr = mine;
    split_rows(X, b, K, mine);
    const auto* Wb = static_cast<const std::uint16_t*>(W);
    const i64 full = N / kBf16TileRows * kBf16TileRows;
#pragma omp parallel for schedule(static)
    for (i64 n0 = 0; n0 < N; n0 += kBf16TileRows) {
      if (n0 < full) {
        bf16_rows<kBf16TileRows>(Wb, K, sr, b, n0, N, alpha, beta, C);
      } else {
        for (i64 n = n0; n < N; ++n) bf16_rows<1>(Wb, K, sr, b, n, N, alpha, beta, C);
      }
    }
    return true;
  }
#endif
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
