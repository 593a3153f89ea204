// Naive double-precision references of every Backend op, written from the math in
// docs/model.md and nothing else. Shapes as in kernels/backend.h.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace palm::ref {

using Vec = std::vector<double>;
using i64 = std::int64_t;

inline Vec gemm(bool ta, bool tb, i64 M, i64 N, i64 K, double alpha, const Vec& A, i64 lda,
                const Vec& B, i64 ldb, double beta, const Vec& C, i64 ldc) {
  Vec out = C;
  for (i64 m = 0; m < M; ++m)
    for (i64 n = 0; n < N; ++n) {
      double s = 0;
      for (i64 k = 0; k < K; ++k) {
        const double a = ta ? A[k * lda + m] : A[m * lda + k];
        const double b = tb ? B[n * ldb + k] : B[k * ldb + n];
        s += a * b;
      }
      out[m * ldc + n] = alpha * s + (beta == 0 ? 0.0 : beta * C[m * ldc + n]);
    }
  return out;
}

inline Vec layernorm(const Vec& x, const Vec& scale, i64 N, i64 D, double eps) {
  Vec y(N * D);
  for (i64 n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (i64 d = 0; d < D; ++d) m += x[n * D + d];
    m /= D;
    for (i64 d = 0; d < D; ++d) v += (x[n * D + d] - m) * (x[n * D + d] - m);
    v /= D;
    for (i64 d = 0; d < D; ++d) y[n * D + d] = (x[n * D + d] - m) / std::sqrt(v + eps) * scale[d];
  }
  return y;
}

// x [N, heads*K] contiguous; position of row n is n % T.
inline Vec rope(const Vec& x, i64 N, i64 T, i64 heads, i64 K, double base) {
  Vec y(x.size());
  for (i64 n = 0; n < N; ++n)
    for (i64 h = 0; h < heads; ++h)
      for (i64 i = 0; i < K / 2; ++i) {
        const double ang = double(n % T) * std::pow(base, -2.0 * i / K);
        const double x1 = x[n * heads * K + h * K + i], x2 = x[n * heads * K + h * K + i + K / 2];
        y[n * heads * K + h * K + i] = x1 * std::cos(ang) - x2 * std::sin(ang);
        y[n * heads * K + h * K + i + K / 2] = x2 * std::cos(ang) + x1 * std::sin(ang);
      }
  return y;
}

inline Vec swiglu(const Vec& gate, const Vec& up) {
  Vec a(gate.size());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
  return a;
}

// q [B*T, H*K], k and v [B*T, K]; returns o [B*T, H*K]. Plain per-head causal attention.
inline Vec attention(const Vec& q, const Vec& k, const Vec& v, i64 B, i64 T, i64 H, i64 K) {
  Vec o(B * T * H * K, 0.0);
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h)
      for (i64 t = 0; t < T; ++t) {
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (i64 j = 0; j <= t; ++j) {
          double dot = 0;
          for (i64 e = 0; e < K; ++e) dot += q[(b * T + t) * H * K + h * K + e] * k[(b * T + j) * K + e];
          s[j] = dot / std::sqrt(double(K));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (auto& x : s) z += (x = std::exp(x - mx));
        for (i64 j = 0; j <= t; ++j)
          for (i64 e = 0; e < K; ++e)
            o[(b * T + t) * H * K + h * K + e] += s[j] / z * v[(b * T + j) * K + e];
      }
  return o;
}

// Returns mean over rows of (nll + z * logZ^2); fills nll and log_z.
inline double xent(const Vec& logits, const std::vector<std::int32_t>& targets, i64 N, i64 V,
                   double z, Vec* nll = nullptr, Vec* log_z = nullptr) {
  double total = 0;
  if (nll) nll->assign(N, 0);
  if (log_z) log_z->assign(N, 0);
  for (i64 n = 0; n < N; ++n) {
    double mx = -1e300;
    for (i64 v = 0; v < V; ++v) mx = std::max(mx, logits[n * V + v]);
    double s = 0;
    for (i64 v = 0; v < V; ++v) s += std::exp(logits[n * V + v] - mx);
    const double lz = mx + std::log(s);
    const double l = lz - logits[n * V + targets[n]];
    if (nll) (*nll)[n] = l;
    if (log_z) (*log_z)[n] = lz;
    total += l + z * lz * lz;
  }
  return total / N;
}

}  // namespace palm::ref
