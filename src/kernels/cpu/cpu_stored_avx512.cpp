// Decode products against int8 weights on AVX-512 VNNI, and against bf16 weights for
// three or more input rows on AVX512_BF16.
//
// int8: vpdpbusd multiplies unsigned by signed bytes into int32 sums, 64 per instruction,
// so the arithmetic per weight byte stays below what the memory delivers (the widening to
// fp32 before reached 61-63% of the bandwidth floor at batch 1). The activations are
// quantized per token in groups of 64 (cpu_stored_avx512.h: a scale per group, max |x| /
// 127, round to nearest even), as llama.cpp's q8_0 path quantizes in blocks; the weights'
// signed bytes are made unsigned by adding 128 (xor 0x80), and 128 * sum(q * scale) is
// subtracted once per input row. The weights are stored in panels of 16 rows with each
// 4-byte quad of the 16 rows side by side (int8_pack_panels), so a lane of vpdpbusd sums one
// output row: each activation quad is broadcast against the panel's quad vectors, and no
// sums across lanes remain. On rows as stored (a tile of 4 weight rows against 4 input rows,
// then sums across lanes, scales and the outputs per tile) batch 16 ran at ~25% of the
// cores' vpdpbusd rate even in cache; transposing 16 rows on the fly cost as much as the
// products (docs/PERFORMANCE.md).
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

#include <algorithm>
#include <cstring>
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
  qr.q.assign(std::size_t(qr.groups * b * kQuantGroup), 0);
  qr.scale.assign(std::size_t(qr.groups * b), 0.0f);
  qr.offset.assign(std::size_t(b), 0.0f);
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
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * u), _mm_setzero_si128());  // past K: 0
      const __mmask16 mk = tail_mask16(K - k0 - 16 * u);
      _mm512_mask_cvtepi32_storeu_epi8(q + 16 * u, mk, n);
      sum = _mm512_add_epi32(sum, _mm512_maskz_mov_epi32(mk, n));
    }
    offset += 128.0 * double(scale) * double(_mm512_reduce_add_epi32(sum));
  }
  qr.offset[std::size_t(i)] = float(offset);
}

// f[m] = sum over groups of (the group's int32 sums) * (its scale), for MR input rows from m0
// and the L <= 16 rows of one panel (lanes). The quad vectors stream from the panel, each
// met by MR activation quads broadcast from qr (their offsets are constants within a
// group), so MR + 1 loads serve MR vpdpbusd. One or two input rows (batch 1 and 2: the
// weights come from memory) keep two chains each, so a chain's latency does not bound the
// stream. `ahead`: the next panel, fetched during this one (the first input block only).
template <int MR, bool FULL>
__attribute__((noinline)) void int8_panel_sums(const std::int8_t* panel, i64 L, i64 K, const __m512i* tail_quad,
                                               const QuantRows& qr, i64 m0, const char* ahead, __m512* f) {
  constexpr int CH = MR <= 2 ? 2 : 1;
  const __m512i flip = _mm512_set1_epi8(char(0x80));  // signed weights to unsigned: + 128
  const __mmask16 lanes = tail_mask16(L);
  const i64 full_quads = K / 4, quads = (K + 3) / 4;
  auto quad = [&](i64 j) {
    const __m512i w = j == full_quads ? *tail_quad
                      : FULL          ? _mm512_loadu_si512(panel + j * 64)
                                      : _mm512_maskz_loadu_epi32(lanes, panel + j * L * 4);
    return _mm512_xor_si512(w, flip);
  };
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) f[m] = _mm512_setzero_ps();
  for (i64 g = 0; g < qr.groups; ++g) {
    if (ahead) {
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l) _mm_prefetch(ahead + 1024 * g + 64 * l, _MM_HINT_T0);
    }
    const std::int8_t* q = qr.q.data() + (g * qr.b + m0) * kQuantGroup;
    __m512i acc[CH][MR];
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c)
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) acc[c][m] = _mm512_setzero_si512();
    auto step = [&](const __m512i w, int d, int c) {
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) {
        std::int32_t x4;
        std::memcpy(&x4, q + m * kQuantGroup + 4 * d, 4);
        acc[c][m] = _mm512_dpbusd_epi32(acc[c][m], w, _mm512_set1_epi32(x4));
      }
    };
    const i64 j0 = g * 16;
    if (j0 + 16 <= full_quads) {
#pragma GCC unroll 16
      for (int d = 0; d < 16; ++d) step(quad(j0 + d), d, d % CH);
    } else {
      for (i64 j = j0; j < quads; ++j) step(quad(j), int(j - j0), int(j % CH));
    }
    const float* s = qr.scale.data() + g * qr.b + m0;
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      __m512i sum = acc[0][m];
      if (CH == 2) sum = _mm512_add_epi32(sum, acc[CH - 1][m]);
      f[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(s[m]), f[m]);
    }
  }
}

