// Decode attention: one new query position per sequence against its KV cache (fp32 or
// bf16 rows), with the 16 heads of a group in the lanes of a vector (decode_heads16) or,
// for other shapes, as two products. Batch 1 splits a sequence's positions between the
// threads; attention_decode_beside runs a batch-1 attention beside a product.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <omp.h>
#if defined(__AVX512F__)
// GCC 12's AVX-512 intrinsics start from an undefined vector they then overwrite wholly:
// a false "may be used uninitialized" in every caller (as in cpu_stored_avx512.cpp)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#endif

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_stored_avx512.h"
#include "kernels/cpu/fast_math.h"

namespace palm {
namespace {

#if defined(__AVX512F__)
// r[i] <- column i of the 16 x 16 matrix whose rows are r[0..15]
inline void transpose16(__m512* r) {
  __m512i t[16], u[16], x[16];
  for (int i = 0; i < 16; ++i) x[i] = _mm512_castps_si512(r[i]);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int e = 0; e < 4; ++e) {  // u[4i + e] lane L: element 4L + e of rows 4i .. 4i + 3
    const __m512i v0 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x44), v1 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x44), v3 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xEE);
    r[e] = _mm512_castsi512_ps(_mm512_shuffle_i32x4(v0, v2, 0x88));
    r[4 + e] = _mm512_castsi512_ps(_mm512_shuffle_i32x4(v0, v2, 0xDD));
    r[8 + e] = _mm512_castsi512_ps(_mm512_shuffle_i32x4(v1, v3, 0x88));
    r[12 + e] = _mm512_castsi512_ps(_mm512_shuffle_i32x4(v1, v3, 0xDD));
  }
}

// Scores of N positions (rows k0, k0 + ld, ...) for 16 heads: s[u] lane h = q_h . k_u, with
// qT [K][16] the scaled queries transposed. `ahead`: rows to fetch into L2 (N * ld / 16
// lines), spread over the loop, a line or two per d: Ice Lake stalled on a burst of 64
// prefetches per block, which exhausted its fill buffers.
template <int N>
inline void scores16(const float* qT, i64 K, const float* k0, i64 ld, const char* ahead, __m512* s) {
  const i64 lines = ahead ? N * ld / 16 : 0, per = (lines + K - 1) / K;  // lines per d
#pragma GCC unroll 16
  for (int u = 0; u < N; ++u) s[u] = _mm512_setzero_ps();
  for (i64 d = 0; d < K; ++d) {  // N chains, one load of q per N FMAs
    for (i64 l = d * per; l < std::min(lines, (d + 1) * per); ++l) _mm_prefetch(ahead + 64 * l, _MM_HINT_T1);
    const __m512 qd = _mm512_loadu_ps(qT + d * 16);
#pragma GCC unroll 16
    for (int u = 0; u < N; ++u) s[u] = _mm512_fmadd_ps(qd, _mm512_set1_ps(k0[u * ld + d]), s[u]);
  }
}

// fast_exp (fast_math.h) on 16 lanes, step by step the same: omp simd over a row of 16
// compiled it as two masked 8-lane halves (GCC's 256-bit preference on Ice Lake)
inline __m512 exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f), big = _mm512_set1_ps(12582912.0f);
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), lo);
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), big), big);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  for (const float c : {1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  const __m512 e = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GT_OQ), e);  // 0 at and below -87
}

