// Decode products against int8 weights on AVX-512 VNNI: vpdpbusd multiplies unsigned by
// signed bytes into int32 sums, 64 per instruction, so the arithmetic per weight byte
// stays below what the memory delivers (the widening to fp32 before reached 61-63% of
// the bandwidth floor at batch 1). The activations are quantized per token in blocks of
// kQuantBlock values (a scale per block: max |x| / 127, round to nearest even), as
// llama.cpp's q8_0 path does; the weights' signed bytes are made unsigned by adding 128
// (xor 0x80), and 128 * sum(q) * scale of each block is subtracted once per input row.
// Each weight row is loaded once per group of up to 8 input rows and used from registers.
// (A bf16 kernel on vdpbf16ps, activations split into two bf16, was measured no faster
// than the widening at batch 1 and 3x slower at batch 8 on this Zen 4, where vdpbf16ps
// ran at ~0.3 per cycle per core: removed. docs/PERFORMANCE.md.)
#include "kernels/cpu/cpu_stored_avx512.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
// GCC 12's _mm512_reduce_add_ps starts from an undefined vector it then overwrites
// wholly: a false "may be used uninitialized" in every caller
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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

void quantize_rows(const float* X, i64 b, i64 K, QuantRows& qr) {
  qr.Kp = (K + 63) / 64 * 64;
  qr.blocks = (K + kQuantBlock - 1) / kQuantBlock;
  qr.q.assign(std::size_t(b * qr.Kp), 0);
  qr.scale.assign(std::size_t(b * qr.blocks), 0.0f);
  qr.offset.assign(std::size_t(b), 0.0f);
  for (i64 i = 0; i < b; ++i) {
    const float* x = X + i * K;
    double offset = 0;
    for (i64 blk = 0; blk < qr.blocks; ++blk) {
      const i64 k0 = blk * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
      float amax = 0.0f;
      for (i64 k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(x[k]));
      const float s = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      std::int32_t sum = 0;
      for (i64 k = k0; k < k1; ++k) {
        const std::int32_t v = std::int32_t(std::nearbyint(x[k] * inv));
        qr.q[std::size_t(i * qr.Kp + k)] = std::int8_t(std::clamp(v, -127, 127));
        sum += qr.q[std::size_t(i * qr.Kp + k)];
      }
      qr.scale[std::size_t(i * qr.blocks + blk)] = s;
      offset += 128.0 * double(s) * double(sum);
    }
    qr.offset[std::size_t(i)] = float(offset);
  }
}

template <int R>
void int8_rows(const std::int8_t* w, i64 K, const QuantRows& qr, i64 r0, float* out) {
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
    const bool two = k + 64 < K;  // the block's second vector holds weights
    const __m512i w1 = two ? load(k + 64) : _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      // two independent sums, joined before the conversion
      __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, _mm512_loadu_si512(q + r * Kp + k));
      const __m512i d1 = two ? _mm512_dpbusd_epi32(_mm512_setzero_si512(), w1, _mm512_loadu_si512(q + r * Kp + k + 64))
                             : _mm512_setzero_si512();
      d0 = _mm512_add_epi32(d0, d1);
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

}  // namespace

bool stored_avx512_available() {
  static const bool on = std::getenv("PALM_NO_AVX512_DOT") == nullptr;  // the A/B switch of docs/PERFORMANCE.md
  return on;
}

bool stored_product_avx512(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales, i64 N,
                           float alpha, float beta, float* C) {
  if (format == WeightFormat::kInt8) {
    QuantRows qr;
    quantize_rows(X, b, K, qr);
    const auto* Wq = static_cast<const std::int8_t*>(W);
#pragma omp parallel for schedule(static)
    for (i64 n = 0; n < N; ++n) {
      float dots[kGroup];
      by_groups(b, [&]<int R>(i64 r0) {
        int8_rows<R>(Wq + n * K, K, qr, r0, dots);
        store(C, N, n, r0, R, dots, alpha * scales[n], beta);
      });
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
