// Causal multi-query attention on CUDA, fused (FlashAttention-style): no [T, T] matrix in
// memory, the forward keeps each query row's log-sum-exp and the backward recomputes the
// probabilities from it.
//
// As in the CPU backend, the H query heads of a sequence share one K/V head, so its
// queries are one matrix Q [T*H, K] (row R = t*H + h, position t = R / H). A block takes a
// tile of consecutive query rows (all heads of a few positions) and streams the key/value
// tiles they may see past them: each K/V tile is read once per query tile, not once per
// head. The backward is two kernels so that every output row has one owner (no atomics:
// the same bits every run): one per query tile for dQ, one per key tile for dK and dV,
// which walks every query tile that sees its keys, in order.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_backend_impl.cuh"

namespace palm::cuda {
namespace {

struct Shape {
  i64 T, H, K, RT;  // RT = T * H query rows per sequence
  int tile;         // query rows and keys per tile
  float scale;
};

__device__ inline float dot_padded(const float* a, const float* b, i64 K) {
  float s = 0.0f;
  for (i64 e = 0; e < K; ++e) s += a[e] * b[e];
  return s;
}

// Loads `tile` rows (from row0, at stride ld; rows >= limit as zeros) into dst at stride dst_ld.
__device__ inline void load_rows(const float* src, i64 ld, i64 row0, i64 limit, i64 K, int tile, float* dst,
                                 i64 dst_ld) {
  for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) {
    const i64 r = idx / K, e = idx % K;
    dst[r * dst_ld + e] = row0 + r < limit ? src[(row0 + r) * ld + e] : 0.0f;
  }
}

// Threads per row for the row statistics: a power of two dividing 32, so a row's group
// lies inside one warp.
__device__ inline int group_width(int tile) { return min(32, int(blockDim.x) / tile); }

__device__ inline float group_max(float v, int G) {
  for (int o = G / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ inline float group_sum(float v, int G) {
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void flash_forward(const float* q, const float* k, const float* v, i64 ld_kv, float* lse, float* o,
                              Shape s) {
  extern __shared__ float sm[];
  const int tile = s.tile;
  const i64 K = s.K, KP = K + 1;  // padded rows: threads reading different rows hit different banks
  float* Qs = sm;
  float* Ks = Qs + tile * KP;
  float* Vs = Ks + tile * KP;
  float* Os = Vs + tile * K;
  float* S = Os + tile * K;
  float* m = S + tile * tile;
  float* l = m + tile;
  float* alpha = l + tile;
  const i64 b = blockIdx.y, R0 = i64(blockIdx.x) * tile;
  const float* qb = q + b * s.RT * K;
  const float* kb = k + b * s.T * ld_kv;
  const float* vb = v + b * s.T * ld_kv;
  load_rows(qb, K, R0, s.RT, K, tile, Qs, KP);
  for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) Os[idx] = 0.0f;
  if (int(threadIdx.x) < tile) m[threadIdx.x] = -INFINITY, l[threadIdx.x] = 0.0f;
  const i64 t_last = (min(R0 + tile, s.RT) - 1) / s.H;
  const int G = group_width(tile);
  for (i64 j0 = 0; j0 <= t_last; j0 += tile) {
    __syncthreads();  // the previous tile's readers are done
    load_rows(kb, ld_kv, j0, s.T, K, tile, Ks, KP);
    load_rows(vb, ld_kv, j0, s.T, K, tile, Vs, K);
    __syncthreads();
    for (int idx = threadIdx.x; idx < tile * tile; idx += blockDim.x) {
      const int r = idx / tile, c = idx % tile;
      const i64 R = R0 + r, j = j0 + c;
      const bool visible = R < s.RT && j < s.T && j <= R / s.H;
      S[idx] = visible ? s.scale * dot_padded(Qs + r * KP, Ks + c * KP, K) : -INFINITY;
    }
    __syncthreads();
    const int r = threadIdx.x / G, sub = threadIdx.x % G;
    if (r < tile) {  // online softmax: rescale what was summed so far to the new maximum
      float mx = -INFINITY;
      for (int c = sub; c < tile; c += G) mx = fmaxf(mx, S[r * tile + c]);
      mx = group_max(mx, G);
      const float m_old = m[r], m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int c = sub; c < tile; c += G) {
        const float p = m_new == -INFINITY ? 0.0f : expf(S[r * tile + c] - m_new);
        S[r * tile + c] = p;
        sum += p;
      }
      sum = group_sum(sum, G);
      if (sub == 0) {
        const float a = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
        alpha[r] = a;
        l[r] = l[r] * a + sum;
        m[r] = m_new;
      }
    }
    __syncthreads();
    for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) {
      const i64 rr = idx / K, e = idx % K;
      float acc = Os[idx] * alpha[rr];
      for (int c = 0; c < tile; ++c) acc += S[rr * tile + c] * Vs[c * K + e];
      Os[idx] = acc;
    }
  }
  __syncthreads();
  for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) {
    const i64 r = idx / K, e = idx % K;
    if (R0 + r < s.RT) o[(b * s.RT + R0 + r) * K + e] = Os[idx] / l[r];
  }
  if (lse && int(threadIdx.x) < tile && R0 + threadIdx.x < s.RT)  // null: inference keeps nothing
    lse[b * s.RT + R0 + threadIdx.x] = m[threadIdx.x] + logf(l[threadIdx.x]);
}