// Dimensions c0 .. c0 + 16 C - 1 of acc [16][K] (head h's output so far in row h) += sum
// over N positions of p[u][h] (their weights) times value row u (v0 + u * ld): four heads
// by C vectors of dimensions per tile, so each broadcast weight serves C FMAs and each
// loaded value vector four. Value elements broadcast one per FMA (the heads in the lanes)
// bounded this at ~1 FMA per cycle on Ice Lake, where FMAs on registers run ~1.8.
template <int N, int C>
inline void accumulate_tile(const float* p, const float* v0, i64 ld, i64 K, i64 c0, float* acc) {
  for (int h0 = 0; h0 < 16; h0 += 4) {
    __m512 a[4][C];
#pragma GCC unroll 4
    for (int h = 0; h < 4; ++h)
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) a[h][c] = _mm512_load_ps(acc + (h0 + h) * K + c0 + 16 * c);
    const float* vu = v0 + c0;
    // a loop over the positions, not unrolled: unrolled, the eight rows' addresses spilled
    for (int u = 0; u < N; ++u, vu += ld) {
      __m512 v[C];
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        // in a register: GCC folded the load into each of the four heads' FMAs (four loads
        // of every value vector: a bench-medium batch-16 step's attention ran at ~62% of the
        // FMA rate on Zen 4 in cache, ~85% without). The barrier on a scalar, not on v[c]:
        // that kept the array on the stack, with a dead store of each vector.
        __m512 loaded = _mm512_loadu_ps(vu + 16 * c);
        __asm__("" : "+v"(loaded));
        v[c] = loaded;
      }
#pragma GCC unroll 4
      for (int h = 0; h < 4; ++h) {
        const __m512 w = _mm512_set1_ps(p[u * 16 + h0 + h]);
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) a[h][c] = _mm512_fmadd_ps(w, v[c], a[h][c]);
      }
    }
#pragma GCC unroll 4
    for (int h = 0; h < 4; ++h)
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) _mm512_store_ps(acc + (h0 + h) * K + c0 + 16 * c, a[h][c]);
  }
}

// acc [16][K] += the N positions' weights p [N][16] times their value rows, 64 dimensions at
// a time (K % 16 == 0).
template <int N>
inline void accumulate16(const float* p, const float* v0, i64 ld, i64 K, float* acc) {
  i64 c0 = 0;
  for (; c0 + 64 <= K; c0 += 64) accumulate_tile<N, 4>(p, v0, ld, K, c0, acc);
  switch ((K - c0) / 16) {
    case 3: accumulate_tile<N, 3>(p, v0, ld, K, c0, acc); break;
    case 2: accumulate_tile<N, 2>(p, v0, ld, K, c0, acc); break;
    case 1: accumulate_tile<N, 1>(p, v0, ld, K, c0, acc); break;
    default: break;
  }
}

