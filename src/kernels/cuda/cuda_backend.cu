// The CUDA backend's device, memory and GEMMs (cuBLAS), and the host-generated
// initialization (the same draws as the CPU backend, so a model starts identical on both).
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "base/rng.h"
#include "kernels/cuda/cuda_backend_impl.cuh"

namespace palm {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver"/"no device" error
    return 0;
  }
  return n;
}

std::vector<DeviceInfo> cuda_devices(std::string* why_not) {
  std::vector<DeviceInfo> out;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    if (why_not) *why_not = str_cat("no CUDA device (", cudaGetErrorString(e), ")");
    return out;
  }
  if (n == 0 && why_not) *why_not = "no CUDA device";
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
    out.push_back({p.name, std::int64_t(p.totalGlobalMem),
                   str_cat("sm_", p.major, p.minor, ", ", p.multiProcessorCount, " SMs, ",
                           p.sharedMemPerBlockOptin / 1024, " KiB shared memory per block")});
  }
  return out;
}

std::unique_ptr<Backend> make_cuda_backend() {
  std::string why;
  const int n = int(cuda_devices(&why).size());
  PALM_CHECK(n > 0, "backend 'cuda': ", why, "; use --backend cpu");
  int device = 0;
  if (const char* s = std::getenv("PALM_CUDA_DEVICE")) {
    char* end = nullptr;
    const long d = std::strtol(s, &end, 10);
    PALM_CHECK(end != s && *end == '\0' && d >= 0 && d < n, "PALM_CUDA_DEVICE=", s, ": not a device index in [0, ",
               n, ")");
    device = int(d);
  } else if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
    // one GPU per rank on a host (mpirun): rank i takes device i mod the device count
    device = int(std::strtol(local, nullptr, 10) % n);
  }
  return std::make_unique<cuda::CudaBackend>(device);
}

namespace cuda {

#define PALM_BLAS_OK(expr)                                                              \
  do {                                                                                  \
    const cublasStatus_t palm_blas_st = (expr);                                         \
    if (palm_blas_st != CUBLAS_STATUS_SUCCESS)                                          \
      ::palm::fail(::palm::str_cat("cuBLAS: ", cublasGetStatusString(palm_blas_st), " (", #expr, ")")); \
  } while (0)

Scratch::~Scratch() {
  if (p_) cudaFree(p_);
}

void* Scratch::get(std::size_t bytes) {
  if (bytes > bytes_) {
    if (p_) PALM_CUDA_OK(cudaFree(p_));
    p_ = nullptr;
    bytes_ = 0;
    const cudaError_t e = cudaMalloc(&p_, bytes);
    PALM_CHECK(e == cudaSuccess, "CUDA: cannot allocate ", bytes, " bytes of scratch: ", cudaGetErrorString(e));
    bytes_ = bytes;
  }
  return p_;
}

CudaBackend::CudaBackend(int device) : device_(device) {
  PALM_CUDA_OK(cudaSetDevice(device));
  PALM_CUDA_OK(cudaDeviceGetAttribute(&max_shared_, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  PALM_CUDA_OK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  PALM_BLAS_OK(cublasCreate(&blas_));
  PALM_BLAS_OK(cublasSetStream(blas_, stream_));
  // The default math mode: fp32 GEMMs stay fp32 (TF32 only on request, which palm never
  // makes: the fp32 mode is the exact reference on every backend), bf16 GEMMs use the
  // tensor cores. (Pedantic mode would keep them off the tensor cores too.)
  PALM_BLAS_OK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (blas_) cublasDestroy(blas_);
  if (stream_) cudaStreamDestroy(stream_);
}

void* CudaBackend::allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  PALM_CUDA_OK(cudaSetDevice(device_));
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    std::size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail(str_cat("out of GPU memory: cannot allocate ", double(bytes) / (1 << 30), " GiB on device ", device_, " (",
                 double(free_b) / (1 << 30), " GiB free of ", double(total_b) / (1 << 30), ")"));
  }
  PALM_CUDA_OK(cudaMemsetAsync(p, 0, bytes, stream_));
  return p;
}

void CudaBackend::deallocate(void* p, std::size_t) {
  if (p) cudaFree(p);  // waits for queued work on the device
}

void CudaBackend::copy_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes) PALM_CUDA_OK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  // the source is pageable host memory: the call returns once it has been read
}

void CudaBackend::copy_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes) PALM_CUDA_OK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  PALM_CUDA_OK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy_on_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes && dst != src) PALM_CUDA_OK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::memset_on_device(void* dst, int byte, std::size_t bytes) {
  if (bytes) PALM_CUDA_OK(cudaMemsetAsync(dst, byte, bytes, stream_));
}

