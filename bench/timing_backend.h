// A Backend decorator that times every op (wall clock, by op name and GEMM shape class)
// for `palm bench ... --profile`. Ops run unchanged on the wrapped backend.
#pragma once
#include <omp.h>

#include <chrono>
#include <map>
#include <string>

#include "kernels/backend.h"

namespace palm {

class TimingBackend final : public Backend {
 public:
  explicit TimingBackend(Backend& inner) : in_(inner) {}
  std::map<std::string, std::pair<double, double>> totals;  // op -> (seconds, flops)

  std::string name() const override { return in_.name() + "+timing"; }
  void* allocate(std::size_t bytes) override { return in_.allocate(bytes); }
  void deallocate(void* p, std::size_t bytes) override { in_.deallocate(p, bytes); }
  void copy_to_device(void* d, const void* s, std::size_t n) override { in_.copy_to_device(d, s, n); }
  void copy_to_host(void* d, const void* s, std::size_t n) override { in_.copy_to_host(d, s, n); }
  void copy_on_device(void* d, const void* s, std::size_t n) override { in_.copy_on_device(d, s, n); }
  void memset_on_device(void* d, int b, std::size_t n) override { in_.memset_on_device(d, b, n); }
  void discard(void* p, std::size_t n) override { in_.discard(p, n); }
  void copy_2d_on_device(void* d, std::size_t dp, const void* s, std::size_t sp, std::size_t w, std::size_t r) override {
    in_.copy_2d_on_device(d, dp, s, sp, w, r);
  }
  void synchronize() override { in_.synchronize(); }
  bool host_visible() const override { return in_.host_visible(); }
  double memory_available() const override { return in_.memory_available(); }
  void gemm(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const float* A, i64 lda,
            const float* B, i64 ldb, float beta, float* C, i64 ldc) override {
    const bool nested = in_parallel();
    const auto t0 = now();
    in_.gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (!nested) add(std::string("gemm ") + (ta ? "T" : "N") + (tb ? "T" : "N"), t0, 2.0 * M * N * K);
  }
  void gemm_bf16(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const float* A, i64 lda,
                 const float* B, i64 ldb, float beta, float* C, i64 ldc) override {
    const auto t0 = now();
    in_.gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    add(std::string("gemm_bf16 ") + (ta ? "T" : "N") + (tb ? "T" : "N"), t0, 2.0 * M * N * K);
  }
  void rows_times_stored(const float* X, i64 b, i64 K, const void* W, WeightFormat f, const float* sc, i64 N,
                         float alpha, float beta, float* C) override {
    const auto t0 = now();
    in_.rows_times_stored(X, b, K, W, f, sc, N, alpha, beta, C);
    add("rows_times_stored", t0, 2.0 * b * N * K);
  }
  void embedding_fwd(const std::int32_t* t, const float* E, float* x, i64 N, i64 D) override {
    const auto t0 = now();
    in_.embedding_fwd(t, E, x, N, D);
    add("embedding_fwd", t0);
  }
  void embedding_bwd_acc(const std::int32_t* t, const float* dx, float* dE, i64 N, i64 D) override {
    const auto t0 = now();
    in_.embedding_bwd_acc(t, dx, dE, N, D);
    add("embedding_bwd", t0);
  }
  void layernorm_fwd(const float* x, const float* s, float* y, float* m, float* r, i64 N, i64 D,
                     float eps) override {
    const auto t0 = now();
    in_.layernorm_fwd(x, s, y, m, r, N, D, eps);
    add("layernorm_fwd", t0);
  }
  void layernorm_bwd_acc(const float* dy, const float* x, const float* s, const float* m,
                         const float* r, float* dx, float* ds, i64 N, i64 D) override {
    const auto t0 = now();
    in_.layernorm_bwd_acc(dy, x, s, m, r, dx, ds, N, D);
    add("layernorm_bwd", t0);
  }
  void rope_fwd(const float* in, i64 li, float* out, i64 lo, i64 N, i64 T, i64 h, i64 K,
                float base) override {
    const auto t0 = now();
    in_.rope_fwd(in, li, out, lo, N, T, h, K, base);
    add("rope_fwd", t0);
  }
  void rope_bwd(const float* d, i64 ld, float* di, i64 ldi, i64 N, i64 T, i64 h, i64 K,
                float base) override {
    const auto t0 = now();
    in_.rope_bwd(d, ld, di, ldi, N, T, h, K, base);
    add("rope_bwd", t0);
  }
  void rope_fwd_at(const float* in, i64 li, float* out, i64 lo, i64 N, const std::int32_t* pos, i64 h, i64 K,
                   float base) override {
    const auto t0 = now();
    in_.rope_fwd_at(in, li, out, lo, N, pos, h, K, base);
    add("rope_fwd_at", t0);
  }
  void attention_decode(const float* q, const void* const* c, KvFormat f, i64 ld, const std::int64_t* lens, float* o,
                        i64 b, i64 H, i64 K) override {
    const auto t0 = now();
    in_.attention_decode(q, c, f, ld, lens, o, b, H, K);
    add("attention_decode", t0);
  }
  void attention_decode_beside(const float* q, const void* const* c, KvFormat f, i64 ld, const std::int64_t* lens,
                               float* o, i64 b, i64 H, i64 K, const StoredProduct& p) override {
    const auto t0 = now();  // one op: the inner backend may run the two at once
    in_.attention_decode_beside(q, c, f, ld, lens, o, b, H, K, p);
    add("attention_decode + rows_times_stored beside it", t0, 2.0 * p.b * p.N * p.K);
  }
  void swiglu_fwd(const float* g, const float* u, i64 ld, float* a, i64 N, i64 F) override {
    const auto t0 = now();
    in_.swiglu_fwd(g, u, ld, a, N, F);
    add("swiglu_fwd", t0);
  }
  void swiglu_bwd(const float* da, const float* g, const float* u, i64 ld, float* dg, float* du,
                  i64 ldo, i64 N, i64 F) override {
    const auto t0 = now();
    in_.swiglu_bwd(da, g, u, ld, dg, du, ldo, N, F);
    add("swiglu_bwd", t0);
  }
  void attention_fwd(const float* q, const float* k, const float* v, i64 ld, float* p, float* o,
                     i64 B, i64 T, i64 H, i64 K) override {
    const auto t0 = now();
    in_.attention_fwd(q, k, v, ld, p, o, B, T, H, K);
    add("attention_fwd", t0, 2.0 * B * H * T * T * K);  // causal half of 2 GEMMs
  }
  i64 attention_saved_floats(i64 B, i64 T, i64 H) const override { return in_.attention_saved_floats(B, T, H); }
  void attention_bwd(const float* d, const float* q, const float* k, const float* v, i64 ld, const float* o,
                     const float* p, float* dq, float* dk, float* dv, i64 ldv, float* s, i64 sn, i64 B,
                     i64 T, i64 H, i64 K) override {
    const auto t0 = now();
    in_.attention_bwd(d, q, k, v, ld, o, p, dq, dk, dv, ldv, s, sn, B, T, H, K);
    add("attention_bwd", t0, 4.0 * B * H * T * T * K);
  }
  i64 attention_bwd_scratch_floats(i64 B, i64 T, i64 H, i64 K) const override {
    return in_.attention_bwd_scratch_floats(B, T, H, K);
  }
  void xent_fwd_bwd(float* l, const std::int32_t* t, float* nll, float* lz, float* dl, float z,
                    float gs, i64 N, i64 V) override {
    const auto t0 = now();
    in_.xent_fwd_bwd(l, t, nll, lz, dl, z, gs, N, V);
    add("xent", t0);
  }
  void add(const float* a, const float* b, float* out, i64 n) override {
    const auto t0 = now();
    in_.add(a, b, out, n);
    add("add", t0);
  }
  void scale(float* x, float s, i64 n) override {
    const auto t0 = now();
    in_.scale(x, s, n);
    add("scale", t0);
  }
  double sum_squares(const float* x, i64 n) override {
    const auto t0 = now();
    const double r = in_.sum_squares(x, n);
    add("sum_squares", t0, 2.0 * n);
    return r;
  }
  std::uint64_t hash_floats(const float* x, i64 n) override {
    const auto t0 = now();
    const std::uint64_t r = in_.hash_floats(x, n);
    add("hash_floats", t0);
    return r;
  }
  void fill_normal(float* x, i64 rows, i64 cols, std::uint64_t seed, std::uint64_t stream, double stddev, i64 gcols,
                   i64 row0, i64 col0, float constant) override {
    const auto t0 = now();
    in_.fill_normal(x, rows, cols, seed, stream, stddev, gcols, row0, col0, constant);
    add("fill_normal", t0);
  }
  void adamw_update(float* x, const float* g, float* m, float* v, i64 n, double lr, double b1, double b2, double c1,
                    double c2, double eps, double wd) override {
    const auto t0 = now();
    in_.adamw_update(x, g, m, v, n, lr, b1, b2, c1, c2, eps, wd);
    add("adamw_update", t0);
  }
  void adafactor_precondition(float* g, float* v, i64 n, double beta2) override {
    const auto t0 = now();
    in_.adafactor_precondition(g, v, n, beta2);
    add("adafactor_precondition", t0);
  }
  void adafactor_apply(float* x, float* m, const float* u, i64 n, double momentum, double step, double decay) override {
    const auto t0 = now();
    in_.adafactor_apply(x, m, u, n, momentum, step, decay);
    add("adafactor_apply", t0);
  }
  void embedding_fwd_slice(const std::int32_t* t, const float* E, i64 first, i64 rows, float* x, i64 N,
                           i64 D) override {
    const auto t0 = now();
    in_.embedding_fwd_slice(t, E, first, rows, x, N, D);
    add("embedding_fwd_slice", t0);
  }
  void embedding_bwd_acc_slice(const std::int32_t* t, const float* dx, float* dE, i64 first, i64 rows, i64 N,
                               i64 D) override {
    const auto t0 = now();
    in_.embedding_bwd_acc_slice(t, dx, dE, first, rows, N, D);
    add("embedding_bwd_acc_slice", t0);
  }
  void row_max(const float* logits, i64 N, i64 V, float* out) override {
    const auto t0 = now();
    in_.row_max(logits, N, V, out);
    add("row_max", t0);
  }
  void logit_stats(const float* logits, i64 b, i64 V, std::int32_t* argmax, float* max, double* log_z) override {
    const auto t0 = now();
    in_.logit_stats(logits, b, V, argmax, max, log_z);
    add("logit_stats", t0);
  }
  void top_k(const float* logits, i64 V, i64 k, float* values, std::int32_t* ids) override {
    const auto t0 = now();
    in_.top_k(logits, V, k, values, ids);
    add("top_k", t0);
  }
  void xent_partials(const float* logits, const std::int32_t* targets, i64 first, const float* mx, double* part, i64 N,
                     i64 V) override {
    const auto t0 = now();
    in_.xent_partials(logits, targets, first, mx, part, N, V);
    add("xent_partials", t0);
  }
  void xent_finish(const float* logits, const std::int32_t* targets, i64 first, const float* mx, const double* part,
                   float* nll, float* log_z, float* dlogits, float z_coef, float grad_scale, i64 N, i64 V) override {
    const auto t0 = now();
    in_.xent_finish(logits, targets, first, mx, part, nll, log_z, dlogits, z_coef, grad_scale, N, V);
    add("xent_finish", t0);
  }
  void quantize_bf16(const float* w, std::uint16_t* out, i64 n) override {
    const auto t0 = now();
    in_.quantize_bf16(w, out, n);
    add("quantize_bf16", t0);
  }
  void store_kv_rows(const float* src, i64 ls, void* dst, KvFormat f, i64 ld, i64 rows, i64 cols) override {
    const auto t0 = now();
    in_.store_kv_rows(src, ls, dst, f, ld, rows, cols);
    add("store_kv_rows", t0);
  }
  void quantize_int8_rows(const float* w, i64 rows, i64 cols, std::int8_t* q, float* scales) override {
    const auto t0 = now();
    in_.quantize_int8_rows(w, rows, cols, q, scales);
    add("quantize_int8_rows", t0);
  }
  void stored_to_product_layout(void* w, WeightFormat format, i64 rows, i64 cols) override {
    const auto t0 = now();
    in_.stored_to_product_layout(w, format, rows, cols);
    add("stored_to_product_layout", t0);
  }

 private:
  using Clock = std::chrono::steady_clock;
  // an accelerator's ops are queued: wait for them, so each op's time is its own
  Clock::time_point now() {
    if (!in_.host_visible()) in_.synchronize();
    return Clock::now();
  }
  static bool in_parallel() { return omp_in_parallel(); }  // inner GEMMs are in their op
  void add(const std::string& op, Clock::time_point t0, double flops = 0) {
    auto& [s, f] = totals[op];
    s += std::chrono::duration<double>(now() - t0).count();
    f += flops;
  }
  Backend& in_;
};

}  // namespace palm
