// What every CUDA source of the backend shares: error checks that become palm::Error,
// launch shapes, and block reductions in a fixed order (the same result every run).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "base/check.h"
#include "kernels/backend.h"

namespace palm::cuda {

#define PALM_CUDA_OK(expr)                                                                             \
  do {                                                                                                 \
    const cudaError_t palm_cuda_err = (expr);                                                          \
    if (palm_cuda_err != cudaSuccess)                                                                  \
      ::palm::fail(::palm::str_cat("CUDA: ", cudaGetErrorString(palm_cuda_err), " (", #expr, ")"));   \
  } while (0)

// After a kernel launch: a bad configuration is reported at once, naming the kernel.
#define PALM_CUDA_LAUNCHED(name)                                                                      \
  do {                                                                                                \
    const cudaError_t palm_cuda_err = cudaGetLastError();                                             \
    if (palm_cuda_err != cudaSuccess)                                                                 \
      ::palm::fail(::palm::str_cat("CUDA: launching ", name, ": ", cudaGetErrorString(palm_cuda_err))); \
  } while (0)

constexpr int kThreads = 256;

// Blocks for n elements at kThreads each, at most 2^31 - 1 (kernels loop over the rest).
inline unsigned grid_for(i64 n, int threads = kThreads) {
  const i64 g = (n + threads - 1) / threads;
  return unsigned(g < 1 ? 1 : (g > 0x7fffffff ? 0x7fffffff : g));
}

// Grid-stride loop over [0, n) with 64-bit indices.
#define PALM_CUDA_FOR(i, n) \
  for (i64 i = i64(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += i64(blockDim.x) * gridDim.x)

template <typename T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. The order is fixed by the thread layout alone. `shared` holds 32 values.
template <typename T>
__device__ inline T block_sum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < warps ? shared[lane] : T(0);
  total = warp_sum(total);
  return total;
}
__device__ inline float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(m);
}

__device__ inline float bf16_bits_to_float(std::uint16_t b) { return __uint_as_float(std::uint32_t(b) << 16); }
// Round to nearest even, as the CPU backend's quantize_bf16 (NaN stays NaN).
__device__ inline std::uint16_t float_to_bf16_bits(float f) {
  const std::uint32_t bits = __float_as_uint(f);
  return std::uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace palm::cuda