// D[R] = sum_e dO[R, e] O[R, e]: the softmax backward's row term, one warp a row.
__global__ void row_dots(const float* dout, const float* o, i64 rows, i64 K, float* D) {
  const i64 R = (i64(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (R >= rows) return;
  float acc = 0.0f;
  for (i64 e = lane; e < K; e += 32) acc += dout[R * K + e] * o[R * K + e];
  acc = warp_sum(acc);
  if (lane == 0) D[R] = acc;
}

// Both backward kernels: the tile's per-row log-sum-exp and D (zeros past the end).
__device__ inline void load_row_stats(const float* lse, const float* D, i64 first, i64 R0, i64 RT, int tile,
                                      float* lse_s, float* D_s) {
  if (int(threadIdx.x) < tile) {
    const bool in = R0 + threadIdx.x < RT;
    lse_s[threadIdx.x] = in ? lse[first + R0 + threadIdx.x] : 0.0f;
    D_s[threadIdx.x] = in ? D[first + R0 + threadIdx.x] : 0.0f;
  }
}

// P and dS = P (dP - D) of query row R0 + r against key j0 + c, recomputed from the
// log-sum-exp; both 0 where the key is not visible (causal) or past the end.
__device__ inline void prob_and_dscore(const Shape& s, i64 R0, i64 j0, int r, int c, const float* Qs, const float* dOs,
                                       const float* Ks, const float* Vs, const float* lse_s, const float* D_s,
                                       float* p, float* ds) {
  const i64 R = R0 + r, j = j0 + c, KP = s.K + 1;
  *p = 0.0f;
  *ds = 0.0f;
  if (R < s.RT && j < s.T && j <= R / s.H) {
    *p = expf(s.scale * dot_padded(Qs + r * KP, Ks + c * KP, s.K) - lse_s[r]);
    *ds = *p * (dot_padded(dOs + r * KP, Vs + c * KP, s.K) - D_s[r]);
  }
}

// dQ for one query tile: sum over visible keys of dS K, dS = P (dP - D), P from the lse.
__global__ void flash_backward_dq(const float* dout, const float* q, const float* k, const float* v, i64 ld_kv,
                                  const float* lse, const float* D, float* dq, Shape s) {
  extern __shared__ float sm[];
  const int tile = s.tile;
  const i64 K = s.K, KP = K + 1;
  float* Qs = sm;
  float* dOs = Qs + tile * KP;
  float* Ks = dOs + tile * KP;
  float* Vs = Ks + tile * KP;
  float* dQs = Vs + tile * KP;
  float* dS = dQs + tile * K;
  float* lse_s = dS + tile * tile;
  float* D_s = lse_s + tile;
  const i64 b = blockIdx.y, R0 = i64(blockIdx.x) * tile;
  const float* kb = k + b * s.T * ld_kv;
  const float* vb = v + b * s.T * ld_kv;
  load_rows(q + b * s.RT * K, K, R0, s.RT, K, tile, Qs, KP);
  load_rows(dout + b * s.RT * K, K, R0, s.RT, K, tile, dOs, KP);
  for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) dQs[idx] = 0.0f;
  load_row_stats(lse, D, b * s.RT, R0, s.RT, tile, lse_s, D_s);
  const i64 t_last = (min(R0 + tile, s.RT) - 1) / s.H;
  for (i64 j0 = 0; j0 <= t_last; j0 += tile) {
    __syncthreads();
    load_rows(kb, ld_kv, j0, s.T, K, tile, Ks, KP);
    load_rows(vb, ld_kv, j0, s.T, K, tile, Vs, KP);
    __syncthreads();
    for (int idx = threadIdx.x; idx < tile * tile; idx += blockDim.x) {
      float p;
      prob_and_dscore(s, R0, j0, idx / tile, idx % tile, Qs, dOs, Ks, Vs, lse_s, D_s, &p, &dS[idx]);
    }
    __syncthreads();
    for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) {
      const i64 r = idx / K, e = idx % K;
      float acc = dQs[idx];
      for (int c = 0; c < tile; ++c) acc += dS[r * tile + c] * Ks[c * KP + e];
      dQs[idx] = acc;
    }
  }
  __syncthreads();
  for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) {
    const i64 r = idx / K, e = idx % K;
    if (R0 + r < s.RT) dq[(b * s.RT + R0 + r) * K + e] = s.scale * dQs[idx];
  }
}