// Decode attention of 16 heads (q [16, K], K % 16 == 0) over positions 0 .. len-1 of one
// sequence (k at kv + t * ld, v at kv + K + t * ld), with the heads in the 16 lanes of a
// vector: the scores of a position for all heads are one vector (q transposed once, each
// key value broadcast), and the output [16][K] sums each weight (broadcast) against value
// vectors (accumulate_tile): no sums across lanes. One pass, kBlock positions at a time (the
// online softmax): a block's scores, its weights against the running maxima (the sums and
// the output so far scaled down where a lane's maximum rose), then its values, still in L1,
// into the output. The oneDNN products this replaces ([16, K] x [K, len], then [16, len] x
// [len, K]) ran a bench-medium batch-16 step's attention at 544 positions in 3.7-4.6 ms on
// Zen 5, a first kernel of this kind in two passes (all scores, then all values back from
// L2) in 2.1-2.3; on Ice Lake the two passes took 6.7-7.1 ms and this one 5.6-5.9 in blocks
// of 8 (docs/PERFORMANCE.md). Blocks of 16 halve the loads and stores of the output per
// position (accumulate_tile keeps a tile in registers over a block).
// With max and sum: o is left unnormalized and the lanes' maxima and sums are stored (the
// caller merges the parts of a split sequence); otherwise o is normalized.
void decode_heads16(const float* q, i64 K, const float* kv, i64 ld, i64 len, float scale, float* o, float* max,
                    float* sum, std::vector<float>& scratch) {
  if (scratch.size() < std::size_t(K * 32 + 16)) scratch.resize(std::size_t(K * 32 + 16));
  float* qT = scratch.data();  // [K][16]: dimension d of the 16 heads
  float* acc = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(qT + K * 16) + 63) & ~std::uintptr_t(63));
  for (i64 c = 0; c < K; c += 16) {
    __m512 r[16];
    for (int h = 0; h < 16; ++h) r[h] = _mm512_mul_ps(_mm512_loadu_ps(q + h * K + c), _mm512_set1_ps(scale));
    transpose16(r);
    for (int d = 0; d < 16; ++d) _mm512_storeu_ps(qT + (c + d) * 16, r[d]);
  }
  std::fill(acc, acc + K * 16, 0.0f);
  constexpr float kSlack = 8.0f;  // e^8 ~ 3,000
  constexpr int kBlock = 16;      // positions per block: 16 score chains, 16 value rows per tile
  // Rows fetched into L2 this many positions ahead. They had been fetched into L1 one block
  // ahead, which kept too few lines in flight per core to stream the cache from memory: a
  // bench-medium batch-16 step's attention at 544 positions (53 MB of cache) took 6.5-7.5 ms
  // from memory against ~3 in cache; two blocks ahead into L2, 3.9-5.0 (six alternations on
  // Zen 4; four blocks ahead, or L1 one block ahead as well, the same). Once the first
  // block was fetched too (below), one block ahead into L2 beat two: 1.03-1.05x at 544
  // positions, 1.04x at 160, batch 1 1.045x; half a block 0.81x, four blocks 0.95-0.97x
  // (Zen 4, session 22).
  constexpr i64 kAhead = kBlock;
  // The first kAhead positions, which no block before them fetches, into L2 at once: every
  // sequence (or part) started cold, its first blocks waiting on their lines a few at a
  // time. A bench-medium batch-16 step's attention from memory (12 layers, 16 sequences,
  // the two versions alternating, Zen 4; two blocks ahead then): 1.04-1.05x as fast at 544
  // positions, 1.09x at 160; batch 1 at 544 1.05x. Into L1 (T0): 1.01x.
  const char* first = reinterpret_cast<const char*>(kv);
  for (i64 l = 0; l < std::min(len, kAhead) * ld / 16; ++l) _mm_prefetch(first + 64 * l, _MM_HINT_T1);
  alignas(64) float p[kBlock][16];
  __m512 m = _mm512_set1_ps(-INFINITY), total = _mm512_setzero_ps();
  for (i64 t = 0; t < len; t += kBlock) {
    const int n = int(std::min<i64>(kBlock, len - t));
    const float* k0 = kv + t * ld;
    __m512 s[kBlock];
    if (n == kBlock) {
      scores16<kBlock>(qT, K, k0, ld, t + kAhead + kBlock <= len ? reinterpret_cast<const char*>(k0 + kAhead * ld) : nullptr, s);
    } else {
      for (int u = 0; u < n; ++u) scores16<1>(qT, K, k0 + u * ld, ld, nullptr, s + u);
    }
    __m512 top = m;
    for (int u = 0; u < n; ++u) top = _mm512_max_ps(top, s[u]);
    // The reference maxima m move only where a score passes them by more than kSlack (and at
    // the first block): the weights exp(s - m) are then at most e^kSlack, far from fp32's
    // range, and what was summed is scaled down once or twice per sequence instead of at
    // most blocks (at every rise, 64 loads, multiplies and stores: ~200 of ~870 ns per block
    // at 64 positions on Ice Lake). The result is the same softmax, only rounded apart.
    if (_mm512_cmp_ps_mask(top, _mm512_add_ps(m, _mm512_set1_ps(kSlack)), _CMP_GT_OQ)) {
      const __m512 corr = exp16(_mm512_sub_ps(m, top));  // 0 at the first block (-inf)
      total = _mm512_mul_ps(total, corr);
      alignas(64) float c[16];
      _mm512_store_ps(c, corr);
      for (int h = 0; h < 16; ++h) {
        const __m512 cv = _mm512_set1_ps(c[h]);
        for (i64 d = 0; d < K; d += 16) _mm512_store_ps(acc + h * K + d, _mm512_mul_ps(_mm512_load_ps(acc + h * K + d), cv));
      }
      m = top;
    }
    for (int u = 0; u < n; ++u) {
      const __m512 e = exp16(_mm512_sub_ps(s[u], m));
      _mm512_store_ps(p[u], e);
      total = _mm512_add_ps(total, e);
    }
    if (n == kBlock) {
      accumulate16<kBlock>(p[0], kv + K + t * ld, ld, K, acc);
    } else {
      for (int u = 0; u < n; ++u) accumulate16<1>(p[u], kv + K + (t + u) * ld, ld, K, acc);
    }
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, total);
  for (int h = 0; h < 16; ++h) {
    const __m512 norm = _mm512_set1_ps(max ? 1.0f : 1.0f / sums[h]);
    for (i64 d = 0; d < K; d += 16) _mm512_storeu_ps(o + h * K + d, _mm512_mul_ps(_mm512_load_ps(acc + h * K + d), norm));
  }
  if (max) {
    _mm512_storeu_ps(max, m);
    _mm512_storeu_ps(sum, total);
  }
}
#endif

