// Decode products against int8 weights on AVX-512 VNNI, and against bf16 weights for
// three or more input rows on AVX512_BF16.
//
// int8: vpdpbusd multiplies unsigned by signed bytes into int32 sums, 64 per instruction,
// so the arithmetic per weight byte stays below what the memory delivers (the widening to
// fp32 before reached 61-63% of the bandwidth floor at batch 1). The activations are
// quantized per token in blocks of kQuantBlock values (a scale per block: max |x| / 127,
// round to nearest even), as llama.cpp's q8_0 path does; the weights' signed bytes are
// made unsigned by adding 128 (xor 0x80), and 128 * sum(q) * scale of each block is
// subtracted once per input row. Each weight row is loaded once per group of up to 8
// input rows and used from registers (tiles of 2 or 4 weight rows measured no faster).
//
// bf16, 3+ input rows: vdpbf16ps multiplies pairs of bf16 into fp32 sums, 32 products per
// instruction, on the weights as stored. Each activation is split into two bf16, hi =
// bf16(x) and lo = bf16(x - hi), and both are multiplied: hi + lo carries 16 significant
// bits: hi + lo is within 2^-18 |x| of x, so each term is off by at most 2^-18 |x| |w|,
// where rounding x to one bf16 would cost 2^-9 (the weights' own rounding). A tile of 8 weight
// rows meets 2 input rows at a time (16 sums in registers). At batch 1 and 2 the widening
// in cpu_stored_gemv.cpp stays: there the weights stream from memory and the dot products
// are not the bound (a batch-1 vdpbf16ps kernel measured no faster, docs/PERFORMANCE.md).
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

constexpr i64 kGroup = 8;  // input rows sharing one pass over a weight row

inline __mmask64 tail_mask64(i64 n) { return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1; }

// ------------------------------------------------------------------ int8
struct QuantRows {
  i64 Kp = 0, blocks = 0;
  std::vector<std::int8_t> q;   // [b, Kp]
  std::vector<float> scale;     // [b, blocks]
  std::vector<float> offset;    // [b]: 128 * sum over blocks of scale * sum(q)
};

void size_rows(i64 b, i64 K, QuantRows& qr) {
  qr.Kp = (K + 63) / 64 * 64;
  qr.blocks = (K + kQuantBlock - 1) / kQuantBlock;
  qr.q.assign(std::size_t(b * qr.Kp), 0);
  qr.scale.assign(std::size_t(b * qr.blocks), 0.0f);
  qr.offset.assign(std::size_t(b), 0.0f);
}

inline __mmask16 tail_mask16(i64 n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// Row i of X into qr (sized by size_rows). Vectorized; the same arithmetic as the scalar
// definition: amax ignores NaN as std::max does, q = nearbyint(x * (127 / amax)) (the
// default rounding, to nearest even) clamped to +-127.
void quantize_row(const float* X, i64 i, i64 K, QuantRows& qr) {
  const float* x = X + i * K;
  std::int8_t* q = qr.q.data() + i * qr.Kp;
  double offset = 0;
  for (i64 blk = 0; blk < qr.blocks; ++blk) {
    const i64 k0 = blk * kQuantBlock, n = std::min(K - k0, kQuantBlock);
    __m512 vmax = _mm512_setzero_ps();
    for (i64 j = 0; j < n; j += 16)  // max(|x|, m) keeps m where |x| is NaN
      vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask16(n - j), x + k0 + j)), vmax);
    const float amax = _mm512_reduce_max_ps(vmax);
    const float s = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512i vsum = _mm512_setzero_si512();
    for (i64 j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask16(n - j);
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + k0 + j), vinv));
      v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
      _mm512_mask_cvtepi32_storeu_epi8(q + k0 + j, m, v);
      vsum = _mm512_add_epi32(vsum, v);  // the masked-off lanes are 0
    }
    qr.scale[std::size_t(i * qr.blocks + blk)] = s;
    offset += 128.0 * double(s) * double(_mm512_reduce_add_epi32(vsum));
  }
  qr.offset[std::size_t(i)] = float(offset);
}