constexpr int kInt8Inputs = 8;  // input rows per pass over a panel (8 + 8 sums in registers)

template <bool FULL>
void int8_panel_block(const std::int8_t* panel, i64 L, i64 K, const __m512i* tail_quad, const QuantRows& qr, i64 m0,
                      int MR, const char* ahead, __m512* f) {
  switch (MR) {
    case 1: int8_panel_sums<1, FULL>(panel, L, K, tail_quad, qr, m0, ahead, f); break;
    case 2: int8_panel_sums<2, FULL>(panel, L, K, tail_quad, qr, m0, ahead, f); break;
    case 3: int8_panel_sums<3, FULL>(panel, L, K, tail_quad, qr, m0, ahead, f); break;
    case 4: int8_panel_sums<4, FULL>(panel, L, K, tail_quad, qr, m0, ahead, f); break;
    case 5: int8_panel_sums<5, FULL>(panel, L, K, tail_quad, qr, m0, ahead, f); break;
    case 6: int8_panel_sums<6, FULL>(panel, L, K, tail_quad, qr, m0, ahead, f); break;
    case 7: int8_panel_sums<7, FULL>(panel, L, K, tail_quad, qr, m0, ahead, f); break;
    default: int8_panel_sums<kInt8Inputs, FULL>(panel, L, K, tail_quad, qr, m0, ahead, f); break;
  }
}

// C[:, n0 .. n0 + L - 1] for every input row, from the panel of rows n0 .. n0 + L - 1.
void int8_panel(const std::int8_t* W, i64 K, i64 N, i64 n0, const QuantRows& qr, const float* scales, float alpha,
                float beta, float* C) {
  const i64 L = std::min<i64>(16, N - n0);
  const std::int8_t* panel = W + n0 * K;
  alignas(64) std::int32_t tail[16] = {};  // the last cols % 4 bytes of each row as one quad (zero-padded)
  if (K % 4) {
    const std::int8_t* t = panel + (K / 4) * L * 4;
    for (i64 r = 0; r < L; ++r) std::memcpy(&tail[r], t + r * (K % 4), std::size_t(K % 4));
  }
  const __m512i tail_quad = _mm512_load_si512(tail);
  const char* ahead = n0 + 16 < N ? reinterpret_cast<const char*>(W + (n0 + 16) * K) : nullptr;
  const __mmask16 lanes = tail_mask16(L);
  const __m512 ws = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_maskz_loadu_ps(lanes, scales + n0));
  for (i64 m0 = 0; m0 < qr.b; m0 += kInt8Inputs) {
    const int MR = int(std::min<i64>(kInt8Inputs, qr.b - m0));
    __m512 f[kInt8Inputs];
    if (L == 16) int8_panel_block<true>(panel, L, K, &tail_quad, qr, m0, MR, m0 == 0 ? ahead : nullptr, f);
    else int8_panel_block<false>(panel, L, K, &tail_quad, qr, m0, MR, m0 == 0 ? ahead : nullptr, f);
    for (int m = 0; m < MR; ++m) {
      float* c = C + (m0 + m) * N + n0;
      __m512 v = _mm512_mul_ps(ws, _mm512_sub_ps(f[m], _mm512_set1_ps(qr.offset[std::size_t(m0 + m)])));
      if (beta != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, c), v);
      _mm512_mask_storeu_ps(c, lanes, v);
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
    thread_local QuantRows mine;  // reused between calls; the workers use the caller's
    QuantRows& qr = mine;
    size_rows(b, K, qr);
    const auto* Wq = static_cast<const std::int8_t*>(W);
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (i64 i = 0; i < b; ++i) quantize_row(X, i, K, qr);
      // (the loop's barrier: every row is quantized before any product)
#pragma omp for schedule(static)
      for (i64 n0 = 0; n0 < N; n0 += 16) int8_panel(Wq, K, N, n0, qr, scales, alpha, beta, C);
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

namespace palm {

void int8_pack_panels(std::int8_t* q, i64 rows, i64 cols) {
  const i64 quads = cols / 4, rest = cols % 4;
#pragma omp parallel
  {
    std::vector<std::int8_t> rowwise;  // one panel as it was
#pragma omp for schedule(static)
    for (i64 n0 = 0; n0 < rows; n0 += 16) {
      const i64 L = std::min<i64>(16, rows - n0);
      std::int8_t* panel = q + n0 * cols;
      rowwise.assign(panel, panel + L * cols);
      for (i64 r = 0; r < L; ++r) {
        const std::int8_t* row = rowwise.data() + r * cols;
        for (i64 j = 0; j < quads; ++j) std::memcpy(panel + (j * L + r) * 4, row + 4 * j, 4);
        std::memcpy(panel + quads * L * 4 + r * rest, row + 4 * quads, std::size_t(rest));
      }
    }
  }
}

}  // namespace palm