#if defined(__AVX512BF16__)
// ---- bf16 caches on vdpbf16ps -----------------------------------------------------------
// decode_heads16 on a cache of bf16 rows, its products on vdpbf16ps: each lane sums two
// bf16 products, at twice the FMA's multiply-adds per cycle on Zen 4, from half the bytes.
// The queries and the softmax weights are rounded to bf16 too (as bf16 attention on a GPU
// rounds Q, K, V and P; sums stay fp32). A score lane sums pairs of dimensions, (q_h[2j],
// q_h[2j+1]) . (k[2j], k[2j+1]); the output sums pairs of positions, lane c of (v_t[c],
// v_t+1[c]) against the broadcast pair (p_t[h], p_t+1[h]). Unpacking two value rows
// (vpunpcklwd / vpunpckhwd) makes those pairs for 32 dimensions, in an order fixed per
// 128-bit lane (unpack_order) that is undone once, when the output is written.

// exp16 for weights about to be rounded to bf16 (2^-8): a degree-4 polynomial (relative
// error ~4e-5), one ln 2 constant, no upper clamp (x = s - m <= kSlack) and no mask (below
// -87 it gives e^-87, ~1e-38): 12 operations instead of 17, the bf16 attention 1.04-1.07x
// as fast (bench-medium batch 16 at 544 positions, alternating, Zen 4).
inline __m512 exp16_bf16(__m512 x) {
  const __m512 big = _mm512_set1_ps(12582912.0f);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), big), big);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147180559945f), x);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 24.0f), r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

inline std::uint32_t pair_at(const std::uint16_t* x) {
  std::uint32_t w;
  std::memcpy(&w, x, 4);
  return w;
}

// dword h of the result: (bf16(a[h]), bf16(b[h])), nearest even
inline __m512i interleave_bf16(__m512 a, __m512 b) {
  alignas(64) static constexpr std::uint16_t kIdx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                         8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i both = __m512i(_mm512_cvtne2ps_pbh(b, a));  // words 0-15 a, 16-31 b
  return _mm512_permutexvar_epi16(_mm512_load_si512(kIdx), both);
}

// Scores (unscaled) of N positions (rows k0, k0 + ld, ...) for 16 heads; qT [K/2][16]:
// dword h of row j the pair of head h's query dimensions 2j, 2j+1.
template <int N>
inline void scores16_bf16(const std::uint32_t* qT, i64 K, const std::uint16_t* k0, i64 ld, const char* ahead, __m512* s) {
  const i64 pairs = K / 2, lines = ahead ? N * ld * 2 / 64 : 0, per = (lines + pairs - 1) / pairs;
#pragma GCC unroll 16
  for (int u = 0; u < N; ++u) s[u] = _mm512_setzero_ps();
  for (i64 j = 0; j < pairs; ++j) {
    for (i64 l = j * per; l < std::min(lines, (j + 1) * per); ++l) _mm_prefetch(ahead + 64 * l, _MM_HINT_T1);
    const __m512bh qj = __m512bh(_mm512_loadu_si512(qT + j * 16));
#pragma GCC unroll 16
    for (int u = 0; u < N; ++u)
      s[u] = _mm512_dpbf16_ps(s[u], qj, __m512bh(_mm512_set1_epi32(int(pair_at(k0 + u * ld + 2 * j)))));
  }
}

