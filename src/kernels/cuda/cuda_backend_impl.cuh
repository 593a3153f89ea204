// The CUDA backend's class, shared by its sources (cuda_backend.cu: memory and GEMMs;
// cuda_rows.cu: row-wise ops; cuda_attention.cu; cuda_vectors.cu: optimizer, reductions,
// sampling, decode weights). Not included outside src/kernels/cuda/.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"

namespace palm::cuda {

// Device memory that grows on demand and is reused across calls (staged index arrays,
// bf16 operand copies, reduction partials). Growing frees the old buffer: cudaFree waits
// for queued work, so nothing in flight still reads it.
class Scratch {
 public:
  ~Scratch();
  void* get(std::size_t bytes);
  template <typename T>
  T* as(std::size_t count) { return static_cast<T*>(get(count * sizeof(T))); }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  std::string name() const override { return "cuda"; }
  void* allocate(std::size_t bytes) override;
  void deallocate(void* p, std::size_t bytes) override;
  void copy_to_device(void* dst, const void* src, std::size_t bytes) override;
  void copy_to_host(void* dst, const void* src, std::size_t bytes) override;
  void copy_on_device(void* dst, const void* src, std::size_t bytes) override;
  void memset_on_device(void* dst, int byte, std::size_t bytes) override;
  void discard(void* p, std::size_t bytes) override;
  void copy_2d_on_device(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch, std::size_t width,
                         std::size_t rows) override;
  void synchronize() override;
  bool host_visible() const override { return false; }
  double memory_available() const override;
  void gemm(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha, const float* A, i64 lda, const float* B,
            i64 ldb, float beta, float* C, i64 ldc) override;
  void gemm_bf16(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha, const float* A, i64 lda,
                 const float* B, i64 ldb, float beta, float* C, i64 ldc) override;
  void rows_times_stored(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales,
                         i64 N, float alpha, float beta, float* C) override;
  void embedding_fwd(const std::int32_t* tokens, const float* E, float* x, i64 N, i64 D) override;
  void embedding_bwd_acc(const std::int32_t* tokens, const float* dx, float* dE, i64 N, i64 D) override;
  void layernorm_fwd(const float* x, const float* scale, float* y, float* mean, float* rstd, i64 N, i64 D,
                     float eps) override;
  void layernorm_bwd_acc(const float* dy, const float* x, const float* scale, const float* mean, const float* rstd,
                         float* dx, float* dscale, i64 N, i64 D) override;
  void rope_fwd(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T, i64 heads, i64 K,
                float base) override;
  void rope_bwd(const float* dout, i64 ld_dout, float* din, i64 ld_din, i64 N, i64 T, i64 heads, i64 K,
                float base) override;
  void rope_fwd_at(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, const std::int32_t* positions,
                   i64 heads, i64 K, float base) override;
  void swiglu_fwd(const float* gate, const float* up, i64 ld_in, float* act, i64 N, i64 F) override;
  void swiglu_bwd(const float* dact, const float* gate, const float* up, i64 ld_in, float* dgate, float* dup,
                  i64 ld_out, i64 N, i64 F) override;
  void attention_fwd(const float* q, const float* k, const float* v, i64 ld_kv, float* saved, float* o, i64 B,
                     i64 T, i64 H, i64 K) override;
  i64 attention_saved_floats(i64 B, i64 T, i64 H) const override { return B * T * H; }  // log-sum-exp per row
  void attention_bwd(const float* dout, const float* q, const float* k, const float* v, i64 ld_kv, const float* o,
                     const float* saved, float* dq, float* dk, float* dv, i64 ld_dv, float* scratch,
                     i64 scratch_floats, i64 B, i64 T, i64 H, i64 K) override;
  i64 attention_bwd_scratch_floats(i64 B, i64 T, i64 H, i64 K) const override { return B * T * H; }  // rowsum(dO*O)
  void attention_decode(const float* q, const void* const* cache, KvFormat format, i64 ld, const std::int64_t* lens,
                        float* o, i64 b, i64 H, i64 K) override;
  void xent_fwd_bwd(float* logits, const std::int32_t* targets, float* nll, float* log_z, float* dlogits,
                    float z_coef, float grad_scale, i64 N, i64 V) override;
  void add(const float* a, const float* b, float* out, i64 n) override;
  void scale(float* x, float s, i64 n) override;
  double sum_squares(const float* x, i64 n) override;
  std::uint64_t hash_floats(const float* x, i64 n) override;
  void fill_normal(float* x, i64 rows, i64 cols, std::uint64_t seed, std::uint64_t stream, double stddev,
                   i64 global_cols, i64 row0, i64 col0, float constant) override;
  void adamw_update(float* x, const float* g, float* m, float* v, i64 n, double lr, double b1, double b2, double c1,
                    double c2, double eps, double wd) override;
  void adafactor_precondition(float* g, float* v, i64 n, double beta2) override;
  void adafactor_apply(float* x, float* m, const float* u, i64 n, double momentum, double step,
                       double decay) override;
  void embedding_fwd_slice(const std::int32_t* tokens, const float* E, i64 first, i64 rows, float* x, i64 N,
                           i64 D) override;
  void embedding_bwd_acc_slice(const std::int32_t* tokens, const float* dx, float* dE, i64 first, i64 rows, i64 N,
                               i64 D) override;
  void row_max(const float* logits, i64 N, i64 V, float* out) override;
  void xent_partials(const float* logits, const std::int32_t* targets, i64 first, const float* mx, double* part,
                     i64 N, i64 V) override;
  void xent_finish(const float* logits, const std::int32_t* targets, i64 first, const float* mx, const double* part,
                   float* nll, float* log_z, float* dlogits, float z_coef, float grad_scale, i64 N, i64 V) override;
  void logit_stats(const float* logits, i64 b, i64 V, std::int32_t* argmax, float* max, double* log_z) override;
  void top_k(const float* logits, i64 V, i64 k, float* values, std::int32_t* ids) override;
  void quantize_bf16(const float* w, std::uint16_t* out, i64 n) override;
  void store_kv_rows(const float* src, i64 ld_src, void* dst, KvFormat format, i64 ld_dst, i64 rows,
                     i64 cols) override;
  void quantize_int8_rows(const float* w, i64 rows, i64 cols, std::int8_t* q, float* scales) override;
  void stored_to_product_layout(void*, WeightFormat, i64, i64) override {}  // rows_times_stored reads rows as stored

