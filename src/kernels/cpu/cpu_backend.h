// The CPU backend: oneDNN's sgemm and matmul for matrix products, OpenMP-threaded and
// compiler-vectorized loops for everything else. Every reduction has a fixed order that
// does not depend on the thread count.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_matmul.h"

namespace palm {

class CpuBackend : public Backend {
 public:
  ~CpuBackend() override;
  std::string name() const override { return "cpu"; }
  void* allocate(std::size_t bytes) override;
  void deallocate(void* p, std::size_t bytes) override;
  void copy_to_device(void* dst, const void* src, std::size_t bytes) override;
  void copy_to_host(void* dst, const void* src, std::size_t bytes) override;
  void copy_on_device(void* dst, const void* src, std::size_t bytes) override;
  void memset_on_device(void* dst, int byte, std::size_t bytes) override;
  void discard(void* p, std::size_t bytes) override;
  void copy_2d_on_device(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch, std::size_t width,
                         std::size_t rows) override;
  void synchronize() override {}
  bool host_visible() const override { return true; }
  double memory_available() const override;
  void gemm(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha, const float* A,
            i64 lda, const float* B, i64 ldb, float beta, float* C, i64 ldc) override;
  void gemm_bf16(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha, const float* A,
                 i64 lda, const float* B, i64 ldb, float beta, float* C, i64 ldc) override;
  void rows_times_stored(const float* X, i64 b, i64 K, const void* W, WeightFormat format, const float* scales,
                         i64 N, float alpha, float beta, float* C) override;
  void embedding_fwd(const std::int32_t* tokens, const float* E, float* x, i64 N,
                     i64 D) override;
  void embedding_bwd_acc(const std::int32_t* tokens, const float* dx, float* dE, i64 N,
                         i64 D) override;
  void layernorm_fwd(const float* x, const float* scale, float* y, float* mean, float* rstd,
                     i64 N, i64 D, float eps) override;
  void layernorm_bwd_acc(const float* dy, const float* x, const float* scale,
                         const float* mean, const float* rstd, float* dx, float* dscale,
                         i64 N, i64 D) override;
  void rope_fwd(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T, i64 heads,
                i64 K, float base) override;
  void rope_bwd(const float* dout, i64 ld_dout, float* din, i64 ld_din, i64 N, i64 T,
                i64 heads, i64 K, float base) override;
  void rope_fwd_at(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N,
                   const std::int32_t* positions, i64 heads, i64 K, float base) override;
  void attention_decode(const float* q, const void* const* cache, KvFormat format, i64 ld, const std::int64_t* lens,
                        float* o, i64 b, i64 H, i64 K) override;
  void attention_decode_beside(const float* q, const void* const* cache, KvFormat format, i64 ld,
                               const std::int64_t* lens, float* o, i64 b, i64 H, i64 K, const StoredProduct& p) override;
  void swiglu_fwd(const float* gate, const float* up, i64 ld_in, float* act, i64 N,
                  i64 F) override;
  void swiglu_bwd(const float* dact, const float* gate, const float* up, i64 ld_in,
                  float* dgate, float* dup, i64 ld_out, i64 N, i64 F) override;
  void attention_fwd(const float* q, const float* k, const float* v, i64 ld_kv, float* probs,
                     float* o, i64 B, i64 T, i64 H, i64 K) override;
  i64 attention_saved_floats(i64 B, i64 T, i64 H) const override { return B * T * H * T; }  // the softmax
  void attention_bwd(const float* dout, const float* q, const float* k, const float* v,
                     i64 ld_kv, const float* o, const float* probs, float* dq, float* dk, float* dv,
                     i64 ld_dv, float* scratch, i64 scratch_floats, i64 B, i64 T, i64 H, i64 K) override;
  i64 attention_bwd_scratch_floats(i64 B, i64 T, i64 H, i64 K) const override;
  void xent_fwd_bwd(float* logits, const std::int32_t* targets, float* nll, float* log_z,
                    float* dlogits, float z_coef, float grad_scale, i64 N, i64 V) override;
  void add(const float* a, const float* b, float* out, i64 n) override;
  void scale(float* x, float s, i64 n) override;
  double sum_squares(const float* x, i64 n) override;
  std::uint64_t hash_floats(const float* x, i64 n) override;
  void fill_normal(float* x, i64 rows, i64 cols, std::uint64_t seed, std::uint64_t stream, double stddev,
                   i64 global_cols, i64 row0, i64 col0, float constant) override;
  void adamw_update(float* x, const float* g, float* m, float* v, i64 n, double lr, double b1, double b2, double c1,
                    double c2, double eps, double wd) override;
  void adafactor_precondition(float* g, float* v, i64 n, double beta2) override;
  void adafactor_apply(float* x, float* m, const float* u, i64 n, double momentum, double step, double decay) override;
  void embedding_fwd_slice(const std::int32_t* tokens, const float* E, i64 first, i64 rows, float* x, i64 N,
                           i64 D) override;
  void embedding_bwd_acc_slice(const std::int32_t* tokens, const float* dx, float* dE, i64 first, i64 rows, i64 N,
                               i64 D) override;
  void row_max(const float* logits, i64 N, i64 V, float* out) override;
  void logit_stats(const float* logits, i64 b, i64 V, std::int32_t* argmax, float* max, double* log_z) override;
  void top_k(const float* logits, i64 V, i64 k, float* values, std::int32_t* ids) override;
  void xent_partials(const float* logits, const std::int32_t* targets, i64 first, const float* mx, double* part, i64 N,
                     i64 V) override;
  void xent_finish(const float* logits, const std::int32_t* targets, i64 first, const float* mx, const double* part,
                   float* nll, float* log_z, float* dlogits, float z_coef, float grad_scale, i64 N, i64 V) override;
  void quantize_bf16(const float* w, std::uint16_t* out, i64 n) override;
  void store_kv_rows(const float* src, i64 ld_src, void* dst, KvFormat format, i64 ld_dst, i64 rows,
                     i64 cols) override;
  void quantize_int8_rows(const float* w, i64 rows, i64 cols, std::int8_t* q, float* scales) override;
  void stored_to_product_layout(void* w, WeightFormat format, i64 rows, i64 cols) override;

