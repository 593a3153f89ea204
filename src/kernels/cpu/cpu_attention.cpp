// Causal multi-query attention as GEMMs.
//
// Because all H query heads share one K and one V head, the queries of one sequence,
// q_b [T, H*K], are the matrix Q_b [T*H, K] (row t*H + h): scores for every head are
// ONE product Q_b K_b^T [T*H, T], and P V_b [T*H, K] is the output already in
// [T, H*K] layout. Query rows are processed in chunks of kChunk positions that only
// multiply against keys 0..t1-1 of the chunk's last position, so the causal half is
// mostly skipped. Work items (sequence, chunk) run in parallel with single-threaded
// GEMMs; K/V gradients are summed over chunks in a fixed order (thread-count invariant).
// Decode attention (one position against a KV cache) is in cpu_attention_decode.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <omp.h>

#include "base/check.h"

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/fast_math.h"

namespace palm {
namespace {

constexpr i64 kChunk = 32;  // positions per work item

i64 chunks_of(i64 T) { return (T + kChunk - 1) / kChunk; }

// Sum of t1 over the chunks of one sequence: the rows of its K/V gradient partials.
i64 partial_rows(i64 T) {
  i64 rows = 0;
  for (i64 c = 0; c < chunks_of(T); ++c) rows += std::min(T, (c + 1) * kChunk);
  return rows;
}

}  // namespace

void CpuBackend::attention_fwd(const float* q, const float* k, const float* v, i64 ld_kv,
                               float* probs, float* o, i64 B, i64 T, i64 H, i64 K) {
  const float scale = 1.0f / std::sqrt(float(K));
  const i64 nc = chunks_of(T);
  // Training keeps the softmax for the backward. Inference (probs null) keeps each chunk's
  // scores in a per-thread block that stays in L2 (kChunk * H * T floats: 1 MiB at H = 16,
  // T = 512) instead of writing H T^2 floats per sequence to memory and reading them back,
  // and divides the output rows by the sums instead of the probabilities.
  const bool keep = probs != nullptr;
#pragma omp parallel
  {
    thread_local std::vector<float> block;
    if (!keep && std::int64_t(block.size()) < kChunk * H * T) block.resize(std::size_t(kChunk * H * T));
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < B * nc; ++item) {
      // the last chunks (the most keys) first, so the threads finish together
      const i64 b = item / nc, c = nc - 1 - item % nc;
      const i64 t0 = c * kChunk, t1 = std::min(T, t0 + kChunk);
      const i64 rows = (t1 - t0) * H;
      const float* qb = q + (b * T + t0) * H * K;  // [rows, K]
      const float* kb = k + b * T * ld_kv;         // [T, K] at ld_kv
      const float* vb = v + b * T * ld_kv;
      const i64 ldp = keep ? T : t1;
      float* pb = keep ? probs + (b * T * H + t0 * H) * T : block.data();  // [rows, ldp], first t1 columns used
      float* ob = o + (b * T + t0) * H * K;
      float inv_sum[kChunk * 64];  // rows <= kChunk * H; more heads take the normalizing path
      const bool fold = !keep && rows <= kChunk * 64;
      gemm(false, true, rows, t1, K, scale, qb, K, kb, ld_kv, 0.0f, pb, ldp);
      for (i64 r = 0; r < rows; ++r) {
        const i64 t = t0 + r / H;  // keys 0..t are visible
        float* row = pb + r * ldp;
        const float mx = max_of(row, t + 1);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (i64 j = 0; j <= t; ++j) {
          row[j] = fast_exp(row[j] - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        if (fold) {
          inv_sum[r] = inv;
        } else {
#pragma omp simd
          for (i64 j = 0; j <= t; ++j) row[j] *= inv;
        }
        std::fill(row + t + 1, row + t1, 0.0f);
      }
      gemm(false, false, rows, K, t1, 1.0f, pb, ldp, vb, ld_kv, 0.0f, ob, K);
      if (fold)
        for (i64 r = 0; r < rows; ++r) {
          const float inv = inv_sum[r];
#pragma omp simd
          for (i64 e = 0; e < K; ++e) ob[r * K + e] *= inv;
        }
    }
  }
}

i64 CpuBackend::attention_bwd_scratch_floats(i64 B, i64 T, i64 H, i64 K) const {
  // The K/V partials, plus one dS block per thread of the current thread count.
  return 2 * B * partial_rows(T) * K + i64(omp_get_max_threads()) * kChunk * H * T;
}

void CpuBackend::attention_bwd(const float* dout, const float* q, const float* k,
                               const float* v, i64 ld_kv, const float* /*o: the softmax is kept*/, const float* probs, float* dq,
                               float* dk, float* dv, i64 ld_dv, float* scratch, i64 scratch_floats,
                               i64 B, i64 T, i64 H, i64 K) {
  const float scale = 1.0f / std::sqrt(float(K));
  const i64 nc = chunks_of(T);
  const i64 prow = partial_rows(T);
  float* dk_part = scratch;              // [B, prow, K]
  float* dv_part = scratch + B * prow * K;  // [B, prow, K]
  float* ds_all = dv_part + B * prow * K;   // [threads, kChunk*H, T]
  // one dS block per thread: the team is what the scratch holds (it was planned for the
  // thread count of that moment; running with more threads once overran it)
  const i64 block = kChunk * H * T, fixed = 2 * B * prow * K;
  PALM_CHECK(scratch_floats >= fixed + block, "attention_bwd: scratch of ", scratch_floats, " floats, needs at least ",
             fixed + block);
  const int threads = int(std::min<i64>(omp_get_max_threads(), (scratch_floats - fixed) / block));
#pragma omp parallel num_threads(threads)
  {
    PALM_ASSERT(omp_get_num_threads() <= threads);  // each thread's dS block lies in the scratch
    float* ds = ds_all + i64(omp_get_thread_num()) * kChunk * H * T;
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < B * nc; ++item) {
      const i64 b = item / nc, c = item % nc;
      const i64 t0 = c * kChunk, t1 = std::min(T, t0 + kChunk);
      const i64 rows = (t1 - t0) * H;
      i64 part_off = 0;  // rows of this chunk's partials inside the sequence's block
      for (i64 cc = 0; cc < c; ++cc) part_off += std::min(T, (cc + 1) * kChunk);
      const float* qb = q + (b * T + t0) * H * K;
      const float* kb = k + b * T * ld_kv;
      const float* vb = v + b * T * ld_kv;
      const float* dob = dout + (b * T + t0) * H * K;
      const float* pb = probs + (b * T * H + t0 * H) * T;
      // dP = dO V^T                                   (undoes O = P V)
      gemm(false, true, rows, t1, K, 1.0f, dob, K, vb, ld_kv, 0.0f, ds, t1);
      // dS = P * (dP - rowsum(P * dP))                (undoes the softmax)
      for (i64 r = 0; r < rows; ++r) {
        const i64 t = t0 + r / H;
        const float* p = pb + r * T;
        float* d = ds + r * t1;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (i64 j = 0; j <= t; ++j) dot += p[j] * d[j];
#pragma omp simd
        for (i64 j = 0; j <= t; ++j) d[j] = p[j] * (d[j] - dot);
        std::fill(d + t + 1, d + t1, 0.0f);
      }
      // dQ = scale dS K; dK_part = scale dS^T Q; dV_part = P^T dO   (undo S = scale Q K^T)
      gemm(false, false, rows, K, t1, scale, ds, t1, kb, ld_kv, 0.0f,
           dq + (b * T + t0) * H * K, K);
      gemm(true, false, t1, K, rows, scale, ds, t1, qb, K, 0.0f,
           dk_part + (b * prow + part_off) * K, K);
      gemm(true, false, t1, K, rows, 1.0f, pb, T, dob, K, 0.0f,
           dv_part + (b * prow + part_off) * K, K);
    }
    // dK[b, j] = sum over chunks c (in order) whose keys include j.
#pragma omp for schedule(static)
    for (i64 bj = 0; bj < B * T; ++bj) {
      const i64 b = bj / T, j = bj % T;
      float* dkr = dk + bj * K;
      float* dvr = dv + bj * ld_dv;
      std::fill(dkr, dkr + K, 0.0f);
      std::fill(dvr, dvr + K, 0.0f);
      i64 off = 0;
      for (i64 c = 0; c < nc; ++c) {
        const i64 t1 = std::min(T, (c + 1) * kChunk);
        if (j < t1) {
          const float* pk = dk_part + (b * prow + off + j) * K;
          const float* pv = dv_part + (b * prow + off + j) * K;
#pragma omp simd
          for (i64 e = 0; e < K; ++e) {
            dkr[e] += pk[e];
            dvr[e] += pv[e];
          }
        }
        off += t1;
      }
    }
  }
}

}  // namespace palm
