// Vector ops on CUDA: norms and hashes for the trainer's checks, the optimizer updates,
// sampling's statistics and top-k, decode weights (bf16/int8) and the few-row products
// against them.
#include <cub/device/device_radix_sort.cuh>

#include <vector>

#include "kernels/cuda/cuda_backend_impl.cuh"

namespace palm::cuda {
namespace {

constexpr i64 kSquaresChunk = 4096;  // as the CPU backend: partials per fixed chunk
constexpr i64 kHashChunk = i64(1) << 20;

__global__ void squares_per_chunk(const float* x, i64 n, double* part) {
  __shared__ double red[32];
  const i64 c = blockIdx.x, end = min(n, (c + 1) * kSquaresChunk);
  double s = 0;
  for (i64 i = c * kSquaresChunk + threadIdx.x; i < end; i += blockDim.x) s += double(x[i]) * x[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) part[c] = s;
}

__global__ void sum_in_one_block(const double* part, i64 n, double* out) {
  __shared__ double red[32];
  double s = 0;
  for (i64 i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) *out = s;
}

// The CPU backend's hash exactly: FNV-style over each chunk's words in order, one thread a chunk.
__global__ void hash_per_chunk(const std::uint32_t* words, i64 n, std::uint64_t* h) {
  const i64 c = i64(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c * kHashChunk >= n) return;
  std::uint64_t x = 0x9E3779B97F4A7C15ull ^ std::uint64_t(c);
  const i64 end = min(n, (c + 1) * kHashChunk);
  for (i64 i = c * kHashChunk; i < end; ++i) x = (x ^ words[i]) * 0x100000001B3ull;
  h[c] = x;
}

__global__ void adamw(float* x, const float* g, float* m, float* v, i64 n, double lr, double b1, double b2,
                      double c1, double c2, double eps, double wd) {
  PALM_CUDA_FOR(i, n) {
    m[i] = float(b1 * m[i] + (1 - b1) * g[i]);
    v[i] = float(b2 * v[i] + (1 - b2) * double(g[i]) * g[i]);
    const double upd = (m[i] / c1) / (sqrt(v[i] / c2) + eps);
    x[i] = float(x[i] - lr * (upd + wd * x[i]));
  }
}

__global__ void adafactor_pre(float* g, float* v, i64 n, double beta2) {
  PALM_CUDA_FOR(i, n) {
    v[i] = float(beta2 * v[i] + (1 - beta2) * (double(g[i]) * g[i] + 1e-30));
    g[i] = float(g[i] / sqrt(double(v[i])));
  }
}

__global__ void adafactor_app(float* x, float* m, const float* u, i64 n, double momentum, double step, double decay) {
  PALM_CUDA_FOR(i, n) {
    m[i] = float(momentum * m[i] + step * u[i]);
    x[i] = float(x[i] - m[i] - decay * x[i]);
  }
}

// Per row: first index of the maximum, the maximum, log sum exp in double.
__global__ void logit_stats_rows(const float* logits, i64 V, std::int32_t* argmax, float* max, double* log_z) {
  __shared__ float best_v[kThreads];
  __shared__ std::int32_t best_i[kThreads];
  __shared__ double red[32];
  const float* row = logits + i64(blockIdx.x) * V;
  float bv = -INFINITY;
  std::int32_t bi = 0x7fffffff;
  for (i64 v = threadIdx.x; v < V; v += blockDim.x)
    if (row[v] > bv) bv = row[v], bi = std::int32_t(v);  // ascending v: the first of equals stays
  best_v[threadIdx.x] = bv, best_i[threadIdx.x] = bi;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) {
      const float ov = best_v[threadIdx.x + s];
      const std::int32_t oi = best_i[threadIdx.x + s];
      if (ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x]))
        best_v[threadIdx.x] = ov, best_i[threadIdx.x] = oi;
    }
    __syncthreads();
  }
  const float mx = best_v[0];
  double z = 0;
  for (i64 v = threadIdx.x; v < V; v += blockDim.x) z += exp(double(row[v]) - mx);
  z = block_sum(z, red);
  if (threadIdx.x == 0) argmax[blockIdx.x] = best_i[0], max[blockIdx.x] = mx, log_z[blockIdx.x] = mx + log(z);
}

__global__ void iota_ids(std::int32_t* ids, i64 n) {
  PALM_CUDA_FOR(i, n) ids[i] = std::int32_t(i);
}

__global__ void to_bf16(const float* w, std::uint16_t* out, i64 n) {
  PALM_CUDA_FOR(i, n) out[i] = float_to_bf16_bits(w[i]);
}

