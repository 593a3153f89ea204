// Decode products against int8 weights on AVX-512 VNNI (the rest of the stored-weight
// kernels: cpu_stored_avx512.cpp, whose header comment says how these work and what they
// round). vpdpbusd multiplies unsigned by signed bytes into int32 sums, 64 per
// instruction; the activations are quantized per token in groups of 128 (a scale per group,
// max |x| / 127, round to nearest even), the weights' signed bytes made unsigned by adding
// 128 (xor 0x80), and 128 * sum(q * scale) subtracted once per input row.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_stored_avx512.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
// GCC 12's _mm512_reduce_add_ps starts from an undefined vector it then overwrites
// wholly: a false "may be used uninitialized" in every caller
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "kernels/cpu/cpu_stored_avx512_shared.h"

namespace palm {

namespace {

// ------------------------------------------------------------------ int8
constexpr i64 kGroupQuads = kQuantGroup / 4;         // 4-byte units of a group
constexpr i64 kPanelGroupBytes = 16 * kQuantGroup;  // a group of a panel's 16 rows

struct QuantRows {
  i64 b = 0, groups = 0;
  std::vector<std::int8_t> q;  // [groups][b][kQuantGroup]: row i's group g at (g * b + i) * kQuantGroup, zero past K
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


// Row i of X into qr (sized by size_rows), group by group: amax ignores NaN as std::max does
// (max(|x|, m) keeps m where |x| is NaN), q = nearbyint(x * (127 / amax)) (the default
// rounding, to nearest even) clamped to +-127.
void quantize_row(const float* X, i64 i, i64 K, QuantRows& qr) {
  constexpr int kVectors = int(kQuantGroup / 16);  // of 16 floats per group
  static_assert(kQuantGroup % 64 == 0, "a group is whole 4-byte units of whole vectors");
  const float* x = X + i * K;
  double offset = 0;
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (i64 g = 0; g < qr.groups; ++g) {
    const i64 k0 = g * kQuantGroup;
    __m512 v[kVectors], vmax = _mm512_setzero_ps();
    for (int u = 0; u < kVectors; ++u) {
      v[u] = _mm512_maskz_loadu_ps(tail_mask16(K - k0 - 16 * u), x + k0 + 16 * u);
      vmax = _mm512_max_ps(_mm512_abs_ps(v[u]), vmax);
    }
    const float amax = _mm512_reduce_max_ps(vmax);
    const float scale = amax / 127.0f;
    qr.scale[std::size_t(g * qr.b + i)] = scale;
    const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    std::int8_t* q = qr.q.data() + (g * qr.b + i) * kQuantGroup;
    __m512i sum = _mm512_setzero_si512();
    for (int u = 0; u < kVectors; ++u) {
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
#pragma GCC unroll 32
      for (int l = 0; l < kGroupQuads; ++l) _mm_prefetch(ahead + kPanelGroupBytes * g + 64 * l, _MM_HINT_T0);
    }
    const i64 j0 = g * kGroupQuads;
    const float* s = qr.scale.data() + g * qr.b + m0;
    // the group's rows 8 at a time (8 int32 sums in registers beside the MR float sums),
    // each block over the same 2 KB of the panel, in L1 from the first
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
      if (j0 + kGroupQuads <= full_quads) {
#pragma GCC unroll 32
        for (int d = 0; d < kGroupQuads; ++d) step(quad(j0 + d), d, d % CH);
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
// the second; now each group's 2 KB serves both blocks of 8 rows from L1 (batch 16 products
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
// 4 at batch 2 (the sums in registers). PF > 0: each panel's line PF bytes ahead prefetched
// into L2 as a line is read (kStreamAhead: batch 1's 8 streams only).
template <int MR, int P, int PF>
__attribute__((noinline)) void int8_few_sums(const std::int8_t* panels, i64 K, i64 stride, const __m512i* tails,
                                             const QuantRows& qr, __m512* f) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const i64 full_quads = K / 4, quads = (K + 3) / 4;
#pragma GCC unroll 8
  for (int i = 0; i < P * MR; ++i) f[i] = _mm512_setzero_ps();
  for (i64 g = 0; g < qr.groups; ++g) {
    const i64 j0 = g * kGroupQuads;
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
    if (j0 + kGroupQuads <= full_quads) {
#pragma GCC unroll 32
      for (int d = 0; d < kGroupQuads; ++d)
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) {
          if (PF) _mm_prefetch(reinterpret_cast<const char*>(panels + p * stride + (j0 + d) * 64) + PF, _MM_HINT_T1);
          step(p, _mm512_loadu_si512(panels + p * stride + (j0 + d) * 64), d);
        }
    } else {
      for (i64 j = j0; j < quads; ++j)
        for (int p = 0; p < P; ++p)
          step(p, j == full_quads ? tails[p] : _mm512_loadu_si512(panels + p * stride + j * 64), int(j - j0));
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
// ports then bound it as much as its vpdpbusd rate). The float sums stay in registers
// until the end (in f, memory, they were stored and reloaded at every group: vmovaps took
// ~28% of the function's samples on Zen 4; in registers a batch-16 product in cache 1.07-1.10
// -> 0.96-0.97 ms, from memory ~5%). `ahead`: the next two panels, fetched during this pass a
// line of each per step (a burst of 32 prefetches per group held Ice Lake's fill buffers, as
// in decode attention: a batch-16 step's int8 products ~16.5 -> ~15 ms, six alternations),
// into L2: the next two panels (32 KB at K = 1,024) fetched into L1 evicted the current two
// from Zen 4's 32 KB L1 before the second pass (a step's products 14.1-15.2 -> 12.3-13.4 ms,
// batch 4 8.1-9.2 -> 6.3-7.6, three alternations; into L3 the same as L2). `ahead0`,
// `ahead1`: the panels to fetch during this pass, a line of each per step: at batch 16 one
// during each of the two passes, not both during the first (a step's products 1.03x as fast,
// median of ten alternating runs, 0.99-1.07x, Zen 4: two cores fetching 32 KB in the first
// pass's ~1 us asked for as much as the memory delivers, then nothing); the pair after next
// instead of the next, 0.97-0.98x.
template <int MR>
__attribute__((noinline)) void int8_two_panel_sums(const std::int8_t* p0, i64 K, const __m512i* tails,
                                                   const QuantRows& qr, i64 m0, const char* ahead0,
                                                   const char* ahead1, __m512* f) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const std::int8_t* p1 = p0 + 16 * K;
  const i64 full_quads = K / 4, quads = (K + 3) / 4;
  __m512 fs[2][MR];  // in registers, written to f at the end
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) fs[0][m] = fs[1][m] = _mm512_setzero_ps();
  for (i64 g = 0; g < qr.groups; ++g) {
    const i64 j0 = g * kGroupQuads;
    const std::int8_t* q = qr.q.data() + (g * qr.b + m0) * kQuantGroup;
    __m512i acc[2][MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) acc[0][m] = acc[1][m] = _mm512_setzero_si512();
    auto step = [&](__m512i w0, __m512i w1, int d) {
      w0 = _mm512_xor_si512(w0, flip);
      w1 = _mm512_xor_si512(w1, flip);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        acc[0][m] = dpbusd_broadcast(acc[0][m], w0, q + m * kQuantGroup + 4 * d);
        acc[1][m] = dpbusd_broadcast(acc[1][m], w1, q + m * kQuantGroup + 4 * d);
      }
    };
    if (j0 + kGroupQuads <= full_quads) {
#pragma GCC unroll 32
      for (int d = 0; d < kGroupQuads; ++d) {
        if (ahead0) _mm_prefetch(ahead0 + kPanelGroupBytes * g + 64 * d, _MM_HINT_T1);
        if (ahead1) _mm_prefetch(ahead1 + kPanelGroupBytes * g + 64 * d, _MM_HINT_T1);
        step(_mm512_loadu_si512(p0 + (j0 + d) * 64), _mm512_loadu_si512(p1 + (j0 + d) * 64), d);
      }
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
      fs[0][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[0][m]), sm, fs[0][m]);
      fs[1][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[1][m]), sm, fs[1][m]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    f[m] = fs[0][m];
    f[8 + m] = fs[1][m];
  }
}

// input rows per pass: 16 int32 and 16 float sums (6 rows, which spill less, ran no faster)
constexpr int kTwoPanelInputs = 8;

// Full panels n0 and n0 + 16 for every input row, kTwoPanelInputs rows per pass (int8_two_panel_sums).
void int8_two_panels(const std::int8_t* W, i64 K, i64 N, i64 n0, const QuantRows& qr, const float* scales, float alpha,
                     float beta, float* C) {
  const std::int8_t* panels = W + n0 * K;
  const __m512i tails[2] = {int8_tail(panels, 16, K), int8_tail(panels + 16 * K, 16, K)};
  const char* ahead = n0 + 32 < N ? reinterpret_cast<const char*>(W + (n0 + 32) * K) : nullptr;
  const __m512 ws0 = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_loadu_ps(scales + n0));
  const __m512 ws1 = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_loadu_ps(scales + n0 + 16));
  for (i64 m0 = 0; m0 < qr.b; m0 += kTwoPanelInputs) {
    const int MR = int(std::min<i64>(kTwoPanelInputs, qr.b - m0));
    __m512 f[16];
    with_shape<kTwoPanelInputs>(MR, true, [&](auto mr, auto) {
      // the next two panels: both during a lone pass, else one during each of the first two
      const bool lone = qr.b <= kTwoPanelInputs;
      const char* ahead0 = m0 == 0 ? ahead : nullptr;
      const char* ahead1 = ahead && m0 == (lone ? 0 : kTwoPanelInputs) ? ahead + 16 * K : nullptr;
      int8_two_panel_sums<mr.value>(panels, K, tails, qr, m0, ahead0, ahead1, f);
    });
    int8_store(f, MR, m0, N, n0, 16, ws0, qr, beta, C);
    int8_store(f + 8, MR, m0, N, n0 + 16, 16, ws1, qr, beta, C);
  }
}

// P full panels for 1-2 input rows: rows n0 + p * gap .. + 15 (gap: rows from one panel to
// the next read beside it).
template <int P>
void int8_few_panels(const std::int8_t* W, i64 K, i64 N, i64 n0, i64 gap, const QuantRows& qr, const float* scales,
                     float alpha, float beta, float* C) {
  const std::int8_t* panels = W + n0 * K;
  __m512i tails[P];
  for (int p = 0; p < P; ++p) tails[p] = int8_tail(panels + p * gap * K, 16, K);
  __m512 f[2 * P];
  if (qr.b == 2) int8_few_sums<2, P, 0>(panels, K, gap * K, tails, qr, f);
  else int8_few_sums<1, P, P == 8 ? kStreamAhead : 0>(panels, K, gap * K, tails, qr, f);
  const int MR = int(qr.b);
  for (int p = 0; p < P; ++p) {
    const __m512 ws = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_loadu_ps(scales + n0 + gap * p));
    int8_store(f + p * MR, MR, 0, N, n0 + gap * p, 16, ws, qr, beta, C);
  }
}

// Panels per stream at 1-2 input rows: each of the P streams reads this many panels, which
// lie end to end, before it jumps (as the fp32 rows, cpu_stored_avx512.cpp). A batch-1 step's
// int8 products, the two alternating in one process: 1.012-1.025x as fast at 2 panels (32 KB
// at K = 1,024), 0.997-1.022x at 4 (Zen 4). Every row's sum is the same.
constexpr i64 kInt8SpanPanels = 2;

}  // namespace