// Dimensions c0 .. c0 + 31 (kHalf: c0 .. c0 + 15) of acc [16][ldacc], in unpack order, +=
// np pairs of positions: weights pw [np][16] (dword h: p_t[h], p_t+1[h]) against value
// rows v0 + 2u ld and the row after it (for the last pair of an odd count the same row
// again, against a weight of 0). Eight heads by two vectors per tile: one unpack serves 8
// vdpbf16ps.
template <bool kHalf>
inline void accumulate_pairs(const std::uint32_t* pw, int np, bool odd, const std::uint16_t* v0, i64 ld, i64 ldacc,
                             i64 c0, float* acc) {
  for (int h0 = 0; h0 < 16; h0 += 8) {
    __m512 a[8][2];
#pragma GCC unroll 8
    for (int h = 0; h < 8; ++h)
      for (int c = 0; c < 2; ++c) a[h][c] = _mm512_load_ps(acc + (h0 + h) * ldacc + c0 + 16 * c);
    const std::uint16_t* vu = v0 + c0;
    for (int u = 0; u < np; ++u, vu += 2 * ld) {
      const std::uint16_t* next = odd && u == np - 1 ? vu : vu + ld;
      const __m512i x0 = kHalf ? _mm512_maskz_loadu_epi16(0xFFFF, vu) : _mm512_loadu_si512(vu);
      const __m512i x1 = kHalf ? _mm512_maskz_loadu_epi16(0xFFFF, next) : _mm512_loadu_si512(next);
      __m512i lo = _mm512_unpacklo_epi16(x0, x1), hi = _mm512_unpackhi_epi16(x0, x1);
      __asm__("" : "+v"(lo), "+v"(hi));  // in registers, not folded into each head's product
#pragma GCC unroll 8
      for (int h = 0; h < 8; ++h) {
        const __m512bh w = __m512bh(_mm512_set1_epi32(int(pw[u * 16 + h0 + h])));
        a[h][0] = _mm512_dpbf16_ps(a[h][0], __m512bh(lo), w);
        a[h][1] = _mm512_dpbf16_ps(a[h][1], __m512bh(hi), w);
      }
    }
#pragma GCC unroll 8
    for (int h = 0; h < 8; ++h)
      for (int c = 0; c < 2; ++c) _mm512_store_ps(acc + (h0 + h) * ldacc + c0 + 16 * c, a[h][c]);
  }
}

// Where dimension c0 + d of a 32-dimension tile sits: unpacking gives lane 4L + j of the
// low vector dimension 8L + j and of the high one 8L + 4 + j (128-bit lane L, j < 4);
// permutex2var indices (high vector + 16) for dimensions 0-15 (half 0) or 16-31 (half 1).
inline __m512i unpack_order(int half) {
  alignas(64) std::int32_t idx[16];
  for (int i = 0; i < 16; ++i) {
    const int d = 16 * half + i, L = d / 8, j = d % 8;
    idx[i] = j < 4 ? 4 * L + j : 16 + 4 * L + j - 4;
  }
  return _mm512_load_si512(idx);
}

