// Row-wise kernels: LayerNorm, RoPE, SwiGLU, cross-entropy with z-loss.
#include <algorithm>
#include <cmath>
#include <vector>

#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/fast_math.h"

namespace palm {

namespace {
// Values below which a forward kernel runs on the calling thread: a decode step at batch 1
// calls LayerNorm, RoPE and SwiGLU 49 times on one row each (1,024-4,096 values, a
// microsecond or two of work), and the parallel regions around them cost more than the work.
constexpr i64 kSerialBelow = 1 << 14;
}  // namespace

void CpuBackend::layernorm_fwd(const float* x, const float* scale, float* y, float* mean,
                               float* rstd, i64 N, i64 D, float eps) {
#pragma omp parallel for schedule(static) if (N * D >= kSerialBelow)
  for (i64 n = 0; n < N; ++n) {
    const float* xr = x + n * D;
    float* yr = y + n * D;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (i64 d = 0; d < D; ++d) sum += xr[d];
    const float m = sum / float(D);
    float var = 0.0f;  // two passes: no cancellation for large means
#pragma omp simd reduction(+ : var)
    for (i64 d = 0; d < D; ++d) var += (xr[d] - m) * (xr[d] - m);
    const float r = 1.0f / std::sqrt(var / float(D) + eps);
#pragma omp simd
    for (i64 d = 0; d < D; ++d) yr[d] = (xr[d] - m) * r * scale[d];
    mean[n] = m;
    rstd[n] = r;
  }
}

void CpuBackend::layernorm_bwd_acc(const float* dy, const float* x, const float* scale,
                                   const float* mean, const float* rstd, float* dx,
                                   float* dscale, i64 N, i64 D) {
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * scale
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) {
    const float* dyr = dy + n * D;
    const float* xr = x + n * D;
    float* dxr = dx + n * D;
    const float m = mean[n], r = rstd[n];
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (i64 d = 0; d < D; ++d) {
      const float g = dyr[d] * scale[d];
      sum_g += g;
      sum_gx += g * (xr[d] - m) * r;
    }
    const float mg = sum_g / float(D), mgx = sum_gx / float(D);
#pragma omp simd
    for (i64 d = 0; d < D; ++d) {
      const float xhat = (xr[d] - m) * r;
      dxr[d] += r * (dyr[d] * scale[d] - mg - xhat * mgx);
    }
  }
  // dscale: threads own column blocks and sum rows in order (thread-count invariant).
  constexpr i64 kBlock = 64;
  const i64 blocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (i64 blk = 0; blk < blocks; ++blk) {
    const i64 d0 = blk * kBlock, d1 = std::min(D, d0 + kBlock);
    float acc[kBlock] = {};
    for (i64 n = 0; n < N; ++n) {
      const float m = mean[n], r = rstd[n];
      const float* dyr = dy + n * D;
      const float* xr = x + n * D;
#pragma omp simd
      for (i64 d = d0; d < d1; ++d) acc[d - d0] += dyr[d] * (xr[d] - m) * r;
    }
    for (i64 d = d0; d < d1; ++d) dscale[d] += acc[d - d0];
  }
}

namespace {

constexpr i64 kMaxRopeHalf = 512;
constexpr i64 kRopeTablePositions = 1 << 16;  // positions kept in the table (beyond: computed per row)

// cos and sin of t * base^(-2i/K) for one row, formed in double so long positions keep
// full float accuracy.
void rope_angles(double t, const double* freq, i64 half, float* cs, float* sn) {
  for (i64 i = 0; i < half; ++i) {
    const double angle = t * freq[i];
    cs[i] = float(std::cos(angle));
    sn[i] = float(std::sin(angle));
  }
}

// Rotates each head's pairs (i, i + K/2) by sign * t * base^(-2i/K). Row t of `table`
// (K floats: K/2 cosines, then K/2 sines) holds position t's angles where t < table_rows.
void rope_rotate(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T, i64 heads, i64 K, float base,
                 float sign, const float* table, i64 table_rows, const std::int32_t* positions = nullptr) {
  const i64 half = K / 2;
  PALM_ASSERT(half <= kMaxRopeHalf);  // validate() bounds head_dim
  i64 last = T - 1;  // the frequencies are needed only for positions past the table
  if (positions)
    for (i64 n = 0; n < N; ++n) last = std::max(last, i64(positions[n]));
  double freq[kMaxRopeHalf];
  if (last >= table_rows)
    for (i64 i = 0; i < half; ++i) freq[i] = std::pow(double(base), -2.0 * double(i) / double(K));
#pragma omp parallel if (N * heads * K >= kSerialBelow)
  {
    float own[2 * kMaxRopeHalf];  // per-thread angles for positions past the table
#pragma omp for schedule(static)
    for (i64 n = 0; n < N; ++n) {
      const i64 t = positions ? i64(positions[n]) : n % T;
      const float* cs = own;
      if (t < table_rows) {
        cs = table + t * K;
      } else {
        rope_angles(double(t), freq, half, own, own + half);
      }
      const float* sn = cs + half;
      for (i64 h = 0; h < heads; ++h) {
        const float* a = in + n * ld_in + h * K;
        float* b = out + n * ld_out + h * K;
#pragma omp simd
        for (i64 i = 0; i < half; ++i) {
          const float x1 = a[i], x2 = a[i + half], s = sign * sn[i];
          b[i] = x1 * cs[i] - x2 * s;
          b[i + half] = x2 * cs[i] + x1 * s;
        }
      }
    }
  }
}

}  // namespace

