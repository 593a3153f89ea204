// Row-wise ops on CUDA: embedding, LayerNorm, RoPE, SwiGLU, cross-entropy with z-loss,
// elementwise add/scale. One block per row where a row is reduced (fixed-order block
// reductions), a grid-stride loop where every element is independent.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/cuda/cuda_backend_impl.cuh"

namespace palm::cuda {
namespace {

// ---- embedding ------------------------------------------------------------------------

// x[n, :] = E[tokens[n] - first, :] when the token is in [first, first + rows), else 0
__global__ void embedding_rows(const std::int32_t* tokens, const float* E, i64 first, i64 rows, float* x, i64 D) {
  const i64 n = blockIdx.x;
  const i64 t = i64(tokens[n]) - first;
  float* dst = x + n * D;
  if (t >= 0 && t < rows) {
    const float* src = E + t * D;
    for (i64 d = threadIdx.x; d < D; d += blockDim.x) dst[d] = src[d];
  } else {
    for (i64 d = threadIdx.x; d < D; d += blockDim.x) dst[d] = 0.0f;
  }
}

// Block g adds the dx rows of distinct token uniq[g] (their positions pos[start[g]..start[g+1]),
// in token order) into its dE row: each row of dE is summed by one block, in a fixed order.
__global__ void embedding_grad_grouped(const std::int32_t* uniq, const std::int32_t* start, const std::int32_t* pos,
                                       const float* dx, float* dE, i64 first, i64 D) {
  const i64 g = blockIdx.x;
  float* row = dE + (i64(uniq[g]) - first) * D;
  for (i64 d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = row[d];
    for (i64 p = start[g]; p < start[g + 1]; ++p) acc += dx[i64(pos[p]) * D + d];
    row[d] = acc;
  }
}

// ---- LayerNorm --------------------------------------------------------------------------

__global__ void layernorm_rows(const float* x, const float* scale, float* y, float* mean, float* rstd, i64 D,
                               float eps) {
  __shared__ float red[32];
  const i64 n = blockIdx.x;
  const float* xr = x + n * D;
  float s = 0.0f;
  for (i64 d = threadIdx.x; d < D; d += blockDim.x) s += xr[d];
  const float m = block_sum(s, red) / float(D);
  float v = 0.0f;  // two passes: no cancellation for large means
  for (i64 d = threadIdx.x; d < D; d += blockDim.x) v += (xr[d] - m) * (xr[d] - m);
  const float r = rsqrtf(block_sum(v, red) / float(D) + eps);
  float* yr = y + n * D;
  for (i64 d = threadIdx.x; d < D; d += blockDim.x) yr[d] = (xr[d] - m) * r * scale[d];
  if (threadIdx.x == 0) mean[n] = m, rstd[n] = r;
}

// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * scale
__global__ void layernorm_dx_rows(const float* dy, const float* x, const float* scale, const float* mean,
                                  const float* rstd, float* dx, i64 D) {
  __shared__ float red[32];
  const i64 n = blockIdx.x;
  const float m = mean[n], r = rstd[n];
  const float *dyr = dy + n * D, *xr = x + n * D;
  float sg = 0.0f, sgx = 0.0f;
  for (i64 d = threadIdx.x; d < D; d += blockDim.x) {
    const float g = dyr[d] * scale[d];
    sg += g;
    sgx += g * (xr[d] - m) * r;
  }
  const float mg = block_sum(sg, red) / float(D);
  const float mgx = block_sum(sgx, red) / float(D);
  float* dxr = dx + n * D;
  for (i64 d = threadIdx.x; d < D; d += blockDim.x) {
    const float xhat = (xr[d] - m) * r;
    dxr[d] += r * (dyr[d] * scale[d] - mg - xhat * mgx);
  }
}

constexpr i64 kScaleRows = 256;  // rows per partial of the LayerNorm scale gradient

// part[c, d] = sum over rows c*kScaleRows.. of dy * xhat, in row order
__global__ void layernorm_dscale_partials(const float* dy, const float* x, const float* mean, const float* rstd,
                                          float* part, i64 N, i64 D) {
  const i64 c = blockIdx.y;
  const i64 d = i64(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float acc = 0.0f;
  const i64 n1 = min(N, (c + 1) * kScaleRows);
  for (i64 n = c * kScaleRows; n < n1; ++n) acc += dy[n * D + d] * (x[n * D + d] - mean[n]) * rstd[n];
  part[c * D + d] = acc;
}

__global__ void sum_partials_into(const float* part, i64 chunks, float* out, i64 D) {
  const i64 d = i64(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float acc = 0.0f;
  for (i64 c = 0; c < chunks; ++c) acc += part[c * D + d];
  out[d] += acc;
}

// ---- RoPE -------------------------------------------------------------------------------

// Pairs (i, i + K/2) of each head rotated by sign * t * base^(-2i/K), angle in double.
__global__ void rope_rotate(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T, i64 heads, i64 K,
                            float base, float sign, const std::int32_t* positions) {
  const i64 half = K / 2;
  PALM_CUDA_FOR(j, N * heads * half) {
    const i64 i = j % half, h = (j / half) % heads, n = j / (half * heads);
    const double t = positions ? double(positions[n]) : double(n % T);
    const double angle = t * pow(double(base), -2.0 * double(i) / double(K));
    const float cs = float(cos(angle)), sn = sign * float(sin(angle));
    const float* a = in + n * ld_in + h * K;
    float* b = out + n * ld_out + h * K;
    const float x1 = a[i], x2 = a[i + half];
    b[i] = x1 * cs - x2 * sn;
    b[i + half] = x2 * cs + x1 * sn;
  }
}

// ---- SwiGLU -----------------------------------------------------------------------------

__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_forward(const float* gate, const float* up, i64 ld_in, float* act, i64 N, i64 F) {
  PALM_CUDA_FOR(j, N * F) {
    const i64 n = j / F, f = j % F;
    const float g = gate[n * ld_in + f];
    act[j] = g * sigmoid(g) * up[n * ld_in + f];
  }
}

__global__ void swiglu_backward(const float* dact, const float* gate, const float* up, i64 ld_in, float* dgate,
                                float* dup, i64 ld_out, i64 N, i64 F) {
  PALM_CUDA_FOR(j, N * F) {
    const i64 n = j / F, f = j % F;
    const float g = gate[n * ld_in + f], u = up[n * ld_in + f], da = dact[j];
    const float s = sigmoid(g);
    dup[n * ld_out + f] = da * g * s;
    dgate[n * ld_out + f] = da * u * (s + g * s * (1.0f - s));
  }
}

// ---- cross-entropy ----------------------------------------------------------------------

// One row per block. dlogits may alias logits: each element is read before it is written
// by the same thread, and the target's logit is read before any write.
__global__ void xent_rows(float* logits, const std::int32_t* targets, float* nll, float* log_z, float* dlogits,
                          float z_coef, float grad_scale, i64 V) {
  __shared__ float red[32];
  __shared__ float target_logit;
  const i64 n = blockIdx.x;
  float* row = logits + n * V;
  float mx = -INFINITY;
  for (i64 v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, row[v]);
  mx = block_max(mx, red);
  float s = 0.0f;
  for (i64 v = threadIdx.x; v < V; v += blockDim.x) s += expf(row[v] - mx);
  const float lz = mx + logf(block_sum(s, red));
  const i64 target = targets[n];
  if (threadIdx.x == 0) target_logit = row[target];
  __syncthreads();
  if (threadIdx.x == 0) nll[n] = lz - target_logit, log_z[n] = lz;
  if (!dlogits) return;
  float* drow = dlogits + n * V;
  const float pscale = grad_scale * (1.0f + 2.0f * z_coef * lz);
  for (i64 v = threadIdx.x; v < V; v += blockDim.x) {
    float d = pscale * expf(row[v] - lz);
    if (v == target) d -= grad_scale;
    drow[v] = d;
  }
}

__global__ void row_max_rows(const float* logits, i64 V, float* out) {
  __shared__ float red[32];
  const float* row = logits + i64(blockIdx.x) * V;
  float m = -INFINITY;
  for (i64 v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, row[v]);
  m = block_max(m, red);
  if (threadIdx.x == 0) out[blockIdx.x] = m;
}

__global__ void xent_partial_rows(const float* logits, const std::int32_t* targets, i64 first, const float* mx,
                                  double* part, i64 V) {
  __shared__ double red[32];
  const i64 n = blockIdx.x;
  const float* row = logits + n * V;
  double s = 0;
  for (i64 v = threadIdx.x; v < V; v += blockDim.x) s += exp(double(row[v]) - mx[n]);
  s = block_sum(s, red);
  if (threadIdx.x == 0) {
    const i64 t = i64(targets[n]) - first;
    part[2 * n] = s;
    part[2 * n + 1] = t >= 0 && t < V ? double(row[t]) : 0.0;
  }
}

__global__ void xent_finish_rows(const float* logits, const std::int32_t* targets, i64 first, const float* mx,
                                 const double* part, float* nll, float* log_z, float* dlogits, float z_coef,
                                 float grad_scale, i64 V) {
  const i64 n = blockIdx.x;
  const double lz = double(mx[n]) + log(part[2 * n]);
  if (threadIdx.x == 0) nll[n] = float(lz - part[2 * n + 1]), log_z[n] = float(lz);
  if (!dlogits) return;
  const float* row = logits + n * V;
  float* drow = dlogits + n * V;
  const double pscale = double(grad_scale) * (1.0 + 2.0 * z_coef * lz);
  const i64 t = i64(targets[n]) - first;
  for (i64 v = threadIdx.x; v < V; v += blockDim.x) {
    float d = float(pscale * exp(double(row[v]) - lz));
    if (v == t) d -= grad_scale;
    drow[v] = d;
  }
}

// ---- elementwise ------------------------------------------------------------------------

__global__ void add_vectors(const float* a, const float* b, float* out, i64 n) {
  PALM_CUDA_FOR(i, n) out[i] = a[i] + b[i];
}

__global__ void scale_vector(float* x, float s, i64 n) {
  PALM_CUDA_FOR(i, n) x[i] *= s;
}

}  // namespace

void CudaBackend::embedding_fwd(const std::int32_t* tokens, const float* E, float* x, i64 N, i64 D) {
  embedding_fwd_slice(tokens, E, 0, std::numeric_limits<std::int32_t>::max(), x, N, D);
}

void CudaBackend::embedding_fwd_slice(const std::int32_t* tokens, const float* E, i64 first, i64 rows, float* x,
                                      i64 N, i64 D) {
  if (N == 0) return;
  const std::int32_t* t = stage(tokens, N, 0);
  embedding_rows<<<unsigned(N), kThreads, 0, stream_>>>(t, E, first, rows, x, D);
  PALM_CUDA_LAUNCHED("embedding_rows");
}

void CudaBackend::embedding_bwd_acc(const std::int32_t* tokens, const float* dx, float* dE, i64 N, i64 D) {
  embedding_bwd_grouped(tokens, dx, dE, 0, std::numeric_limits<std::int32_t>::max(), N, D);
}

void CudaBackend::embedding_bwd_acc_slice(const std::int32_t* tokens, const float* dx, float* dE, i64 first,
                                          i64 rows, i64 N, i64 D) {
  embedding_bwd_grouped(tokens, dx, dE, first, rows, N, D);
}

void CudaBackend::embedding_bwd_grouped(const std::int32_t* tokens, const float* dx, float* dE, i64 first, i64 rows,
                                        i64 N, i64 D) {
  // positions of the tokens inside the slice, stably sorted by token: each token's in order
  auto& pos = host_order_;
  pos.clear();
  for (i64 n = 0; n < N; ++n)
    if (i64(tokens[n]) - first >= 0 && i64(tokens[n]) - first < rows) pos.push_back(std::int32_t(n));
  if (pos.empty()) return;
  std::stable_sort(pos.begin(), pos.end(), [&](std::int32_t a, std::int32_t b) { return tokens[a] < tokens[b]; });
  std::vector<std::int32_t> uniq, start;
  for (std::size_t i = 0; i < pos.size(); ++i) {
    if (i == 0 || tokens[pos[i]] != tokens[pos[i - 1]]) uniq.push_back(tokens[pos[i]]), start.push_back(std::int32_t(i));
  }
  start.push_back(std::int32_t(pos.size()));
  const auto* du = stage(uniq.data(), i64(uniq.size()), 0);
  const auto* ds = stage(start.data(), i64(start.size()), 1);
  const auto* dp = stage(pos.data(), i64(pos.size()), 2);
  embedding_grad_grouped<<<unsigned(uniq.size()), kThreads, 0, stream_>>>(du, ds, dp, dx, dE, first, D);
  PALM_CUDA_LAUNCHED("embedding_grad_grouped");
  synchronize();  // the staged arrays are host vectors of this call
}

void CudaBackend::layernorm_fwd(const float* x, const float* scale, float* y, float* mean, float* rstd, i64 N, i64 D,
                                float eps) {
  if (N == 0) return;
  layernorm_rows<<<unsigned(N), kThreads, 0, stream_>>>(x, scale, y, mean, rstd, D, eps);
  PALM_CUDA_LAUNCHED("layernorm_rows");
}

void CudaBackend::layernorm_bwd_acc(const float* dy, const float* x, const float* scale, const float* mean,
                                    const float* rstd, float* dx, float* dscale, i64 N, i64 D) {
  if (N == 0) return;
  layernorm_dx_rows<<<unsigned(N), kThreads, 0, stream_>>>(dy, x, scale, mean, rstd, dx, D);
  PALM_CUDA_LAUNCHED("layernorm_dx_rows");
  const i64 chunks = (N + kScaleRows - 1) / kScaleRows;
  float* part = partials_.as<float>(std::size_t(chunks * D));
  layernorm_dscale_partials<<<dim3(grid_for(D), unsigned(chunks)), kThreads, 0, stream_>>>(dy, x, mean, rstd, part,
                                                                                          N, D);
  PALM_CUDA_LAUNCHED("layernorm_dscale_partials");
  sum_partials_into<<<grid_for(D), kThreads, 0, stream_>>>(part, chunks, dscale, D);
  PALM_CUDA_LAUNCHED("sum_partials_into");
}

void CudaBackend::rope_fwd(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T, i64 heads, i64 K,
                           float base) {
  rope_rotate<<<grid_for(N * heads * (K / 2)), kThreads, 0, stream_>>>(in, ld_in, out, ld_out, N, T, heads, K, base,
                                                                       1.0f, nullptr);
  PALM_CUDA_LAUNCHED("rope_rotate");
}

void CudaBackend::rope_bwd(const float* dout, i64 ld_dout, float* din, i64 ld_din, i64 N, i64 T, i64 heads, i64 K,
                           float base) {
  // the rotation is orthogonal: its transpose is the rotation by -angle
  rope_rotate<<<grid_for(N * heads * (K / 2)), kThreads, 0, stream_>>>(dout, ld_dout, din, ld_din, N, T, heads, K,
                                                                       base, -1.0f, nullptr);
  PALM_CUDA_LAUNCHED("rope_rotate");
}

void CudaBackend::rope_fwd_at(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N,
                              const std::int32_t* positions, i64 heads, i64 K, float base) {
  if (N == 0) return;
  const std::int32_t* p = stage(positions, N, 1);
  rope_rotate<<<grid_for(N * heads * (K / 2)), kThreads, 0, stream_>>>(in, ld_in, out, ld_out, N, 1, heads, K, base,
                                                                       1.0f, p);
  PALM_CUDA_LAUNCHED("rope_rotate");
}

void CudaBackend::swiglu_fwd(const float* gate, const float* up, i64 ld_in, float* act, i64 N, i64 F) {
  swiglu_forward<<<grid_for(N * F), kThreads, 0, stream_>>>(gate, up, ld_in, act, N, F);
  PALM_CUDA_LAUNCHED("swiglu_forward");
}

void CudaBackend::swiglu_bwd(const float* dact, const float* gate, const float* up, i64 ld_in, float* dgate,
                             float* dup, i64 ld_out, i64 N, i64 F) {
  swiglu_backward<<<grid_for(N * F), kThreads, 0, stream_>>>(dact, gate, up, ld_in, dgate, dup, ld_out, N, F);
  PALM_CUDA_LAUNCHED("swiglu_backward");
}

void CudaBackend::xent_fwd_bwd(float* logits, const std::int32_t* targets, float* nll, float* log_z, float* dlogits,
                               float z_coef, float grad_scale, i64 N, i64 V) {
  if (N == 0) return;
  const std::int32_t* t = stage(targets, N, 0);
  xent_rows<<<unsigned(N), kThreads * 2, 0, stream_>>>(logits, t, nll, log_z, dlogits, z_coef, grad_scale, V);
  PALM_CUDA_LAUNCHED("xent_rows");
}

void CudaBackend::row_max(const float* logits, i64 N, i64 V, float* out) {
  if (N == 0) return;
  row_max_rows<<<unsigned(N), kThreads, 0, stream_>>>(logits, V, out);
  PALM_CUDA_LAUNCHED("row_max_rows");
}

void CudaBackend::xent_partials(const float* logits, const std::int32_t* targets, i64 first, const float* mx,
                                double* part, i64 N, i64 V) {
  if (N == 0) return;
  const std::int32_t* t = stage(targets, N, 0);
  xent_partial_rows<<<unsigned(N), kThreads, 0, stream_>>>(logits, t, first, mx, part, V);
  PALM_CUDA_LAUNCHED("xent_partial_rows");
}

void CudaBackend::xent_finish(const float* logits, const std::int32_t* targets, i64 first, const float* mx,
                              const double* part, float* nll, float* log_z, float* dlogits, float z_coef,
                              float grad_scale, i64 N, i64 V) {
  if (N == 0) return;
  const std::int32_t* t = stage(targets, N, 0);
  xent_finish_rows<<<unsigned(N), kThreads, 0, stream_>>>(logits, t, first, mx, part, nll, log_z, dlogits, z_coef,
                                                          grad_scale, V);
  PALM_CUDA_LAUNCHED("xent_finish_rows");
}

void CudaBackend::add(const float* a, const float* b, float* out, i64 n) {
  if (n == 0) return;
  add_vectors<<<grid_for(n), kThreads, 0, stream_>>>(a, b, out, n);
  PALM_CUDA_LAUNCHED("add_vectors");
}

void CudaBackend::scale(float* x, float s, i64 n) {
  if (n == 0) return;
  scale_vector<<<grid_for(n), kThreads, 0, stream_>>>(x, s, n);
  PALM_CUDA_LAUNCHED("scale_vector");
}

}  // namespace palm::cuda