// decode_heads16 for a bf16 cache (K % 16 == 0): the same online softmax in blocks of 16
// positions, the same prefetches, the same outputs.
void decode_heads16_bf16(const float* q, i64 K, const std::uint16_t* kv, i64 ld, i64 len, float scale, float* o,
                         float* max, float* sum, std::vector<float>& scratch) {
  const i64 ldacc = (K + 31) / 32 * 32;  // a last tile of 16 dimensions takes 32 lanes
  if (scratch.size() < std::size_t(K * 8 + 16 * ldacc + 16)) scratch.resize(std::size_t(K * 8 + 16 * ldacc + 16));
  auto* qT = reinterpret_cast<std::uint32_t*>(scratch.data());  // [K/2][16]
  float* acc = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(scratch.data() + K * 8) + 63) & ~std::uintptr_t(63));
  for (i64 c = 0; c < K; c += 16) {
    __m512 r[16];
    for (int h = 0; h < 16; ++h) r[h] = _mm512_loadu_ps(q + h * K + c);  // unscaled: the rounding is q's alone
    transpose16(r);
    for (int d = 0; d < 16; d += 2) _mm512_storeu_si512(qT + (c + d) / 2 * 16, interleave_bf16(r[d], r[d + 1]));
  }
  std::fill(acc, acc + 16 * ldacc, 0.0f);
  constexpr float kSlack = 8.0f;
  constexpr int kBlock = 16;
  constexpr i64 kAhead = kBlock;  // as decode_heads16 (measured there)
  const char* first = reinterpret_cast<const char*>(kv);
  for (i64 l = 0; l < std::min(len, kAhead) * ld * 2 / 64; ++l) _mm_prefetch(first + 64 * l, _MM_HINT_T1);
  alignas(64) std::uint32_t pw[kBlock / 2][16];
  __m512 m = _mm512_set1_ps(-INFINITY), total = _mm512_setzero_ps();
  for (i64 t = 0; t < len; t += kBlock) {
    const int n = int(std::min<i64>(kBlock, len - t));
    const std::uint16_t* k0 = kv + t * ld;
    __m512 s[kBlock];
    if (n == kBlock) {
      scores16_bf16<kBlock>(qT, K, k0, ld, t + kAhead + kBlock <= len ? reinterpret_cast<const char*>(k0 + kAhead * ld) : nullptr, s);
    } else {
      for (int u = 0; u < n; ++u) scores16_bf16<1>(qT, K, k0 + u * ld, ld, nullptr, s + u);
    }
    for (int u = 0; u < n; ++u) s[u] = _mm512_mul_ps(s[u], _mm512_set1_ps(scale));
    __m512 top = m;
    for (int u = 0; u < n; ++u) top = _mm512_max_ps(top, s[u]);
    if (_mm512_cmp_ps_mask(top, _mm512_add_ps(m, _mm512_set1_ps(kSlack)), _CMP_GT_OQ)) {
      const __m512 corr = exp16(_mm512_sub_ps(m, top));
      total = _mm512_mul_ps(total, corr);
      alignas(64) float c[16];
      _mm512_store_ps(c, corr);
      for (int h = 0; h < 16; ++h) {
        const __m512 cv = _mm512_set1_ps(c[h]);
        for (i64 d = 0; d < ldacc; d += 16)
          _mm512_store_ps(acc + h * ldacc + d, _mm512_mul_ps(_mm512_load_ps(acc + h * ldacc + d), cv));
      }
      m = top;
    }
    for (int u = 0; u < n; u += 2) {
      const __m512 e0 = exp16_bf16(_mm512_sub_ps(s[u], m));
      const __m512 e1 = u + 1 < n ? exp16_bf16(_mm512_sub_ps(s[u + 1], m)) : _mm512_setzero_ps();
      total = _mm512_add_ps(total, _mm512_add_ps(e0, e1));
      _mm512_store_si512(pw[u / 2], interleave_bf16(e0, e1));
    }
    const std::uint16_t* v0 = kv + K + t * ld;
    i64 c0 = 0;
    for (; c0 + 32 <= K; c0 += 32) accumulate_pairs<false>(pw[0], (n + 1) / 2, n % 2, v0, ld, ldacc, c0, acc);
    if (c0 < K) accumulate_pairs<true>(pw[0], (n + 1) / 2, n % 2, v0, ld, ldacc, c0, acc);
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, total);
  const __m512i order0 = unpack_order(0), order1 = unpack_order(1);
  for (int h = 0; h < 16; ++h) {
    const __m512 norm = _mm512_set1_ps(max ? 1.0f : 1.0f / sums[h]);
    for (i64 c0 = 0; c0 < K; c0 += 32) {
      const __m512 lo = _mm512_load_ps(acc + h * ldacc + c0), hi = _mm512_load_ps(acc + h * ldacc + c0 + 16);
      _mm512_storeu_ps(o + h * K + c0, _mm512_mul_ps(_mm512_permutex2var_ps(lo, order0, hi), norm));
      if (c0 + 16 < K) _mm512_storeu_ps(o + h * K + c0 + 16, _mm512_mul_ps(_mm512_permutex2var_ps(lo, order1, hi), norm));
    }
  }
  if (max) {
    _mm512_storeu_ps(max, m);
    _mm512_storeu_ps(sum, total);
  }
}
#endif

