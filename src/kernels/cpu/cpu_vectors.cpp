// The CPU backend's whole-tensor ops: gradient scaling and norms, replica hashes,
// initialization, the optimizer updates, the vocabulary-slice embedding and
// cross-entropy of tensor parallelism, decode-weight quantization. Each loop is the one
// that lived at its call site before it moved behind the Backend (bitwise the same
// results); reductions run in fixed chunks combined in order, so no result depends on
// the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/rng.h"
#include "kernels/cpu/bf16.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_stored_avx512.h"

namespace palm {

namespace {
constexpr i64 kSquaresChunk = 4096;
constexpr i64 kHashChunk = i64(1) << 20;
}  // namespace

void CpuBackend::scale(float* x, float s, i64 n) {
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; ++i) x[i] *= s;
}

double CpuBackend::sum_squares(const float* x, i64 n) {
  const i64 chunks = (n + kSquaresChunk - 1) / kSquaresChunk;
  std::vector<double> partials(static_cast<std::size_t>(chunks));
#pragma omp parallel for schedule(static)
  for (i64 c = 0; c < chunks; ++c) {
    double s = 0;
    const i64 end = std::min(n, (c + 1) * kSquaresChunk);
    for (i64 i = c * kSquaresChunk; i < end; ++i) s += double(x[i]) * x[i];
    partials[std::size_t(c)] = s;
  }
  double total = 0;
  for (const double p : partials) total += p;
  return total;
}

std::uint64_t CpuBackend::hash_floats(const float* data, i64 n) {
  const i64 chunks = (n + kHashChunk - 1) / kHashChunk;
  std::vector<std::uint64_t> h(static_cast<std::size_t>(chunks), 0);
  const auto* words = reinterpret_cast<const std::uint32_t*>(data);
#pragma omp parallel for schedule(static)
  for (i64 c = 0; c < chunks; ++c) {
    std::uint64_t x = 0x9E3779B97F4A7C15ull ^ std::uint64_t(c);
    for (i64 i = c * kHashChunk; i < std::min(n, (c + 1) * kHashChunk); ++i) x = (x ^ words[i]) * 0x100000001B3ull;
    h[std::size_t(c)] = x;
  }
  std::uint64_t all = 0xCBF29CE484222325ull;
  for (const auto x : h) all = (all ^ x) * 0x100000001B3ull;
  return all;
}

void CpuBackend::fill_normal(float* x, i64 rows, i64 cols, std::uint64_t seed, std::uint64_t stream, double stddev,
                             i64 global_cols, i64 row0, i64 col0, float constant) {
  const i64 n = rows * cols;
#pragma omp parallel for schedule(static)
  for (i64 j = 0; j < n; ++j) {
    const i64 r = j / cols, c = j % cols;
    x[j] = stddev == 0 ? constant
                       : static_cast<float>(stddev * normal_at(seed, stream, std::uint64_t((row0 + r) * global_cols + col0 + c)));
  }
}

void CpuBackend::adamw_update(float* x, const float* g, float* m, float* v, i64 n, double lr, double b1, double b2,
                              double c1, double c2, double eps, double wd) {
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; ++i) {
    m[i] = float(b1 * m[i] + (1 - b1) * g[i]);
    v[i] = float(b2 * v[i] + (1 - b2) * double(g[i]) * g[i]);
    const double upd = (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
    x[i] = float(x[i] - lr * (upd + wd * x[i]));
  }
}

void CpuBackend::adafactor_precondition(float* g, float* v, i64 n, double beta2) {
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; ++i) {
    v[i] = float(beta2 * v[i] + (1 - beta2) * (double(g[i]) * g[i] + 1e-30));
    g[i] = float(g[i] / std::sqrt(double(v[i])));
  }
}

void CpuBackend::adafactor_apply(float* x, float* m, const float* u, i64 n, double momentum, double step, double decay) {
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; ++i) {
    m[i] = float(momentum * m[i] + step * u[i]);
    x[i] = float(x[i] - m[i] - decay * x[i]);
  }
}

void CpuBackend::embedding_fwd_slice(const std::int32_t* tokens, const float* E, i64 first, i64 rows, float* x, i64 N,
                                     i64 D) {
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) {
    const i64 t = tokens[n] - first;
    float* dst = x + n * D;
    if (t >= 0 && t < rows) std::memcpy(dst, E + t * D, sizeof(float) * std::size_t(D));
    else std::memset(dst, 0, sizeof(float) * std::size_t(D));
  }
}

void CpuBackend::embedding_bwd_acc_slice(const std::int32_t* tokens, const float* dx, float* dE, i64 first, i64 rows,
                                         i64 N, i64 D) {
  for (i64 n = 0; n < N; ++n) {  // token order: a row hit twice sums in a fixed order
    const i64 t = tokens[n] - first;
    if (t < 0 || t >= rows) continue;
    float* dst = dE + t * D;
    const float* src = dx + n * D;
#pragma omp simd
    for (i64 d = 0; d < D; ++d) dst[d] += src[d];
  }
}