// dK and dV for one key tile: every query tile that sees these keys, in order.
__global__ void flash_backward_dkv(const float* dout, const float* q, const float* k, const float* v, i64 ld_kv,
                                   const float* lse, const float* D, float* dk, float* dv, i64 ld_dv, Shape s) {
  extern __shared__ float sm[];
  const int tile = s.tile;
  const i64 K = s.K, KP = K + 1;
  float* Ks = sm;
  float* Vs = Ks + tile * KP;
  float* Qs = Vs + tile * KP;
  float* dOs = Qs + tile * KP;
  float* dKs = dOs + tile * KP;
  float* dVs = dKs + tile * K;
  float* P = dVs + tile * K;
  float* dS = P + tile * tile;
  float* lse_s = dS + tile * tile;
  float* D_s = lse_s + tile;
  const i64 b = blockIdx.y, j0 = i64(blockIdx.x) * tile;
  load_rows(k + b * s.T * ld_kv, ld_kv, j0, s.T, K, tile, Ks, KP);
  load_rows(v + b * s.T * ld_kv, ld_kv, j0, s.T, K, tile, Vs, KP);
  for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) dKs[idx] = 0.0f, dVs[idx] = 0.0f;
  const float* qb = q + b * s.RT * K;
  const float* db = dout + b * s.RT * K;
  for (i64 R0 = (j0 * s.H) / tile * tile; R0 < s.RT; R0 += tile) {  // the first row that sees key j0 is j0*H
    __syncthreads();
    load_rows(qb, K, R0, s.RT, K, tile, Qs, KP);
    load_rows(db, K, R0, s.RT, K, tile, dOs, KP);
    load_row_stats(lse, D, b * s.RT, R0, s.RT, tile, lse_s, D_s);
    __syncthreads();
    for (int idx = threadIdx.x; idx < tile * tile; idx += blockDim.x)
      prob_and_dscore(s, R0, j0, idx / tile, idx % tile, Qs, dOs, Ks, Vs, lse_s, D_s, &P[idx], &dS[idx]);
    __syncthreads();
    for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) {
      const i64 c = idx / K, e = idx % K;
      float dvv = dVs[idx], dkk = dKs[idx];
      for (int r = 0; r < tile; ++r) {
        dvv += P[r * tile + c] * dOs[r * KP + e];
        dkk += dS[r * tile + c] * Qs[r * KP + e];
      }
      dVs[idx] = dvv;
      dKs[idx] = dkk;
    }
  }
  __syncthreads();
  for (i64 idx = threadIdx.x; idx < i64(tile) * K; idx += blockDim.x) {
    const i64 c = idx / K, e = idx % K, j = j0 + c;
    if (j < s.T) {
      dk[(b * s.T + j) * K + e] = s.scale * dKs[idx];
      dv[(b * s.T + j) * ld_dv + e] = dVs[idx];
    }
  }
}

// One (sequence, head) per block: scores against the cached keys in a scratch row,
// softmax, then the weighted sum of the cached values.
// A cached element as fp32: the cache holds fp32 or bf16 (nearest even) rows.
__device__ inline float cached(const float* c, i64 i) { return c[i]; }
__device__ inline float cached(const std::uint16_t* c, i64 i) { return bf16_bits_to_float(c[i]); }

template <typename T>
__global__ void decode_attention(const float* q, const void* const* cache, i64 ld, const std::int64_t* lens,
                                 float* o, i64 H, i64 K, float* scores, i64 max_len, float scale) {
  __shared__ float red[32];
  const i64 i = blockIdx.x / H, h = blockIdx.x % H, n = lens[i];
  const T* kc = static_cast<const T*>(cache[i]);
  const float* qv = q + (i * H + h) * K;
  float* sc = scores + i64(blockIdx.x) * max_len;
  float mx = -INFINITY;
  for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
    float dot = 0.0f;
    for (i64 e = 0; e < K; ++e) dot += qv[e] * cached(kc, j * ld + e);
    const float sj = scale * dot;
    sc[j] = sj;
    mx = fmaxf(mx, sj);
  }
  mx = block_max(mx, red);
  float sum = 0.0f;
  for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
    const float p = expf(sc[j] - mx);
    sc[j] = p;
    sum += p;
  }
  sum = block_sum(sum, red);  // its barriers also publish sc[] to the whole block
  for (i64 e = threadIdx.x; e < K; e += blockDim.x) {
    float acc = 0.0f;
    for (i64 j = 0; j < n; ++j) acc += sc[j] * cached(kc, j * ld + K + e);
    o[(i * H + h) * K + e] = acc / sum;
  }
}