// One sequence's positions 0 .. len-1 at `rows` (k at rows + t ld, v K after it, in format
// f) for all H heads: o [H, K] normalized or, with max and sum ([H] each), unnormalized with
// the heads' maxima and sums (the parts of a split sequence, merged by the caller).
void attend(Backend& be, const float* q, const void* rows, KvFormat f, i64 ld, i64 len, i64 H, i64 K, float* o, float* max,
            float* sum) {
  const float scale = 1.0f / std::sqrt(float(K));
  // each only grows, then is reused (one vector for both, decode_heads16's [K, 32]
  // resized down and the GEMM path's [H, len] up, was refilled with zeros at every call)
  thread_local std::vector<float> scores, lanes, widened;
#if defined(__AVX512BF16__)
  if (f == KvFormat::kBF16 && H % 16 == 0 && K % 16 == 0) {
    for (i64 h0 = 0; h0 < H; h0 += 16)
      decode_heads16_bf16(q + h0 * K, K, static_cast<const std::uint16_t*>(rows), ld, len, scale, o + h0 * K,
                          max ? max + h0 : nullptr, max ? sum + h0 : nullptr, lanes);
    return;
  }
#endif
  const float* keys = static_cast<const float*>(rows);
  if (f == KvFormat::kBF16) {  // shapes and CPUs the bf16 kernel does not cover: widened to fp32 first
    if (std::int64_t(widened.size()) < len * 2 * K) widened.resize(std::size_t(len * 2 * K));
    const auto* in = static_cast<const std::uint16_t*>(rows);
    for (i64 t = 0; t < len; ++t)
      for (i64 e = 0; e < 2 * K; ++e) widened[std::size_t(t * 2 * K + e)] = bf16_to_f32(in[t * ld + e]);
    keys = widened.data();
    ld = 2 * K;
  }
#if defined(__AVX512F__)
  if (H % 16 == 0 && K % 16 == 0) {  // heads in vector lanes, 16 at a time
    for (i64 h0 = 0; h0 < H; h0 += 16)
      decode_heads16(q + h0 * K, K, keys, ld, len, scale, o + h0 * K, max ? max + h0 : nullptr, max ? sum + h0 : nullptr,
                     lanes);
    return;
  }
#endif
  // all H heads share the cached keys: S [H, len] = q [H, K] K^T, one GEMM
  if (std::int64_t(scores.size()) < H * len) scores.resize(std::size_t(H * len));
  be.gemm(false, true, H, len, K, scale, q, K, keys, ld, 0.0f, scores.data(), len);
  for (i64 h = 0; h < H; ++h) {
    float* row = scores.data() + h * len;
    const float mx = max_of(row, len);
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (i64 j = 0; j < len; ++j) {
      row[j] = fast_exp(row[j] - mx);
      total += row[j];
    }
    if (max) {
      max[h] = mx;
      sum[h] = total;
      continue;
    }
    const float inv = 1.0f / total;
#pragma omp simd
    for (i64 j = 0; j < len; ++j) row[j] *= inv;
  }
  be.gemm(false, false, H, K, len, 1.0f, scores.data(), len, keys + K, ld, 0.0f, o, K);
}

}  // namespace