void CudaBackend::discard(void* p, std::size_t bytes) { memset_on_device(p, 0, bytes); }

void CudaBackend::copy_2d_on_device(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch,
                                    std::size_t width, std::size_t rows) {
  if (width && rows)
    PALM_CUDA_OK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyDeviceToDevice, stream_));
}

double CudaBackend::memory_available() const {
  std::size_t free_b = 0, total_b = 0;
  if (cudaSetDevice(device_) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return -1;
  return double(free_b);
}

void CudaBackend::synchronize() { PALM_CUDA_OK(cudaStreamSynchronize(stream_)); }

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets the
// operands swapped, each with the transpose flag the caller gave.
void CudaBackend::gemm(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha, const float* A, i64 lda,
                       const float* B, i64 ldb, float beta, float* C, i64 ldc) {
  if (M == 0 || N == 0) return;
  PALM_BLAS_OK(cublasSgemm_64(blas_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
                              K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

namespace {

// dst[r * cols + c] = bf16(src[r * ld + c]): the used block of an operand, packed.
__global__ void to_bf16_packed(const float* src, i64 rows, i64 cols, i64 ld, std::uint16_t* dst) {
  PALM_CUDA_FOR(i, rows * cols) {
    const i64 r = i / cols, c = i % cols;
    dst[i] = float_to_bf16_bits(src[r * ld + c]);
  }
}

}  // namespace

void CudaBackend::bf16_copy(const float* src, i64 rows, i64 cols, i64 ld, std::uint16_t* dst) {
  to_bf16_packed<<<grid_for(rows * cols), kThreads, 0, stream_>>>(src, rows, cols, ld, dst);
  PALM_CUDA_LAUNCHED("to_bf16_packed");
}

void CudaBackend::gemm_bf16(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha, const float* A, i64 lda,
                            const float* B, i64 ldb, float beta, float* C, i64 ldc) {
  if (M == 0 || N == 0) return;
  const i64 a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const i64 b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  auto* a16 = bf16_a_.as<std::uint16_t>(std::size_t(std::max<i64>(1, a_rows * a_cols)));
  auto* b16 = bf16_b_.as<std::uint16_t>(std::size_t(std::max<i64>(1, b_rows * b_cols)));
  if (K > 0) {
    bf16_copy(A, a_rows, a_cols, lda, a16);
    bf16_copy(B, b_rows, b_cols, ldb, b16);
  }
  PALM_BLAS_OK(cublasGemmEx_64(blas_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                               M, K, &alpha, b16, CUDA_R_16BF, std::max<i64>(1, b_cols), a16, CUDA_R_16BF,
                               std::max<i64>(1, a_cols), &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
}

// The CPU backend's draws exactly (base/rng's counter-based normal), made on the host in
// slices and copied: initialization happens once, and both backends start from the same bits.
void CudaBackend::fill_normal(float* x, i64 rows, i64 cols, std::uint64_t seed, std::uint64_t stream, double stddev,
                              i64 global_cols, i64 row0, i64 col0, float constant) {
  const i64 slice_rows = std::max<i64>(1, (i64(1) << 22) / std::max<i64>(1, cols));
  std::vector<float> host;
  for (i64 r0 = 0; r0 < rows; r0 += slice_rows) {
    const i64 nr = std::min(slice_rows, rows - r0);
    host.resize(std::size_t(nr * cols));
#pragma omp parallel for schedule(static)
    for (i64 j = 0; j < nr * cols; ++j) {
      const i64 r = r0 + j / cols, c = j % cols;
      host[std::size_t(j)] =
          stddev == 0 ? constant
                      : float(stddev * normal_at(seed, stream, std::uint64_t((row0 + r) * global_cols + col0 + c)));
    }
    copy_to_device(x + r0 * cols, host.data(), host.size() * sizeof(float));
    synchronize();  // `host` is refilled next
  }
}

}  // namespace cuda
}  // namespace palm
