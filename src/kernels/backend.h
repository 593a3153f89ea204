// THE op list. Model, training and inference code call only these; each backend (CPU
// now) implements all of them. Matrices are row-major with explicit leading dimensions
// (ld = elements between consecutive rows), so views into fused buffers need no copies.
//
// Dimension letters: N rows (= B*T tokens), B batch, T time, D model, H query heads,
// K head dim, F ffn hidden, V vocab.
//
// Gradient convention: functions ending in _acc add into their outputs; all others
// overwrite.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace palm {

using i64 = std::int64_t;

// Storage of weight matrices for decoding: fp32, bfloat16, or int8 with one fp32 scale
// per output row (symmetric, w = scale * q).
enum class WeightFormat { kF32, kBF16, kInt8 };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // C[M,N] = alpha * op(A) op(B) + beta * C; op(X) = X or X^T per trans flag.
  // Inside a parallel region the call runs on the calling thread only.
  virtual void gemm(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha,
                    const float* A, i64 lda, const float* B, i64 ldb, float beta, float* C,
                    i64 ldc) = 0;

  // gemm with A and B rounded to bfloat16 (nearest even), products accumulated in fp32,
  // C in fp32: the mixed-precision mode for the large projections. Must be called
  // outside parallel regions.
  virtual void gemm_bf16(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, float alpha,
                         const float* A, i64 lda, const float* B, i64 ldb, float beta,
                         float* C, i64 ldc) = 0;

  // Few-row products against stored weights, the decode-time GEMM:
  // C[i, n] = alpha * scale[n] * dot(X[i, :], W[n, :]) + beta * C[i, n] for i < b, n < N;
  // W is [N, K] in `format` (scales null unless int8). Weight rows are read once for all
  // b rows of X, so the cost is the bytes of W: the memory-bandwidth floor.
  virtual void rows_times_stored(const float* X, i64 b, i64 K, const void* W, WeightFormat format,
                                 const float* scales, i64 N, float alpha, float beta, float* C) = 0;

  // x0[n, :] = E[tokens[n], :]
  virtual void embedding_fwd(const std::int32_t* tokens, const float* E, float* x, i64 N,
                             i64 D) = 0;
  // dE[tokens[n], :] += dx[n, :]  (deterministic: each row of dE summed in token order)
  virtual void embedding_bwd_acc(const std::int32_t* tokens, const float* dx, float* dE,
                                 i64 N, i64 D) = 0;

  // y = (x - mean) * rstd * scale; mean[N], rstd[N] saved for the backward.
  virtual void layernorm_fwd(const float* x, const float* scale, float* y, float* mean,
                             float* rstd, i64 N, i64 D, float eps) = 0;
  // Undoes layernorm_fwd: dx += dLN/dx^T dy; dscale += sum_n dy * xhat.
  virtual void layernorm_bwd_acc(const float* dy, const float* x, const float* scale,
                                 const float* mean, const float* rstd, float* dx,
                                 float* dscale, i64 N, i64 D) = 0;

  // Rotary embedding, rotate-half pairs (i, i + K/2), angle = t * base^(-2i/K), on
  // `heads` heads of K dims per row; row n is position n % T. in/out may alias.
  virtual void rope_fwd(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N, i64 T,
                        i64 heads, i64 K, float base) = 0;
  // Undoes rope_fwd: rotates the gradient back by -angle.
  virtual void rope_bwd(const float* dout, i64 ld_dout, float* din, i64 ld_din, i64 N,
                        i64 T, i64 heads, i64 K, float base) = 0;

  // rope_fwd with an explicit position per row (decode: each sequence is at its own).
  virtual void rope_fwd_at(const float* in, i64 ld_in, float* out, i64 ld_out, i64 N,
                           const std::int32_t* positions, i64 heads, i64 K, float base) = 0;

  // act = swish(gate) * up; gate/up rows at stride ld_in, act [N, F] contiguous.
  virtual void swiglu_fwd(const float* gate, const float* up, i64 ld_in, float* act, i64 N,
                          i64 F) = 0;
  virtual void swiglu_bwd(const float* dact, const float* gate, const float* up, i64 ld_in,
                          float* dgate, float* dup, i64 ld_out, i64 N, i64 F) = 0;

  // Causal multi-query attention for B sequences of T tokens.
  // q [B*T, H*K] (contiguous), k and v: [B*T, K] rows at stride ld_kv, shared by all
  // heads. probs [B, T*H, T] keeps the softmax for the backward; o [B*T, H*K].
  virtual void attention_fwd(const float* q, const float* k, const float* v, i64 ld_kv,
                             float* probs, float* o, i64 B, i64 T, i64 H, i64 K) = 0;
  // dq [B*T, H*K] and dk [B*T, K] overwrite; dv rows at stride ld_dv overwrite.
  // scratch: scratch_floats floats, at least attention_bwd_scratch_floats(B, T, H, K) as
  // planned; the kernel fits its work to the size it is given (the thread count may have
  // changed since planning).
  virtual void attention_bwd(const float* dout, const float* q, const float* k,
                             const float* v, i64 ld_kv, const float* probs, float* dq,
                             float* dk, float* dv, i64 ld_dv, float* scratch, i64 scratch_floats,
                             i64 B, i64 T, i64 H, i64 K) = 0;
  virtual i64 attention_bwd_scratch_floats(i64 B, i64 T, i64 H, i64 K) const = 0;

  // One decode step of multi-query attention for b sequences: sequence i's query
  // q [i, H*K] attends to its cached positions 0..lens[i]-1, whose k and v rows are at
  // cache[i] + t * ld (k) and cache[i] + K + t * ld (v). o [b, H*K].
  virtual void attention_decode(const float* q, const float* const* cache, i64 ld,
                                const std::int64_t* lens, float* o, i64 b, i64 H, i64 K) = 0;

  // Cross-entropy with PaLM's z-loss for N rows of V logits.
  // nll[n] = logZ_n - logits[n, target[n]], log_z[n] = logZ_n.
  // When dlogits is non-null (it may alias logits):
  //   dlogits = grad_scale * (softmax * (1 + 2 z_coef logZ) - onehot(target)).
  virtual void xent_fwd_bwd(float* logits, const std::int32_t* targets, float* nll,
                            float* log_z, float* dlogits, float z_coef, float grad_scale,
                            i64 N, i64 V) = 0;

  // out = a + b (out may alias a or b)
  virtual void add(const float* a, const float* b, float* out, i64 n) = 0;
};

// The backend for this build; `name` "cpu" (the default) is the only one built now.
std::unique_ptr<Backend> make_backend(const std::string& name = "cpu");

}  // namespace palm