  cudaStream_t stream() const { return stream_; }
  int max_shared_bytes() const { return max_shared_; }  // opt-in dynamic shared memory per block

  // Copies n host values into staging slot `slot` (one per index array an op takes at once).
  template <typename T>
  const T* stage(const T* host, i64 n, int slot) {
    T* d = stage_[slot].as<T>(std::size_t(n > 0 ? n : 1));
    if (n > 0) PALM_CUDA_OK(cudaMemcpyAsync(d, host, sizeof(T) * std::size_t(n), cudaMemcpyHostToDevice, stream_));
    return d;
  }

 private:
  // Rows of the embedding gradient, grouped by token: the positions of each distinct token
  // in token order (a host sort of the ids), so each dE row is summed by one block in order.
  void embedding_bwd_grouped(const std::int32_t* tokens, const float* dx, float* dE, i64 first, i64 rows, i64 N,
                             i64 D);
  void bf16_copy(const float* src, i64 rows, i64 cols, i64 ld, std::uint16_t* dst);

  int device_ = 0;
  int max_shared_ = 48 * 1024;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  Scratch stage_[4];
  Scratch bf16_a_, bf16_b_, partials_, scores_, sort_keys_, sort_vals_, sort_tmp_, sort_ids_;
  std::vector<std::int32_t> host_order_;
};

}  // namespace palm::cuda