void CpuBackend::attention_decode(const float* q, const void* const* cache, KvFormat format, i64 ld,
                                  const std::int64_t* lens, float* o, i64 b, i64 H, i64 K) {
  // Work items are (sequence, range of positions). Below one sequence per thread each
  // sequence's positions are split between the threads, every part for all heads, and the
  // parts' softmaxes merged by their maxima and sums: batch 1 had run on one thread (~12%
  // of an int8 decode step, mostly reading the cache cold), and splitting the heads
  // instead had every thread read the whole cache.
  constexpr i64 kMinPart = 16;  // positions: below this a part is not worth a thread
  const i64 shortest = *std::min_element(lens, lens + b);
  const i64 parts = std::clamp<i64>((omp_get_max_threads() + b - 1) / b, 1, std::max<i64>(1, shortest / kMinPart));
  // parts > 1: each part's unnormalized output [H, K], row maxima and sums [H]; kept by the
  // calling thread between calls (allocated and zeroed at each, with the shared scratch
  // below, they took ~6 us of a batch-1 call at 544 positions)
  thread_local std::vector<float> part_out, part_max, part_sum;
  if (parts > 1 && part_out.size() < std::size_t(b * parts * H * K)) part_out.resize(std::size_t(b * parts * H * K));
  if (parts > 1 && part_max.size() < std::size_t(b * parts * H)) {
    part_max.resize(std::size_t(b * parts * H));
    part_sum.resize(part_max.size());
  }
  float* const pout = part_out.data();
  float* const pmax = part_max.data();
  float* const psum = part_sum.data();
  const i64 row_bytes = format == KvFormat::kBF16 ? 2 : 4;
#pragma omp parallel
  {
    auto work = [&](i64 item) {
      const i64 i = item / parts, part = item % parts, n = lens[i];
      const i64 t0 = n * part / parts, len = n * (part + 1) / parts - t0;
      const void* rows = static_cast<const char*>(cache[i]) + t0 * ld * row_bytes;
      if (parts > 1)
        attend(*this, q + i * H * K, rows, format, ld, len, H, K, pout + item * H * K, pmax + item * H, psum + item * H);
      else
        attend(*this, q + i * H * K, rows, format, ld, len, H, K, o + i * H * K, nullptr, nullptr);
    };
    // Split sequences have equal parts, one per thread or more: a static share each (batch
    // 1 at 544 positions, 2 threads: ~28 -> ~24 us a call; dynamic, one thread often took
    // both parts). Whole sequences of unequal lengths are dealt out as threads come free.
    if (parts > 1) {
#pragma omp for schedule(static)
      for (i64 item = 0; item < b * parts; ++item) work(item);
    } else {
#pragma omp for schedule(dynamic)
      for (i64 item = 0; item < b * parts; ++item) work(item);
    }
    if (parts > 1) {  // (after the loop's barrier) o = sum_p e^(m_p - m) out_p / sum_p e^(m_p - m) s_p
#pragma omp for schedule(static) nowait
      for (i64 ih = 0; ih < b * H; ++ih) {
        const i64 i = ih / H, h = ih % H;
        float m = -INFINITY;
        for (i64 p = 0; p < parts; ++p) m = std::max(m, pmax[(i * parts + p) * H + h]);
        float denom = 0.0f;
        float* oh = o + ih * K;
        for (i64 e = 0; e < K; ++e) oh[e] = 0.0f;
        for (i64 p = 0; p < parts; ++p) {
          const i64 at = (i * parts + p) * H + h;
          const float w = std::exp(pmax[at] - m);
          denom += w * psum[at];
          const float* op = pout + at * K;
#pragma omp simd
          for (i64 e = 0; e < K; ++e) oh[e] += w * op[e];
        }
        const float inv = 1.0f / denom;
#pragma omp simd
        for (i64 e = 0; e < K; ++e) oh[e] *= inv;
      }
    }
  }
}

void CpuBackend::attention_decode_beside(const float* q, const void* const* cache, KvFormat format, i64 ld,
                                         const std::int64_t* lens, float* o, i64 b, i64 H, i64 K, const StoredProduct& p) {
  // Batch 1: the attention (compute, its cache a few hundred KB) on one thread while the
  // others stream the product's weights, then all on what is left; an int8 step at 544
  // positions spent ~0.43 ms of ~8.5 in the attention with memory idle (docs/PERFORMANCE.md,
  // session 19). bf16 and fp32 weights too since session 22: a bf16 step (the two
  // alternating, Zen 4) 1.00x at 160 positions, 1.01x at 544, 1.04x at 2,000, where the
  // attention is ~70 us of a layer's ~350. Elsewhere one after the other.
#if defined(__AVX512F__)
  if (b == 1 && p.b == 1 && H % 16 == 0 && K % 16 == 0) {
    const auto attend_all = [&] { attend(*this, q, cache[0], format, ld, lens[0], H, K, o, nullptr, nullptr); };
    if (stored_row_beside(p.X, p.K, p.W, p.format, p.scales, p.N, p.alpha, p.beta, p.C, attend_all)) return;
  }
#endif
  attention_decode(q, cache, format, ld, lens, o, b, H, K);
  rows_times_stored(p.X, p.b, p.K, p.W, p.format, p.scales, p.N, p.alpha, p.beta, p.C);
}

}  // namespace palm
