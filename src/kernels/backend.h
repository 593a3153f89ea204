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
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace palm {

using i64 = std::int64_t;

// Storage of weight matrices for decoding: fp32, bfloat16, or int8 with one fp32 scale
// per output row (symmetric, w = scale * q).
enum class WeightFormat { kF32, kBF16, kInt8 };

// Elements of a KV cache's rows: fp32, or bf16 (nearest even), which halves the bytes a
// decode step's attention reads.
enum class KvFormat { kF32, kBF16 };

// The arguments of one rows_times_stored call (attention_decode_beside runs one).
struct StoredProduct {
  const float* X;
  i64 b, K;
  const void* W;
  WeightFormat format;
  const float* scales;
  i64 N;
  float alpha, beta;
  float* C;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- memory ----------------------------------------------------------------------
  // Buffers the ops below read and write (device memory on an accelerator). Index arrays
  // (tokens, targets, positions, lens, the cache row pointers) are host memory: a few
  // bytes per row, which an accelerator copies over with the op. allocate
  // returns zero-filled memory or throws Error naming the size; host code reaches the
  // contents only through the copies, unless host_visible() (the CPU backend, whose
  // buffers are the process's own memory). Ops are ordered: a copy to the host returns
  // once the data is there; synchronize() waits for everything queued.
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* p, std::size_t bytes) = 0;
  virtual void copy_to_device(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void copy_on_device(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void memset_on_device(void* dst, int byte, std::size_t bytes) = 0;
  // The contents become zero and the memory may go back to the system until written
  // again (full sharding drops the tensors another rank owns).
  virtual void discard(void* p, std::size_t bytes) = 0;
  // rows x width bytes from src (rows src_pitch bytes apart) to dst (dst_pitch apart)
  virtual void copy_2d_on_device(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch,
                                 std::size_t width, std::size_t rows) = 0;
  virtual void synchronize() = 0;
  virtual bool host_visible() const = 0;
  // Bytes that allocate() can still give (host: MemAvailable; a device: its free memory),
  // or -1 where unknown.
  virtual double memory_available() const = 0;

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
  // W is [N, K] in `format` (scales null unless int8; bf16 and int8 as
  // stored_to_product_layout left them). Weight rows are read once for all b rows of X,
  // so the cost is the bytes of W: the memory-bandwidth floor.
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
  // heads; o [B*T, H*K]. `saved` (attention_saved_floats(B, T, H) floats) keeps what the
  // backward needs: the CPU keeps the softmax [B, T*H, T]; a fused (flash) kernel keeps
  // only each query row's log-sum-exp [B*T*H] and recomputes the rest. `saved` is null
  // where no backward follows (inference): nothing is kept.
  virtual void attention_fwd(const float* q, const float* k, const float* v, i64 ld_kv,
                             float* saved, float* o, i64 B, i64 T, i64 H, i64 K) = 0;
  virtual i64 attention_saved_floats(i64 B, i64 T, i64 H) const = 0;
  // dq [B*T, H*K] and dk [B*T, K] overwrite; dv rows at stride ld_dv overwrite. o is the
  // forward's output. scratch: scratch_floats floats, at least
  // attention_bwd_scratch_floats(B, T, H, K) as planned; the kernel fits its work to the
  // size it is given (the thread count may have changed since planning).
  virtual void attention_bwd(const float* dout, const float* q, const float* k,
                             const float* v, i64 ld_kv, const float* o, const float* saved, float* dq,
                             float* dk, float* dv, i64 ld_dv, float* scratch, i64 scratch_floats,
                             i64 B, i64 T, i64 H, i64 K) = 0;
  virtual i64 attention_bwd_scratch_floats(i64 B, i64 T, i64 H, i64 K) const = 0;

  // One decode step of multi-query attention for b sequences: sequence i's query
  // q [i, H*K] attends to its cached positions 0..lens[i]-1, whose k and v rows are at
  // cache[i] + t * ld (k) and cache[i] + K + t * ld (v), in elements of `format`. o [b, H*K].
  // A bf16 cache may have the queries and the softmax weights rounded to bf16 too (the CPU
  // with AVX512_BF16 does: its products then run on vdpbf16ps).
  virtual void attention_decode(const float* q, const void* const* cache, KvFormat format, i64 ld,
                                const std::int64_t* lens, float* o, i64 b, i64 H, i64 K) = 0;
  // attention_decode and, independent of it, the product p (rows_times_stored): a decode
  // step's down projection, whose input (SwiGLU's output) is ready before the attention. A
  // backend may run the two at once (the CPU at batch 1: one thread attends, which leaves
  // memory idle, while the others read the weights). Default: the attention, then the
  // product.
  virtual void attention_decode_beside(const float* q, const void* const* cache, KvFormat format, i64 ld,
                                       const std::int64_t* lens, float* o, i64 b, i64 H, i64 K,
                                       const StoredProduct& p) {
    attention_decode(q, cache, format, ld, lens, o, b, H, K);
    rows_times_stored(p.X, p.b, p.K, p.W, p.format, p.scales, p.N, p.alpha, p.beta, p.C);
  }
  // rows x cols fp32 values (src, rows ld_src apart) into KV cache rows (dst, rows ld_dst
  // elements of `format` apart): copied, or rounded to bf16 (nearest even).
  virtual void store_kv_rows(const float* src, i64 ld_src, void* dst, KvFormat format, i64 ld_dst, i64 rows,
                             i64 cols) = 0;

  // Cross-entropy with PaLM's z-loss for N rows of V logits.
  // nll[n] = logZ_n - logits[n, target[n]], log_z[n] = logZ_n.
  // When dlogits is non-null (it may alias logits):
  //   dlogits = grad_scale * (softmax * (1 + 2 z_coef logZ) - onehot(target)).
  virtual void xent_fwd_bwd(float* logits, const std::int32_t* targets, float* nll,
                            float* log_z, float* dlogits, float z_coef, float grad_scale,
                            i64 N, i64 V) = 0;

  // out = a + b (out may alias a or b)
  virtual void add(const float* a, const float* b, float* out, i64 n) = 0;

  // ---- vectors: gradients, optimizer state, checks -----------------------------------
  virtual void scale(float* x, float s, i64 n) = 0;  // x *= s
  // Sum of x[i]^2 in double, in fixed chunks of 4096 summed in order: the same bits for
  // any thread count.
  virtual double sum_squares(const float* x, i64 n) = 0;
  // A 64-bit hash of the bits of n floats (chunks of 2^20 hashed apart, combined in
  // order): replica-consistency checks.
  virtual std::uint64_t hash_floats(const float* x, i64 n) = 0;

  // ---- initialization -------------------------------------------------------------
  // x[r, c] = stddev * (the standard normal draw number (row0 + r) * global_cols + col0 + c
  // of stream (seed, stream)) for r < rows, c < cols: a slice of a whole tensor's draw
  // has the values the whole tensor would have there. stddev 0 fills with `constant`.
  virtual void fill_normal(float* x, i64 rows, i64 cols, std::uint64_t seed, std::uint64_t stream, double stddev,
                           i64 global_cols, i64 row0, i64 col0, float constant) = 0;

  // ---- optimizer updates, one call per tensor -------------------------------------
  // AdamW: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  //        x -= lr ((m/c1) / (sqrt(v/c2) + eps) + wd x)   (c1, c2: bias corrections)
  virtual void adamw_update(float* x, const float* g, float* m, float* v, i64 n, double lr, double b1, double b2,
                            double c1, double c2, double eps, double wd) = 0;
  // Adafactor without factorization, in two halves around the RMS reductions:
  //   precondition: v = b2 v + (1-b2)(g^2 + 1e-30); g = g / sqrt(v)   (U in g's place)
  //   apply:        m = mom m + step u; x = x - m - decay x   (step = (1-mom) a / max(1, RMS(U)))
  virtual void adafactor_precondition(float* g, float* v, i64 n, double beta2) = 0;
  virtual void adafactor_apply(float* x, float* m, const float* u, i64 n, double momentum, double step,
                               double decay) = 0;

  // ---- vocabulary slices (tensor parallelism): E holds rows first..first+rows-1 --------
  // x[n, :] = E[tokens[n] - first, :] where the token is in the slice, else 0
  virtual void embedding_fwd_slice(const std::int32_t* tokens, const float* E, i64 first, i64 rows, float* x,
                                   i64 N, i64 D) = 0;
  // dE[tokens[n] - first, :] += dx[n, :] for tokens in the slice, in token order
  virtual void embedding_bwd_acc_slice(const std::int32_t* tokens, const float* dx, float* dE, i64 first, i64 rows,
                                       i64 N, i64 D) = 0;
  // Cross-entropy over a vocabulary split across ranks, from partial statistics:
  //   row_max: out[n] = max_v logits[n, v] (the caller takes the max over the group);
  //   xent_partials: part[2n] = sum_v exp(logits[n, v] - mx[n]), part[2n+1] = the
  //     target's logit if this slice holds it, else 0 (the caller sums over the group);
  //   xent_finish: nll, log_z and (when dlogits is non-null) the gradient, as xent_fwd_bwd.
  virtual void row_max(const float* logits, i64 N, i64 V, float* out) = 0;
  virtual void xent_partials(const float* logits, const std::int32_t* targets, i64 first, const float* mx,
                             double* part, i64 N, i64 V) = 0;
  virtual void xent_finish(const float* logits, const std::int32_t* targets, i64 first, const float* mx,
                           const double* part, float* nll, float* log_z, float* dlogits, float z_coef,
                           float grad_scale, i64 N, i64 V) = 0;

  // ---- sampling (per decoded token: only these results cross to the host) -------------
  // Per row of logits [b, V]: the first index of the maximum, the maximum, and
  // log sum_v exp(logits[v]) (summed in double, in index order).
  virtual void logit_stats(const float* logits, i64 b, i64 V, std::int32_t* argmax, float* max, double* log_z) = 0;
  // The k largest of logits [V], sorted descending (ties: the lower id first).
  virtual void top_k(const float* logits, i64 V, i64 k, float* values, std::int32_t* ids) = 0;

  // ---- decode weights ----------------------------------------------------------------
  virtual void quantize_bf16(const float* w, std::uint16_t* out, i64 n) = 0;  // nearest even
  // Symmetric int8 per row: scale[r] = max|w[r, :]| / 127 (1 for a zero row), q = round(w / scale).
  virtual void quantize_int8_rows(const float* w, i64 rows, i64 cols, std::int8_t* q, float* scales) = 0;
  // Rearranges bf16 or int8 weights [rows, cols] (as quantize_bf16 / quantize_int8_rows
  // wrote them; fp32: nothing is done, those are the model's own) in place into the layout
  // this backend's rows_times_stored reads: row-major (nothing to do) or, on a CPU with
  // AVX-512 VNNI, panels of 16 rows (cpu_stored_avx512.h).
  virtual void stored_to_product_layout(void* w, WeightFormat format, i64 rows, i64 cols) = 0;
};

// A backend by name: "cpu", "cuda" (where built with PALM_CUDA and a device is present),
// or "cpu_guarded" (the CPU backend whose buffers end at an inaccessible page, for tests).
// The empty name is the process's default: set_default_backend's choice, else "cuda"
// when this build has it and a device is present, else "cpu".
std::unique_ptr<Backend> make_backend(const std::string& name = "");
// The names make_backend accepts in this build (tests run every op on each; "cuda" is
// listed when compiled in, device or not).
std::vector<std::string> backend_names();
void set_default_backend(const std::string& name);  // checked: an unknown or unusable name fails
std::string default_backend();

// What `palm info` reports: each backend compiled in, and its devices.
struct DeviceInfo {
  std::string name;
  std::int64_t memory_bytes = 0;
  std::string detail;  // e.g. "sm_90, 132 SMs"
};
struct BackendInfo {
  std::string name;
  bool usable = false;
  std::string why_not;  // when not usable
  std::vector<DeviceInfo> devices;
};
std::vector<BackendInfo> backend_inventory();

// One instance per name for the whole process, alive until exit: for buffers whose owner
// has no backend of its own that would outlive them (a model loaded for export, tests).
Backend& process_backend(const std::string& name = "");

}  // namespace palm