template <int R>
void int8_rows(const std::int8_t* w, i64 K, const QuantRows& qr, i64 r0, float* out, const std::int8_t* next) {
  static_assert(kQuantBlock == 128, "a quantization block is two 64-byte vectors");
  constexpr int U = R <= 4 ? 2 : 1;  // float chains per row (alternate blocks)
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const std::int8_t* q = qr.q.data() + r0 * qr.Kp;
  const float* scale = qr.scale.data() + r0 * qr.blocks;
  const i64 Kp = qr.Kp, blocks = qr.blocks;
  __m512 acc[R][U];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int u = 0; u < U; ++u) acc[r][u] = _mm512_setzero_ps();
  // the weight tail is loaded as 0 (then 128 after the flip) against activations padded with 0
  auto load = [&](i64 k) {
    const __m512i wv = k + 64 <= K ? _mm512_loadu_si512(w + k) : _mm512_maskz_loadu_epi8(tail_mask64(K - k), w + k);
    return _mm512_xor_si512(wv, flip);
  };
  for (i64 blk = 0; blk < blocks; ++blk) {
    const i64 k = blk * kQuantBlock;
    const int u = U > 1 ? int(blk & 1) : 0;
    const __m512i w0 = load(k);
    if (next) {  // rows ahead, fetched while this row is used from registers (batch 16: ~1.15x)
      _mm_prefetch(reinterpret_cast<const char*>(next + k), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(next + k + 64), _MM_HINT_T0);
    }
    const bool two = k + 64 < K;  // the block's second vector holds weights
    const __m512i w1 = two ? load(k + 64) : _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, _mm512_loadu_si512(q + r * Kp + k));
      if (two) d0 = _mm512_dpbusd_epi32(d0, w1, _mm512_loadu_si512(q + r * Kp + k + 64));
      acc[r][u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_set1_ps(scale[r * blocks + blk]), acc[r][u]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    __m512 t = acc[r][0];
#pragma GCC unroll 2
    for (int u = 1; u < U; ++u) t = _mm512_add_ps(t, acc[r][u]);
    out[r] = _mm512_reduce_add_ps(t) - qr.offset[std::size_t(r0 + r)];
  }
}

// Calls f<R>(first_row, out) for each group of input rows (R = rows in the group).
template <typename F>
void by_groups(i64 b, F&& f) {
  for (i64 r0 = 0; r0 < b; r0 += kGroup) {
    switch (std::min(kGroup, b - r0)) {
      case 1: f.template operator()<1>(r0); break;
      case 2: f.template operator()<2>(r0); break;
      case 3: f.template operator()<3>(r0); break;
      case 4: f.template operator()<4>(r0); break;
      case 5: f.template operator()<5>(r0); break;
      case 6: f.template operator()<6>(r0); break;
      case 7: f.template operator()<7>(r0); break;
      default: f.template operator()<8>(r0); break;
    }
  }
}

inline void store(float* C, i64 N, i64 n, i64 r0, int R, const float* dots, float sc, float beta) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float& c = C[(r0 + r) * N + n];
    c = sc * dots[r] + (beta == 0.0f ? 0.0f : beta * c);
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
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (i64 i = 0; i < b; ++i) quantize_row(X, i, K, qr);
      // (the loop's barrier: every row is quantized before any product)
#pragma omp for schedule(static)
      for (i64 n = 0; n < N; ++n) {
        float dots[kGroup];
        by_groups(b, [&]<int R>(i64 r0) {
          int8_rows<R>(Wq + n * K, K, qr, r0, dots, r0 == 0 && n + 4 < N ? Wq + (n + 4) * K : nullptr);
          store(C, N, n, r0, R, dots, alpha * scales[n], beta);
        });
      }
    }
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