 protected:
  // A fresh mapping of `bytes` (zero, not resident until touched), or an error naming the size.
  static void* map_zeroed(std::size_t bytes);

 private:
  // Freed buffers kept for the next allocation of the same size (cpu_memory.cpp)
  std::mutex kept_mu_;
  std::multimap<std::size_t, void*> kept_;
  std::size_t kept_bytes_ = 0;
  void release_kept();
  // RoPE's cos/sin per position, shared by every call with the same base and head dim
  std::shared_ptr<const std::vector<float>> rope_table(float base, i64 K, i64 rows);
  std::mutex rope_mu_;
  std::shared_ptr<const std::vector<float>> rope_table_;
  float rope_base_ = 0;
  i64 rope_k_ = 0, rope_rows_ = 0;
  // bf16 operand copies reused across calls (no per-step allocation)
  std::mutex bf16_mu_;
  std::vector<std::uint16_t> bf16_a_, bf16_b_;
  MatmulCache matmul_;  // oneDNN matmul primitives by shape (fp32 and bf16)
};

std::unique_ptr<Backend> make_cpu_backend();

// The CPU backend with every buffer ending at an inaccessible page: an op (or planning)
// that writes or reads past the end of a buffer faults at once instead of corrupting a
// neighbour. It also declares its memory not host-visible, so host code takes the same
// explicit copies (HostWindow) as on an accelerator and the tests run those paths. For
// tests ("cpu_guarded" in backend_names()); slower allocation only.
class GuardedCpuBackend final : public CpuBackend {
 public:
  std::string name() const override { return "cpu_guarded"; }
  bool host_visible() const override { return false; }
  void* allocate(std::size_t bytes) override;
  void deallocate(void* p, std::size_t bytes) override;
};

}  // namespace palm