__global__ void to_bf16_rows(const float* src, i64 ld_src, std::uint16_t* dst, i64 ld_dst, i64 rows, i64 cols) {
  PALM_CUDA_FOR(i, rows * cols) dst[i / cols * ld_dst + i % cols] = float_to_bf16_bits(src[i / cols * ld_src + i % cols]);
}

__global__ void int8_rows(const float* w, i64 cols, std::int8_t* q, float* scales) {
  __shared__ float red[32];
  const float* row = w + i64(blockIdx.x) * cols;
  float mx = 0.0f;
  for (i64 c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, fabsf(row[c]));
  mx = block_max(mx, red);
  const float scale = mx > 0 ? mx / 127.0f : 1.0f;
  if (threadIdx.x == 0) scales[blockIdx.x] = scale;
  for (i64 c = threadIdx.x; c < cols; c += blockDim.x)
    q[i64(blockIdx.x) * cols + c] = std::int8_t(roundf(fminf(fmaxf(row[c] / scale, -127.0f), 127.0f)));  // half away from 0, as lround
}

template <WeightFormat F>
__device__ inline float weight_at(const void* W, i64 i) {
  if constexpr (F == WeightFormat::kF32) return static_cast<const float*>(W)[i];
  else if constexpr (F == WeightFormat::kBF16) return bf16_bits_to_float(static_cast<const std::uint16_t*>(W)[i]);
  else return float(static_cast<const std::int8_t*>(W)[i]);
}

constexpr int kRowsPerPass = 8;  // rows of X sharing one read of a weight row

// One warp per weight row n: C[i, n] = alpha * scale[n] * X[i, :] . W[n, :] + beta * C[i, n].
template <WeightFormat F>
__global__ void rows_times_weight_rows(const float* X, i64 b, i64 K, const void* W, const float* scales, i64 N,
                                       float alpha, float beta, float* C) {
  const i64 n = (i64(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const float s = alpha * (scales ? scales[n] : 1.0f);
  for (i64 i0 = 0; i0 < b; i0 += kRowsPerPass) {
    const int rows = b - i0 < kRowsPerPass ? int(b - i0) : kRowsPerPass;
    float acc[kRowsPerPass] = {};
    for (i64 k = lane; k < K; k += 32) {
      const float w = weight_at<F>(W, n * K + k);
      for (int r = 0; r < rows; ++r) acc[r] += X[(i0 + r) * K + k] * w;
    }
    for (int r = 0; r < rows; ++r) {
      const float dot = warp_sum(acc[r]);
      if (lane == 0) {
        float* c = C + (i0 + r) * N + n;
        *c = s * dot + (beta == 0.0f ? 0.0f : beta * *c);
      }
    }
  }
}

}  // namespace

double CudaBackend::sum_squares(const float* x, i64 n) {
  if (n == 0) return 0;
  const i64 chunks = (n + kSquaresChunk - 1) / kSquaresChunk;
  auto* part = partials_.as<double>(std::size_t(chunks + 1));
  squares_per_chunk<<<unsigned(chunks), kThreads, 0, stream_>>>(x, n, part);
  PALM_CUDA_LAUNCHED("squares_per_chunk");
  sum_in_one_block<<<1, 1024, 0, stream_>>>(part, chunks, part + chunks);
  PALM_CUDA_LAUNCHED("sum_in_one_block");
  double total = 0;
  copy_to_host(&total, part + chunks, sizeof total);
  return total;
}

std::uint64_t CudaBackend::hash_floats(const float* x, i64 n) {
  const i64 chunks = (n + kHashChunk - 1) / kHashChunk;
  std::vector<std::uint64_t> h(static_cast<std::size_t>(chunks));
  if (chunks > 0) {
    auto* d = partials_.as<std::uint64_t>(std::size_t(chunks));
    hash_per_chunk<<<grid_for(chunks, 64), 64, 0, stream_>>>(reinterpret_cast<const std::uint32_t*>(x), n, d);
    PALM_CUDA_LAUNCHED("hash_per_chunk");
    copy_to_host(h.data(), d, h.size() * sizeof(std::uint64_t));
  }
  std::uint64_t all = 0xCBF29CE484222325ull;
  for (const auto v : h) all = (all ^ v) * 0x100000001B3ull;
  return all;
}

void CudaBackend::adamw_update(float* x, const float* g, float* m, float* v, i64 n, double lr, double b1, double b2,
                               double c1, double c2, double eps, double wd) {
  if (n == 0) return;
  adamw<<<grid_for(n), kThreads, 0, stream_>>>(x, g, m, v, n, lr, b1, b2, c1, c2, eps, wd);
  PALM_CUDA_LAUNCHED("adamw");
}

void CudaBackend::adafactor_precondition(float* g, float* v, i64 n, double beta2) {
  if (n == 0) return;
  adafactor_pre<<<grid_for(n), kThreads, 0, stream_>>>(g, v, n, beta2);
  PALM_CUDA_LAUNCHED("adafactor_pre");
}

void CudaBackend::adafactor_apply(float* x, float* m, const float* u, i64 n, double momentum, double step,
                                  double decay) {
  if (n == 0) return;
  adafactor_app<<<grid_for(n), kThreads, 0, stream_>>>(x, m, u, n, momentum, step, decay);
  PALM_CUDA_LAUNCHED("adafactor_app");
}

void CudaBackend::logit_stats(const float* logits, i64 b, i64 V, std::int32_t* argmax, float* max, double* log_z) {
  if (b == 0) return;
  logit_stats_rows<<<unsigned(b), kThreads, 0, stream_>>>(logits, V, argmax, max, log_z);
  PALM_CUDA_LAUNCHED("logit_stats_rows");
}

// A stable radix sort of (logit, id) pairs by logit, descending: equal logits keep their
// ascending ids, which is the contract's tie rule.
void CudaBackend::top_k(const float* logits, i64 V, i64 k, float* values, std::int32_t* ids) {
  if (V == 0 || k == 0) return;
  auto* keys_out = sort_keys_.as<float>(std::size_t(V));
  auto* ids_in = sort_ids_.as<std::int32_t>(std::size_t(V));
  auto* ids_out = sort_vals_.as<std::int32_t>(std::size_t(V));
  iota_ids<<<grid_for(V), kThreads, 0, stream_>>>(ids_in, V);
  PALM_CUDA_LAUNCHED("iota_ids");
  std::size_t temp_bytes = 0;
  PALM_CUDA_OK(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, logits, keys_out, ids_in, ids_out,
                                                         int(V), 0, 32, stream_));
  void* temp = sort_tmp_.get(temp_bytes);
  PALM_CUDA_OK(cub::DeviceRadixSort::SortPairsDescending(temp, temp_bytes, logits, keys_out, ids_in, ids_out, int(V),
                                                         0, 32, stream_));
  copy_on_device(values, keys_out, sizeof(float) * std::size_t(k));
  copy_on_device(ids, ids_out, sizeof(std::int32_t) * std::size_t(k));
}

