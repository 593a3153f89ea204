// Decode products against bf16 weights in panels (pack_panels) on AVX512_BF16's vdpbf16ps,
// from kBf16DotRows input rows on: the activations are rounded to bf16 (to nearest even,
// as vcvtne2ps2bf16 does; PyTorch's bf16 autocast and llama.cpp's bf16 path round them the
// same way) and each instruction sums 32 products of a unit's two bf16 into 16 fp32 sums.
//
// Why: at batch 16 the widening kernel (cpu_stored_avx512.cpp: weights widened exactly, fp32
// FMAs) is bound by the FMA rate, and on Zen 4 vdpbf16ps does twice an FMA's multiply-adds
// at the same instruction rate (a probe, 12 chains per thread: 57 G FMA multiply-adds/s per
// thread, 113 G for vdpbf16ps): a bench-medium decode step of 16 tokens needs 3.4 G
// multiply-adds, 30 ms at the FMA rate, which caps batch 16 at ~530 tokens/s where 6x
// batch 1 is ~570 (docs/PERFORMANCE.md). Batch 1-2 too since session 24: there the memory
// bounds them, but the widening's shift, mask and two FMAs per 64 bytes were not all hidden
// behind it when the memory read ~65 GB/s (kStreamAhead, cpu_stored_avx512_shared.h).
#include "kernels/cpu/cpu_stored_avx512.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX512BF16__)
#include "kernels/cpu/cpu_stored_avx512_shared.h"

namespace palm {

namespace {

// The activations rounded to bf16, unit j (two bf16: X[i][2j] low, X[i][2j + 1] high, 0
// past K) of row i at x[j * b + i]: the broadcasts of one pass over a panel lie at constant
// offsets from one pointer.
struct UnitRows {
  i64 b = 0, units = 0;
  std::vector<std::uint32_t> x;
};

// Values k0 .. k0 + 31 of every row of X into ur (units k0 / 2 .. + 15): rounded 32 at a
// time by vcvtne2ps2bf16, then written to their columns (O(b K) against the product's
// O(b K N)). The threads take blocks of values, not rows: with rows, both wrote into every
// cache line of ur.x (b units of 4 bytes per line at b = 16), and a batch-16 product in
// cache ran no faster on two threads than on one.
void round_block(const float* X, i64 K, i64 k0, UnitRows& ur) {
  alignas(64) std::uint32_t units[16];
  const i64 j0 = k0 / 2, n = std::min<i64>(16, ur.units - j0);
  for (i64 i = 0; i < ur.b; ++i) {
    const __m512 lo = _mm512_maskz_loadu_ps(tail_mask16(K - k0), X + i * K + k0);
    const __m512 hi = _mm512_maskz_loadu_ps(tail_mask16(K - k0 - 16), X + i * K + k0 + 16);
    _mm512_store_si512(units, __m512i(_mm512_cvtne2ps_pbh(hi, lo)));
    for (i64 e = 0; e < n; ++e) ur.x[std::size_t((j0 + e) * ur.b + i)] = units[e];
  }
}

// f[p * MR + m] = the dots of MR input rows from m0 with P panels side by side (panel p at
// p0 + p * 16 rows; FULL = false: one panel of L < 16 rows), each broadcast unit serving
// the P panels. `ahead`: memory to prefetch a line of per unit (the next panels), or null.
template <int MR, int P, bool FULL, int PF = 0>
__attribute__((noinline)) void dot_sums(const std::uint16_t* p0, i64 L, i64 K, const __m512i* tails, const UnitRows& ur,
                                        i64 m0, const char* ahead, i64 ahead_stride, __m512* f) {
  const __mmask16 lanes = tail_mask16(L);
  const i64 full_units = K / 2, units = (K + 1) / 2;
  __m512 acc[P][MR];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) acc[p][m] = _mm512_setzero_ps();
  auto step = [&](const __m512i* w, const std::uint32_t* x) {
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512bh xb = __m512bh(_mm512_set1_epi32(int(x[m])));
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) acc[p][m] = _mm512_dpbf16_ps(acc[p][m], __m512bh(w[p]), xb);
    }
  };
  auto load = [&](int p, i64 j) {
    return FULL ? _mm512_loadu_si512(p0 + p * 16 * K + j * 32) : _mm512_maskz_loadu_epi32(lanes, p0 + j * L * 2);
  };
  __m512i w[P];
  i64 j = 0;
  for (; j + 4 <= full_units; j += 4) {
#pragma GCC unroll 4
    for (int d = 0; d < 4; ++d) {
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        if (PF) _mm_prefetch(reinterpret_cast<const char*>(p0 + p * 16 * K + (j + d) * 32) + PF, _MM_HINT_T1);
        w[p] = load(p, j + d);
      }
      // into L2, not L1: two panels ahead (64 KB at K = 1,024) into Zen 4's 32 KB L1 evicted
      // the ones in use (a batch-16 step's products 25.6 -> 20.7 ms)
      if (ahead) _mm_prefetch(ahead + (j + d) * ahead_stride, _MM_HINT_T2);
      step(w, ur.x.data() + (j + d) * ur.b + m0);
    }
  }
  for (; j < units; ++j) {
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) w[p] = j == full_units ? tails[p] : load(p, j);
    step(w, ur.x.data() + j * ur.b + m0);
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) f[p * MR + m] = acc[p][m];
}