void int8_product_avx512(const float* X, i64 b, i64 K, const std::int8_t* Wq, const float* scales, i64 N, float alpha,
                         float beta, float* C) {
  thread_local QuantRows mine;  // reused between calls; the workers use the caller's
  QuantRows& qr = mine;
  size_rows(b, K, qr);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (i64 i = 0; i < b; ++i) quantize_row(X, i, K, qr);
    // (the loop's barrier: every row is quantized before any product)
    // batch 1-2: 8 or 4 full panels at a time (that many streams per core); the rest
    // panel by panel
    const i64 span = b <= 2 ? kInt8SpanPanels : 1;
    const i64 rows = (b == 1 ? 16 * 8 : b == 2 ? 16 * 4 : 16 * 2) * span, few = N / rows * rows;
#pragma omp for schedule(static) nowait
    for (i64 item = 0; item < few / rows * span; ++item) {
      const i64 n0 = item / span * rows + item % span * 16;  // the span's streams at n0, n0 + 16 span, ...
      if (b == 1) int8_few_panels<8>(Wq, K, N, n0, 16 * span, qr, scales, alpha, beta, C);
      else if (b == 2) int8_few_panels<4>(Wq, K, N, n0, 16 * span, qr, scales, alpha, beta, C);
      else int8_two_panels(Wq, K, N, n0, qr, scales, alpha, beta, C);
    }
#pragma omp for schedule(static)
    for (i64 n0 = few; n0 < N; n0 += 16) int8_panel(Wq, K, N, n0, qr, scales, alpha, beta, C);
  }
}

bool int8_row_beside(const float* x, i64 K, const std::int8_t* W, const float* scales, i64 N, float alpha, float beta,
                     float* C, const std::function<void()>& beside) {
  thread_local QuantRows mine;
  QuantRows& qr = mine;
  size_rows(1, K, qr);
  quantize_row(x, 0, K, qr);  // ~1 us at K = 4,096: before, so that no thread waits on another
  // Groups of 4 panels (64 rows, 256 KB at K = 4,096), dynamically: the thread that attends
  // joins late, and the groups must be small enough to even the threads' ends (8 panels, as
  // rows_times_stored reads at batch 1, were 0.99x, 2 panels 1.00x, 4 panels 0.98x of
  // one-after-the-other, alternating steps: docs/PERFORMANCE.md).
  constexpr i64 kRows = 16 * 4;
  const i64 few = N / kRows * kRows;
  items_beside(
      beside, few / kRows, [&](i64 i) { int8_few_panels<4>(W, K, N, i * kRows, 16, qr, scales, alpha, beta, C); },
      (N - few + 15) / 16, [&](i64 i) { int8_panel(W, K, N, few + 16 * i, qr, scales, alpha, beta, C); });
  return true;
}

}  // namespace palm

#endif