void CudaBackend::quantize_bf16(const float* w, std::uint16_t* out, i64 n) {
  if (n == 0) return;
  to_bf16<<<grid_for(n), kThreads, 0, stream_>>>(w, out, n);
  PALM_CUDA_LAUNCHED("to_bf16");
}

void CudaBackend::store_kv_rows(const float* src, i64 ld_src, void* dst, KvFormat format, i64 ld_dst, i64 rows,
                                i64 cols) {
  if (rows == 0 || cols == 0) return;
  if (format == KvFormat::kF32) {
    copy_2d_on_device(dst, sizeof(float) * std::size_t(ld_dst), src, sizeof(float) * std::size_t(ld_src),
                      sizeof(float) * std::size_t(cols), std::size_t(rows));
    return;
  }
  to_bf16_rows<<<grid_for(rows * cols), kThreads, 0, stream_>>>(src, ld_src, static_cast<std::uint16_t*>(dst), ld_dst,
                                                                rows, cols);
  PALM_CUDA_LAUNCHED("to_bf16_rows");
}

void CudaBackend::quantize_int8_rows(const float* w, i64 rows, i64 cols, std::int8_t* q, float* scales) {
  if (rows == 0) return;
  int8_rows<<<unsigned(rows), kThreads, 0, stream_>>>(w, cols, q, scales);
  PALM_CUDA_LAUNCHED("int8_rows");
}

void CudaBackend::rows_times_stored(const float* X, i64 b, i64 K, const void* W, WeightFormat format,
                                    const float* scales, i64 N, float alpha, float beta, float* C) {
  if (b == 0 || N == 0) return;
  const unsigned grid = grid_for(N * 32);
  switch (format) {
    case WeightFormat::kF32:
      rows_times_weight_rows<WeightFormat::kF32><<<grid, kThreads, 0, stream_>>>(X, b, K, W, nullptr, N, alpha, beta, C);
      break;
    case WeightFormat::kBF16:
      rows_times_weight_rows<WeightFormat::kBF16><<<grid, kThreads, 0, stream_>>>(X, b, K, W, nullptr, N, alpha, beta, C);
      break;
    case WeightFormat::kInt8:
      rows_times_weight_rows<WeightFormat::kInt8><<<grid, kThreads, 0, stream_>>>(X, b, K, W, scales, N, alpha, beta, C);
      break;
  }
  PALM_CUDA_LAUNCHED("rows_times_weight_rows");
}

}  // namespace palm::cuda