void CpuBackend::row_max(const float* logits, i64 N, i64 V, float* out) {
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) {
    const float* row = logits + n * V;
    float m = row[0];
    for (i64 v = 1; v < V; ++v) m = std::max(m, row[v]);
    out[n] = m;
  }
}

void CpuBackend::logit_stats(const float* logits, i64 b, i64 V, std::int32_t* argmax, float* max, double* log_z) {
  for (i64 r = 0; r < b; ++r) {
    const float* row = logits + r * V;
    float mx = row[0];
    std::int32_t arg = 0;
    for (i64 v = 1; v < V; ++v)
      if (row[v] > mx) mx = row[v], arg = std::int32_t(v);
    double z = 0;
    for (i64 v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
    argmax[r] = arg;
    max[r] = mx;
    log_z[r] = mx + std::log(z);
  }
}

void CpuBackend::top_k(const float* logits, i64 V, i64 k, float* values, std::int32_t* ids) {
  thread_local std::vector<std::pair<float, std::int32_t>> cand;
  cand.resize(std::size_t(V));
  for (i64 v = 0; v < V; ++v) cand[std::size_t(v)] = {logits[v], std::int32_t(v)};
  const auto by_value = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  if (k < V) std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), by_value);
  else std::sort(cand.begin(), cand.end(), by_value);
  for (i64 i = 0; i < k; ++i) values[i] = cand[std::size_t(i)].first, ids[i] = cand[std::size_t(i)].second;
}

void CpuBackend::xent_partials(const float* logits, const std::int32_t* targets, i64 first, const float* mx,
                               double* part, i64 N, i64 V) {
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) {
    const float* row = logits + n * V;
    double s = 0;
    for (i64 v = 0; v < V; ++v) s += std::exp(double(row[v]) - mx[n]);
    const i64 t = targets[n] - first;
    part[2 * n] = s;
    part[2 * n + 1] = t >= 0 && t < V ? double(row[t]) : 0.0;
  }
}

void CpuBackend::xent_finish(const float* logits, const std::int32_t* targets, i64 first, const float* mx,
                             const double* part, float* nll, float* log_z, float* dlogits, float z_coef, float grad_scale,
                             i64 N, i64 V) {
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < N; ++n) {
    const double lz = double(mx[n]) + std::log(part[2 * n]);
    nll[n] = float(lz - part[2 * n + 1]);
    log_z[n] = float(lz);
    if (dlogits) {
      const float* row = logits + n * V;
      float* drow = dlogits + n * V;
      const double pscale = double(grad_scale) * (1.0 + 2.0 * z_coef * lz);
      for (i64 v = 0; v < V; ++v) drow[v] = float(pscale * std::exp(double(row[v]) - lz));
      const i64 t = targets[n] - first;
      if (t >= 0 && t < V) drow[t] -= grad_scale;
    }
  }
}

void CpuBackend::quantize_bf16(const float* w, std::uint16_t* out, i64 n) {
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; ++i) out[i] = to_bf16(w[i]);
}

void CpuBackend::store_kv_rows(const float* src, i64 ld_src, void* dst, KvFormat format, i64 ld_dst, i64 rows,
                               i64 cols) {
  // one thread: a decode step stores one row of 2K per sequence and layer, a prompt T rows
  if (format == KvFormat::kF32) {
    copy_2d_on_device(dst, sizeof(float) * std::size_t(ld_dst), src, sizeof(float) * std::size_t(ld_src),
                      sizeof(float) * std::size_t(cols), std::size_t(rows));
    return;
  }
  auto* out = static_cast<std::uint16_t*>(dst);
  for (i64 r = 0; r < rows; ++r)
    for (i64 c = 0; c < cols; ++c) out[r * ld_dst + c] = to_bf16(src[r * ld_src + c]);
}

void CpuBackend::quantize_int8_rows(const float* w, i64 rows, i64 cols, std::int8_t* q, float* scales) {
#pragma omp parallel for schedule(static)
  for (i64 r = 0; r < rows; ++r) {
    float mx = 0.0f;
    for (i64 c = 0; c < cols; ++c) mx = std::max(mx, std::abs(w[r * cols + c]));
    const float scale = mx > 0 ? mx / 127.0f : 1.0f;
    scales[r] = scale;
    for (i64 c = 0; c < cols; ++c) q[r * cols + c] = std::int8_t(std::lround(std::clamp(w[r * cols + c] / scale, -127.0f, 127.0f)));
  }
}

void CpuBackend::stored_to_product_layout(void* w, WeightFormat format, i64 rows, i64 cols) {
  if (!stored_avx512_available() || format == WeightFormat::kF32) return;  // read as stored
  pack_panels(w, rows, cols * (format == WeightFormat::kBF16 ? 2 : 1));   // what its kernels read
}

}  // namespace palm