std::size_t forward_floats(i64 K, int tile) { return std::size_t(2 * tile * (K + 1) + 2 * tile * K + tile * tile + 3 * tile); }
std::size_t dq_floats(i64 K, int tile) { return std::size_t(4 * tile * (K + 1) + tile * K + tile * tile + 2 * tile); }
std::size_t dkv_floats(i64 K, int tile) { return std::size_t(4 * tile * (K + 1) + 2 * tile * K + 2 * tile * tile + 2 * tile); }

// The largest tile whose biggest kernel fits the device's shared memory per block.
int pick_tile(i64 K, int max_shared) {
  for (int tile : {32, 16, 8, 4, 2, 1}) {
    const std::size_t need = std::max({forward_floats(K, tile), dq_floats(K, tile), dkv_floats(K, tile)}) * 4;
    if (need <= std::size_t(max_shared)) return tile;
  }
  fail(str_cat("attention on CUDA: head_dim ", K, " needs more shared memory than this GPU's ", max_shared, " bytes"));
}

template <typename Kernel>
void allow_shared(Kernel kernel, std::size_t bytes) {
  PALM_CUDA_OK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

}  // namespace

void CudaBackend::attention_fwd(const float* q, const float* k, const float* v, i64 ld_kv, float* saved, float* o,
                                i64 B, i64 T, i64 H, i64 K) {
  if (B == 0 || T == 0) return;
  const int tile = pick_tile(K, max_shared_);
  const Shape s{T, H, K, T * H, tile, 1.0f / std::sqrt(float(K))};
  const std::size_t bytes = forward_floats(K, tile) * 4;
  allow_shared(flash_forward, bytes);
  flash_forward<<<dim3(unsigned((s.RT + tile - 1) / tile), unsigned(B)), kThreads, bytes, stream_>>>(q, k, v, ld_kv,
                                                                                                      saved, o, s);
  PALM_CUDA_LAUNCHED("flash_forward");
}

void CudaBackend::attention_bwd(const float* dout, const float* q, const float* k, const float* v, i64 ld_kv,
                                const float* o, const float* saved, float* dq, float* dk, float* dv, i64 ld_dv,
                                float* scratch, i64 scratch_floats, i64 B, i64 T, i64 H, i64 K) {
  if (B == 0 || T == 0) return;
  PALM_CHECK(scratch_floats >= B * T * H, "attention_bwd: scratch of ", scratch_floats, " floats, needs ", B * T * H);
  const int tile = pick_tile(K, max_shared_);
  const Shape s{T, H, K, T * H, tile, 1.0f / std::sqrt(float(K))};
  float* D = scratch;
  row_dots<<<grid_for(B * s.RT * 32), kThreads, 0, stream_>>>(dout, o, B * s.RT, K, D);
  PALM_CUDA_LAUNCHED("row_dots");
  const std::size_t dq_bytes = dq_floats(K, tile) * 4, dkv_bytes = dkv_floats(K, tile) * 4;
  allow_shared(flash_backward_dq, dq_bytes);
  allow_shared(flash_backward_dkv, dkv_bytes);
  flash_backward_dq<<<dim3(unsigned((s.RT + tile - 1) / tile), unsigned(B)), kThreads, dq_bytes, stream_>>>(
      dout, q, k, v, ld_kv, saved, D, dq, s);
  PALM_CUDA_LAUNCHED("flash_backward_dq");
  flash_backward_dkv<<<dim3(unsigned((T + tile - 1) / tile), unsigned(B)), kThreads, dkv_bytes, stream_>>>(
      dout, q, k, v, ld_kv, saved, D, dk, dv, ld_dv, s);
  PALM_CUDA_LAUNCHED("flash_backward_dkv");
}

void CudaBackend::attention_decode(const float* q, const void* const* cache, KvFormat format, i64 ld,
                                   const std::int64_t* lens, float* o, i64 b, i64 H, i64 K) {
  if (b == 0) return;
  const i64 max_len = std::max<i64>(1, *std::max_element(lens, lens + b));
  const auto* dcache = stage(cache, b, 2);
  const auto* dlens = stage(lens, b, 3);
  float* sc = scores_.as<float>(std::size_t(b * H * max_len));
  const float scale = 1.0f / std::sqrt(float(K));
  if (format == KvFormat::kBF16) {
    decode_attention<std::uint16_t><<<unsigned(b * H), kThreads, 0, stream_>>>(q, dcache, ld, dlens, o, H, K, sc,
                                                                               max_len, scale);
  } else {
    decode_attention<float><<<unsigned(b * H), kThreads, 0, stream_>>>(q, dcache, ld, dlens, o, H, K, sc, max_len, scale);
  }
  PALM_CUDA_LAUNCHED("decode_attention");
}

}  // namespace palm::cuda