// The angles of positions 0..rows-1 (at most kRopeTablePositions), computed once per
// (base, K) and grown on demand: every layer's q and k, forward and backward, reuse them
// (recomputing them per call was most of RoPE's time in a prefill).
std::shared_ptr<const std::vector<float>> CpuBackend::rope_table(float base, i64 K, i64 rows) {
  rows = std::min(rows, kRopeTablePositions);
  std::lock_guard<std::mutex> lock(rope_mu_);
  if (rope_table_ && rope_base_ == base && rope_k_ == K && rope_rows_ >= rows) return rope_table_;
  if (rope_base_ == base && rope_k_ == K) rows = std::min(kRopeTablePositions, std::max(rows, 2 * rope_rows_));
  const i64 half = K / 2;
  double freq[kMaxRopeHalf];
  for (i64 i = 0; i < half; ++i) freq[i] = std::pow(double(base), -2.0 * double(i) / double(K));
  auto table = std::make_shared<std::vector<float>>(std::size_t(rows * K));
  float* d = table->data();
#pragma omp parallel for schedule(static)
  for (i64 t = 0; t < rows; ++t) rope_angles(double(t), freq, half, d + t * K, d + t * K + half);
  rope_table_ = table;
  rope_base_ = base;
  rope_k_ = K;
  rope_rows_ = rows;
  return rope_table_;
}

void CpuBackend::rope_fwd(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T,
                          i64 heads, i64 K, float base) {
  const auto table = rope_table(base, K, std::min(N, T));
  rope_rotate(in, ld_in, out, ld_out, N, T, heads, K, base, 1.0f, table->data(), i64(table->size()) / K);
}

void CpuBackend::rope_fwd_at(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N,
                             const std::int32_t* positions, i64 heads, i64 K, float base) {
  i64 last = 0;
  for (i64 n = 0; n < N; ++n) last = std::max(last, i64(positions[n]));
  const auto table = rope_table(base, K, last + 1);
  rope_rotate(in, ld_in, out, ld_out, N, 1, heads, K, base, 1.0f, table->data(), i64(table->size()) / K, positions);
}

void CpuBackend::rope_bwd(const float* dout, i64 ld_dout, float* din, i64 ld_din, i64 N,
                          i64 T, i64 heads, i64 K, float base) {
  // The rotation is orthogonal: its transpose is the rotation by -angle.
  const auto table = rope_table(base, K, std::min(N, T));
  rope_rotate(dout, ld_dout, din, ld_din, N, T, heads, K, base, -1.0f, table->data(), i64(table->size()) / K);
}

void CpuBackend::swiglu_fwd(const float* gate, const float* up, i64 ld_in, float* act, i64 N,
                            i64 F) {
#pragma omp parallel for schedule(static) if (N * F >= kSerialBelow)
  for (i64 n = 0; n < N; ++n) {
    const float* g = gate + n * ld_in;
    const float* u = up + n * ld_in;
    float* a = act + n * F;
#pragma omp simd
    for (i64 f = 0; f < F; ++f) a[f] = g[f] * fast_sigmoid(g[f]) * u[f];
  }
}

void CpuBackend::swiglu_bwd(const float* dact, const float* gate, const float* up, i64 ld_in,
                            float* dgate, float* dup, i64 ld_out, i64 N, i64 F) {
  // d swish(g)/dg = s + g s (1 - s), s = sigmoid(g)
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) {
    const float* da = dact + n * F;
    const float* g = gate + n * ld_in;
    const float* u = up + n * ld_in;
    float* dg = dgate + n * ld_out;
    float* du = dup + n * ld_out;
#pragma omp simd
    for (i64 f = 0; f < F; ++f) {
      const float s = fast_sigmoid(g[f]);
      const float sw = g[f] * s;
      du[f] = da[f] * sw;
      dg[f] = da[f] * u[f] * (s + g[f] * s * (1.0f - s));
    }
  }
}

void CpuBackend::xent_fwd_bwd(float* logits, const std::int32_t* targets, float* nll,
                              float* log_z, float* dlogits, float z_coef, float grad_scale,
                              i64 N, i64 V) {
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) {
    float* row = logits + n * V;
    const float mx = max_of(row, V);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (i64 v = 0; v < V; ++v) sum += fast_exp(row[v] - mx);
    const float lz = mx + std::log(sum);
    const i64 target = targets[n];
    nll[n] = lz - row[target];
    log_z[n] = lz;
    if (dlogits) {
      float* drow = dlogits + n * V;
      const float pscale = grad_scale * (1.0f + 2.0f * z_coef * lz);
#pragma omp simd
      for (i64 v = 0; v < V; ++v) drow[v] = pscale * fast_exp(row[v] - lz);
      drow[target] -= grad_scale;
    }
  }
}

}  // namespace palm
