// Row-wise kernels: LayerNorm, RoPE, SwiGLU, cross-entropy with z-loss.
#include <algorithm>
#include <cmath>
#include <vector>

#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/fast_math.h"

namespace palm {

void CpuBackend::layernorm_fwd(const float* x, const float* scale, float* y, float* mean,
                               float* rstd, i64 N, i64 D, float eps) {
#pragma omp parallel for schedule(static)
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

// Rotates each head's pairs (i, i + K/2) by sign * t * base^(-2i/K). The angle is formed
// in double so long positions keep full float accuracy.
void rope_rotate(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T, i64 heads,
                 i64 K, float base, float sign, const std::int32_t* positions = nullptr) {
  const i64 half = K / 2;
  PALM_ASSERT(half <= kMaxRopeHalf);  // validate() bounds head_dim
#pragma omp parallel
  {
    float cs[kMaxRopeHalf], sn[kMaxRopeHalf];  // per-thread tables, no allocation
#pragma omp for schedule(static)
    for (i64 n = 0; n < N; ++n) {
      const double t = positions ? double(positions[n]) : double(n % T);
      for (i64 i = 0; i < half; ++i) {
        const double angle = t * std::pow(double(base), -2.0 * double(i) / double(K));
        cs[i] = float(std::cos(angle));
        sn[i] = sign * float(std::sin(angle));
      }
      for (i64 h = 0; h < heads; ++h) {
        const float* a = in + n * ld_in + h * K;
        float* b = out + n * ld_out + h * K;
#pragma omp simd
        for (i64 i = 0; i < half; ++i) {
          const float x1 = a[i], x2 = a[i + half];
          b[i] = x1 * cs[i] - x2 * sn[i];
          b[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  }
}

}  // namespace

void CpuBackend::rope_fwd(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T,
                          i64 heads, i64 K, float base) {
  rope_rotate(in, ld_in, out, ld_out, N, T, heads, K, base, 1.0f);
}

void CpuBackend::rope_fwd_at(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N,
                             const std::int32_t* positions, i64 heads, i64 K, float base) {
  rope_rotate(in, ld_in, out, ld_out, N, 1, heads, K, base, 1.0f, positions);
}

void CpuBackend::rope_bwd(const float* dout, i64 ld_dout, float* din, i64 ld_din, i64 N,
                          i64 T, i64 heads, i64 K, float base) {
  // The rotation is orthogonal: its transpose is the rotation by -angle.
  rope_rotate(dout, ld_dout, din, ld_din, N, T, heads, K, base, -1.0f);
}

void CpuBackend::swiglu_fwd(const float* gate, const float* up, i64 ld_in, float* act, i64 N,
                            i64 F) {
#pragma omp parallel for schedule(static)
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
    float mx = row[0];
#pragma omp simd reduction(max : mx)
    for (i64 v = 0; v < V; ++v) mx = std::max(mx, row[v]);
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