// Batch 1-2 read the weights as P = 8 or 4 streams per thread (as the widening kernel and
// int8 do), each prefetched kStreamAhead into L2 instead of the next panels: at batch 1,
// 1.06-1.11x the widening kernel's speed when the memory read ~65 GB/s and 1.01-1.03x at ~37
// (alternating in one process, Zen 4); without the prefetch 1.00-1.03x, and the prefetch
// alone on the widening kernel 0.94-0.98x: its two FMAs and widening per 64 bytes, not the
// memory, were what the prefetch could not hide (docs/PERFORMANCE.md, session 24).

// Input rows per pass over the panels: P * kPassRows sums in registers.
constexpr int kPassRows = 8;

// Panels n0 .. n0 + 16 P - 1 (P full panels, or one of L rows), every input row. The next
// panels are prefetched a line per unit, spread over the passes (as the widening kernel
// does: all in the first pass made it wait on the memory, then not read at all).
template <int P, int PF = 0>
void panels(const std::uint16_t* W, i64 K, i64 N, i64 n0, const UnitRows& ur, float alpha, float beta, float* C,
            bool fetch_next = true) {
  const i64 L = std::min<i64>(16, N - n0);
  const std::uint16_t* first = W + n0 * K;
  __m512i tails[P];
  for (int p = 0; p < P; ++p) tails[p] = bf16_tail(first + p * 16 * K, L, K);
  const i64 next = n0 + 16 * P, next_rows = std::min<i64>(16 * P, N - next);
  const int passes = int((ur.b + kPassRows - 1) / kPassRows);
  // the next panels' bytes (next_rows * K * 2), a line per unit per pass, across the passes
  const i64 ahead_bytes = std::max<i64>(0, next_rows) * K * 2, per_pass = (ahead_bytes + passes - 1) / passes;
  const i64 stride = std::max<i64>(64, (per_pass / std::max<i64>(1, (K + 1) / 2) + 63) / 64 * 64);
  for (i64 m0 = 0; m0 < ur.b; m0 += kPassRows) {
    const int MR = int(std::min<i64>(kPassRows, ur.b - m0));
    const i64 from = (m0 / kPassRows) * per_pass;
    const char* ahead = fetch_next && next_rows > 0 && from < ahead_bytes ? reinterpret_cast<const char*>(W + next * K) + from : nullptr;
    __m512 f[P * kPassRows];
    with_shape<kPassRows>(MR, L == 16, [&](auto mr, auto full) {
      if constexpr (full.value) dot_sums<mr.value, P, true, PF>(first, 16, K, tails, ur, m0, ahead, stride, f);
      else if constexpr (P == 1) dot_sums<mr.value, 1, false>(first, L, K, tails, ur, m0, ahead, stride, f);
    });
    for (int p = 0; p < P; ++p) bf16_store(f + p * MR, MR, m0, N, n0 + 16 * p, p == 0 ? L : 16, alpha, beta, C);
  }
}

}  // namespace

i64 bf16_dot_min_rows() { return stored_avx512_available() ? kBf16DotRows : 0; }

void bf16_dot_product(const float* X, i64 b, i64 K, const std::uint16_t* W, i64 N, float alpha, float beta, float* C) {
  thread_local UnitRows mine;  // reused between calls; the workers use the caller's
  UnitRows& ur = mine;
  ur.b = b;
  ur.units = (K + 1) / 2;
  ur.x.resize(std::size_t(ur.units * b));
  // full panels 8 (batch 1), 4 (batch 2) or 2 at a time (each broadcast serves them all),
  // then the last panels alone
  const i64 rows = b == 1 ? 16 * 8 : b == 2 ? 16 * 4 : 16 * 2, many = N / rows * rows;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (i64 k0 = 0; k0 < K; k0 += 32) round_block(X, K, k0, ur);
#pragma omp for schedule(static) nowait
    for (i64 n0 = 0; n0 < many; n0 += rows) {
      if (b == 1) panels<8, kStreamAhead>(W, K, N, n0, ur, alpha, beta, C, false);
      else if (b == 2) panels<4, kStreamAhead>(W, K, N, n0, ur, alpha, beta, C, false);
      else panels<2>(W, K, N, n0, ur, alpha, beta, C);
    }
#pragma omp for schedule(static)
    for (i64 n0 = many; n0 < N; n0 += 16) panels<1>(W, K, N, n0, ur, alpha, beta, C);
  }
}

bool bf16_dot_row_beside(const float* x, i64 K, const std::uint16_t* W, i64 N, float alpha, float beta, float* C,
                         const std::function<void()>& beside) {
  thread_local UnitRows mine;
  UnitRows& ur = mine;
  ur.b = 1;
  ur.units = (K + 1) / 2;
  ur.x.resize(std::size_t(ur.units));
  for (i64 k0 = 0; k0 < K; k0 += 32) round_block(x, K, k0, ur);  // before, so no thread waits on another
  // groups of 4 panels, as the int8 and widening kernels deal them beside an attention
  constexpr i64 kRows = 16 * 4;
  const i64 many = N / kRows * kRows;
  items_beside(
      beside, many / kRows, [&](i64 i) { panels<4, kStreamAhead>(W, K, N, i * kRows, ur, alpha, beta, C, false); },
      (N - many + 15) / 16, [&](i64 i) { panels<1>(W, K, N, many + 16 * i, ur, alpha, beta, C); });
  return true;
}

}  // namespace palm

#else

namespace palm {
i64 bf16_dot_min_rows() { return 0; }
}  // namespace palm

#endif
