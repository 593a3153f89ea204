// The whole-tensor Backend ops (optimizer updates, norms, hashes, initialization, the
// vocabulary-slice embedding and cross-entropy, decode quantization, KV cache stores), run on every
// backend compiled into this build, at odd sizes, against double-precision formulas
// written out here (the ops' contracts in kernels/backend.h), and for the reductions
// against themselves at 1 and 2 threads (bitwise: the chunked order is the contract).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <random>
#include <vector>

#include "base/check.h"
#include "base/rng.h"
#include "device_mirror.h"
#include "kernels/backend.h"
#include "random_vec.h"

namespace palm {
namespace {

using testing_util::Mirror;
using testing_util::rand_vec;

// Runs f with the backend's OpenMP team set to `threads`, restoring it after.
template <class F>
auto with_threads(int threads, F f) {
  const int keep = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto r = f();
  omp_set_num_threads(keep);
  return r;
}

// On buffers in the backend's memory, on every backend usable here.
class BackendOps : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    be = make_backend(GetParam());
  }
  std::unique_ptr<Backend> be;
};

TEST_P(BackendOps, ScaleAndSumOfSquares) {
  for (const i64 n : {1, 7, 4095, 4096, 4097, 100003}) {
    auto x = rand_vec(std::size_t(n), unsigned(n));
    long double want = 0;
    for (const float v : x) want += (long double)v * v;
    Mirror d(*be);
    const float* dx = d.in(x);
    const double got = be->sum_squares(dx, n);
    EXPECT_NEAR(got, double(want), 1e-12 * double(want)) << n;
    const double one = with_threads(1, [&] { return be->sum_squares(dx, n); });
    const double two = with_threads(2, [&] { return be->sum_squares(dx, n); });
    EXPECT_EQ(std::memcmp(&one, &two, sizeof one), 0) << "thread-count dependent sum at n = " << n;
    auto y = x;
    be->scale(d.out(y), -0.37f, n);
    d.back();
    for (i64 i = 0; i < n; ++i) ASSERT_EQ(y[std::size_t(i)], x[std::size_t(i)] * -0.37f) << i;
  }
}

TEST_P(BackendOps, HashSeesEveryBitAndIgnoresThreads) {
  const i64 n = (i64(1) << 20) + 3;  // two chunks, the second short
  auto x = rand_vec(std::size_t(n), 5);
  Mirror d(*be);
  const float* dx = d.in(x);
  const std::uint64_t h = be->hash_floats(dx, n);
  EXPECT_EQ(h, with_threads(1, [&] { return be->hash_floats(dx, n); }));
  EXPECT_EQ(h, with_threads(2, [&] { return be->hash_floats(dx, n); }));
  for (const i64 at : {i64(0), i64(1) << 19, n - 1}) {
    auto y = x;
    std::uint32_t bits;
    std::memcpy(&bits, &y[std::size_t(at)], 4);
    bits ^= 1u;  // the lowest mantissa bit
    std::memcpy(&y[std::size_t(at)], &bits, 4);
    EXPECT_NE(be->hash_floats(d.in(y), n), h) << "a one-bit change at " << at;
  }
}

TEST_P(BackendOps, FillNormalSlicesAreTheWholeDrawsValues) {
  const i64 R = 37, C = 53;
  const std::uint64_t seed = 9, stream = hash_string("layers.0.attn.w");
  std::vector<float> whole(static_cast<std::size_t>(R * C));
  Mirror d(*be);
  be->fill_normal(d.out(whole), R, C, seed, stream, 0.5, C, 0, 0, 0.0f);
  d.back();
  for (i64 i = 0; i < R * C; ++i)
    ASSERT_EQ(whole[std::size_t(i)], float(0.5 * normal_at(seed, stream, std::uint64_t(i)))) << i;
  // a block of rows 5..16 and one of columns 20..44 hold the whole draw's values there
  std::vector<float> rows(static_cast<std::size_t>(12 * C)), cols(static_cast<std::size_t>(R * 25));
  Mirror m(*be);
  be->fill_normal(m.out(rows), 12, C, seed, stream, 0.5, C, 5, 0, 0.0f);
  be->fill_normal(m.out(cols), R, 25, seed, stream, 0.5, C, 0, 20, 0.0f);
  m.back();
  for (i64 r = 0; r < 12; ++r)
    for (i64 c = 0; c < C; ++c) ASSERT_EQ(rows[std::size_t(r * C + c)], whole[std::size_t((5 + r) * C + c)]);
  for (i64 r = 0; r < R; ++r)
    for (i64 c = 0; c < 25; ++c) ASSERT_EQ(cols[std::size_t(r * 25 + c)], whole[std::size_t(r * C + 20 + c)]);
  // the statistics of a large draw, and the constant fill
  std::vector<float> big(200000);
  {
    Mirror b(*be);
    be->fill_normal(b.out(big), 1, 200000, 3, 4, 2.0, 200000, 0, 0, 0.0f);
    b.back();
  }
  double mean = 0, sq = 0;
  for (const float v : big) mean += v, sq += double(v) * v;
  mean /= double(big.size());
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(std::sqrt(sq / double(big.size()) - mean * mean), 2.0, 0.02);
  {
    Mirror b(*be);
    be->fill_normal(b.out(big), 1, 7, 3, 4, 0.0, 7, 0, 0, 1.0f);
    b.back();
  }
  for (int i = 0; i < 7; ++i) EXPECT_EQ(big[std::size_t(i)], 1.0f);
}

TEST_P(BackendOps, AdamWAndAdafactorUpdatesFollowTheirFormulas) {
  const i64 n = 1001;
  const auto x0 = rand_vec(std::size_t(n), 1), g0 = rand_vec(std::size_t(n), 2), m0 = rand_vec(std::size_t(n), 3, 0.1f);
  auto v0 = rand_vec(std::size_t(n), 4, 0.1f);
  for (auto& v : v0) v = std::abs(v);
  // AdamW at step 3
  const double lr = 1e-3, b1 = 0.9, b2 = 0.99, c1 = 1 - std::pow(b1, 3), c2 = 1 - std::pow(b2, 3), eps = 1e-8, wd = 0.1;
  auto x = x0, m = m0, v = v0;
  {
    Mirror d(*be);
    be->adamw_update(d.out(x), d.in(g0), d.out(m), d.out(v), n, lr, b1, b2, c1, c2, eps, wd);
    d.back();
  }
  for (i64 i = 0; i < n; ++i) {
    const std::size_t k = std::size_t(i);
    const double mw = b1 * m0[k] + (1 - b1) * g0[k], vw = b2 * v0[k] + (1 - b2) * double(g0[k]) * g0[k];
    const double xw = x0[k] - lr * ((mw / c1) / (std::sqrt(vw / c2) + eps) + wd * x0[k]);
    ASSERT_NEAR(m[k], mw, 1e-6 * std::abs(mw) + 1e-12) << i;
    ASSERT_NEAR(v[k], vw, 1e-6 * std::abs(vw) + 1e-12) << i;
    ASSERT_NEAR(x[k], xw, 1e-6 * std::abs(xw) + 1e-9) << i;
  }
  // Adafactor: precondition, then apply
  auto u = g0;
  v = v0;
  {
    Mirror d(*be);
    be->adafactor_precondition(d.out(u), d.out(v), n, 0.8);
    d.back();
  }
  for (i64 i = 0; i < n; ++i) {
    const std::size_t k = std::size_t(i);
    const double vw = 0.8 * v0[k] + 0.2 * (double(g0[k]) * g0[k] + 1e-30);
    ASSERT_NEAR(v[k], vw, 1e-6 * vw) << i;
    ASSERT_NEAR(u[k], g0[k] / std::sqrt(double(v[k])), 1e-6 * std::abs(g0[k] / std::sqrt(double(v[k])))) << i;
  }
  x = x0;
  m = m0;
  {
    Mirror d(*be);
    be->adafactor_apply(d.out(x), d.out(m), d.in(u), n, 0.9, 0.003, 1e-4);
    d.back();
  }
  for (i64 i = 0; i < n; ++i) {
    const std::size_t k = std::size_t(i);
    const double mw = 0.9 * m0[k] + 0.003 * u[k];
    ASSERT_NEAR(m[k], mw, 1e-6 * std::abs(mw) + 1e-12) << i;
    ASSERT_NEAR(x[k], x0[k] - m[k] - 1e-4 * x0[k], 1e-6 * std::abs(x0[k]) + 1e-9) << i;
  }
}

TEST_P(BackendOps, EmbeddingOfAVocabularySlice) {
  const i64 V = 23, D = 13, N = 31, first = 9, rows = 8;  // this slice: tokens 9..16
  const auto E = rand_vec(std::size_t(rows * D), 1);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(N));
  for (i64 n = 0; n < N; ++n) tokens[std::size_t(n)] = std::int32_t((n * 7 + 3) % V);
  tokens[4] = tokens[5] = 12;  // a row hit twice
  std::vector<float> x(std::size_t(N * D), 5.0f);
  Mirror d(*be);
  be->embedding_fwd_slice(tokens.data(), d.in(E), first, rows, d.out(x), N, D);
  d.back();
  const auto dx = rand_vec(std::size_t(N * D), 2);
  auto dE = rand_vec(std::size_t(rows * D), 3);
  const auto dE0 = dE;
  Mirror m(*be);
  be->embedding_bwd_acc_slice(tokens.data(), m.in(dx), m.out(dE), first, rows, N, D);
  m.back();
  std::vector<double> want_dE(dE0.begin(), dE0.end());
  for (i64 n = 0; n < N; ++n) {
    const i64 t = tokens[std::size_t(n)] - first;
    const bool mine = t >= 0 && t < rows;
    for (i64 d = 0; d < D; ++d) {
      ASSERT_EQ(x[std::size_t(n * D + d)], mine ? E[std::size_t(t * D + d)] : 0.0f) << n << "," << d;
      if (mine) want_dE[std::size_t(t * D + d)] += dx[std::size_t(n * D + d)];
    }
  }
  for (std::size_t i = 0; i < dE.size(); ++i) ASSERT_NEAR(dE[i], want_dE[i], 1e-5) << i;
}

TEST_P(BackendOps, CrossEntropyFromTheSlicesPartialStatistics) {
  // two "ranks" hold columns [0, 17) and [17, 41) of 41; their partials, combined as the
  // group would, give the whole vocabulary's loss and each its gradient columns
  const i64 N = 9, V = 41, split = 17;
  const float z = 1e-4f, gs = 1.0f / float(N);
  const auto logits = rand_vec(std::size_t(N * V), 7, 3.0f);
  std::vector<std::int32_t> targets(static_cast<std::size_t>(N));
  for (i64 n = 0; n < N; ++n) targets[std::size_t(n)] = std::int32_t((n * 11 + 2) % V);
  std::vector<float> slice[2];
  const i64 first[2] = {0, split}, width[2] = {split, V - split};
  for (int r = 0; r < 2; ++r) {
    slice[r].resize(std::size_t(N * width[r]));
    for (i64 n = 0; n < N; ++n)
      for (i64 v = 0; v < width[r]; ++v) slice[r][std::size_t(n * width[r] + v)] = logits[std::size_t(n * V + first[r] + v)];
  }
  std::vector<float> mx[2] = {std::vector<float>(std::size_t(N)), std::vector<float>(std::size_t(N))};
  Mirror dev(*be);
  const float* dslice[2] = {dev.in(slice[0]), dev.in(slice[1])};
  for (int r = 0; r < 2; ++r) {
    Mirror d(*be);
    be->row_max(dslice[r], N, width[r], d.out(mx[r]));
    d.back();
  }
  std::vector<float> gmax(static_cast<std::size_t>(N));
  for (i64 n = 0; n < N; ++n) gmax[std::size_t(n)] = std::max(mx[0][std::size_t(n)], mx[1][std::size_t(n)]);
  std::vector<double> part[2] = {std::vector<double>(std::size_t(2 * N)), std::vector<double>(std::size_t(2 * N))};
  const float* dgmax = dev.in(gmax);
  for (int r = 0; r < 2; ++r) {
    Mirror d(*be);
    be->xent_partials(dslice[r], targets.data(), first[r], dgmax, d.out(part[r]), N, width[r]);
    d.back();
  }
  std::vector<double> sum(static_cast<std::size_t>(2 * N));
  for (i64 i = 0; i < 2 * N; ++i) sum[std::size_t(i)] = part[0][std::size_t(i)] + part[1][std::size_t(i)];
  for (int r = 0; r < 2; ++r) {
    std::vector<float> nll(static_cast<std::size_t>(N)), lz(static_cast<std::size_t>(N)), d(static_cast<std::size_t>(N * width[r]));
    Mirror m(*be);
    be->xent_finish(dslice[r], targets.data(), first[r], dgmax, m.in(sum), m.out(nll), m.out(lz), m.out(d), z, gs, N,
                    width[r]);
    m.back();
    for (i64 n = 0; n < N; ++n) {
      double m = -1e300;
      for (i64 v = 0; v < V; ++v) m = std::max(m, double(logits[std::size_t(n * V + v)]));
      double s = 0;
      for (i64 v = 0; v < V; ++v) s += std::exp(double(logits[std::size_t(n * V + v)]) - m);
      const double logz = m + std::log(s);
      const std::int32_t t = targets[std::size_t(n)];
      EXPECT_NEAR(nll[std::size_t(n)], logz - logits[std::size_t(n * V + t)], 1e-5) << n;
      EXPECT_NEAR(lz[std::size_t(n)], logz, 1e-5) << n;
      for (i64 v = 0; v < width[r]; ++v) {
        const i64 gv = first[r] + v;
        const double p = std::exp(double(logits[std::size_t(n * V + gv)]) - logz);
        const double want = gs * (p * (1 + 2 * z * logz) - (gv == t ? 1.0 : 0.0));
        ASSERT_NEAR(d[std::size_t(n * width[r] + v)], want, 1e-6) << n << "," << gv;
      }
    }
  }
}

// The bfloat16 nearest to x, ties to an even mantissa, by comparing the two candidates in
// double: an oracle independent of the bit trick the backend may use.
std::uint16_t bf16_nearest(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const std::uint32_t lo = bits & 0xFFFF0000u, hi = lo + 0x10000u;
  float flo, fhi;
  std::memcpy(&flo, &lo, 4);
  std::memcpy(&fhi, &hi, 4);
  const double dlo = std::abs(double(x) - flo), dhi = std::abs(double(fhi) - x);
  if (dlo < dhi) return std::uint16_t(lo >> 16);
  if (dhi < dlo) return std::uint16_t(hi >> 16);
  return std::uint16_t(((lo >> 16) & 1u) ? hi >> 16 : lo >> 16);
}

TEST_P(BackendOps, DecodeWeightQuantization) {
  auto w = rand_vec(1000, 11);
  w[3] = 1.00390625f;  // exactly between two bfloat16 values: ties to even
  w[4] = -3.0117188f;
  std::vector<std::uint16_t> b(w.size());
  Mirror d(*be);
  be->quantize_bf16(d.in(w), d.out(b), i64(w.size()));
  d.back();
  for (std::size_t i = 0; i < w.size(); ++i) ASSERT_EQ(b[i], bf16_nearest(w[i])) << i << " " << w[i];
  const i64 R = 7, C = 29;
  auto m = rand_vec(std::size_t(R * C), 12);
  std::fill(m.begin() + 2 * C, m.begin() + 3 * C, 0.0f);  // a zero row
  std::vector<std::int8_t> q(m.size());
  std::vector<float> scales(static_cast<std::size_t>(R));
  Mirror d8(*be);
  be->quantize_int8_rows(d8.in(m), R, C, d8.out(q), d8.out(scales));
  d8.back();
  for (i64 r = 0; r < R; ++r) {
    double mx = 0;
    for (i64 c = 0; c < C; ++c) mx = std::max(mx, std::abs(double(m[std::size_t(r * C + c)])));
    const double scale = mx > 0 ? mx / 127 : 1.0;
    ASSERT_NEAR(scales[std::size_t(r)], scale, 1e-6 * scale) << r;
    for (i64 c = 0; c < C; ++c) {
      const double want = std::round(m[std::size_t(r * C + c)] / scale);
      ASSERT_LE(std::abs(q[std::size_t(r * C + c)] - want), 1.0) << r << "," << c;  // half-way cases may round either way in float
      ASSERT_LE(std::abs(q[std::size_t(r * C + c)] * scales[std::size_t(r)] - m[std::size_t(r * C + c)]),
                0.5 * scale * (1 + 1e-5))
          << r << "," << c;
    }
  }
}

TEST_P(BackendOps, StoreKvRowsCopiesOrRoundsToBf16) {
  // 5 rows of 7 values (a source at pitch 11) into cache rows at pitch 9: fp32 bit for bit,
  // bf16 the nearest (ties to even); what lies between the rows stays as it was
  const i64 rows = 5, cols = 7, ld_src = 11, ld_dst = 9;
  auto src = rand_vec(std::size_t(rows * ld_src), 13);
  src[2] = 1.00390625f;  // a tie: to the even 1.0
  std::vector<float> f32(std::size_t(rows * ld_dst), -7.0f);
  std::vector<std::uint16_t> bf(std::size_t(rows * ld_dst), 0xABCD);
  Mirror d(*be);
  const float* dsrc = d.in(src);
  be->store_kv_rows(dsrc, ld_src, d.out(f32), KvFormat::kF32, ld_dst, rows, cols);
  be->store_kv_rows(dsrc, ld_src, d.out(bf), KvFormat::kBF16, ld_dst, rows, cols);
  d.back();
  for (i64 r = 0; r < rows; ++r)
    for (i64 c = 0; c < ld_dst; ++c) {
      const std::size_t at = std::size_t(r * ld_dst + c);
      const float x = src[std::size_t(r * ld_src + c)];
      EXPECT_EQ(f32[at], c < cols ? x : -7.0f) << r << "," << c;
      EXPECT_EQ(bf[at], c < cols ? bf16_nearest(x) : 0xABCD) << r << "," << c;
    }
  EXPECT_EQ(bf[2], 0x3F80);
}

TEST_P(BackendOps, SamplingStatisticsAndTopK) {
  const i64 b = 3, V = 1001;
  auto x = rand_vec(std::size_t(b * V), 21);
  for (auto& v : x) v *= 8;
  x[std::size_t(V + 17)] = x[std::size_t(V + 400)] = 40.0f;  // a tied maximum: the first index wins
  std::vector<std::int32_t> arg(static_cast<std::size_t>(b));
  std::vector<float> mx(static_cast<std::size_t>(b));
  std::vector<double> log_z(static_cast<std::size_t>(b));
  Mirror d(*be);
  const float* dx = d.in(x);
  be->logit_stats(dx, b, V, d.out(arg), d.out(mx), d.out(log_z));
  d.back();
  for (i64 r = 0; r < b; ++r) {
    const float* row = x.data() + r * V;
    const auto best = std::max_element(row, row + V);  // the first of equal maxima
    ASSERT_EQ(arg[std::size_t(r)], best - row) << r;
    ASSERT_EQ(mx[std::size_t(r)], *best);
    long double z = 0;
    for (i64 v = 0; v < V; ++v) z += std::exp((long double)row[v]);
    ASSERT_NEAR(log_z[std::size_t(r)], double(std::log(z)), 1e-12 * std::abs(double(std::log(z)))) << r;
  }
  EXPECT_EQ(arg[1], 17);
  for (const i64 k : {i64(1), i64(7), V}) {
    std::vector<float> values(static_cast<std::size_t>(k));
    std::vector<std::int32_t> ids(static_cast<std::size_t>(k));
    Mirror m(*be);
    be->top_k(dx + V, V, k, m.out(values), m.out(ids));
    m.back();
    std::vector<std::int32_t> order(static_cast<std::size_t>(V));
    for (i64 v = 0; v < V; ++v) order[std::size_t(v)] = std::int32_t(v);
    const float* row = x.data() + V;
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t c) { return row[a] > row[c]; });
    for (i64 i = 0; i < k; ++i) {
      ASSERT_EQ(ids[std::size_t(i)], order[std::size_t(i)]) << "k " << k << " rank " << i;
      ASSERT_EQ(values[std::size_t(i)], row[order[std::size_t(i)]]);
    }
  }
}

// allocate returns zeros also where it hands out memory freed before (the CPU backend keeps
// freed buffers of 1 MiB and more for the next allocation of the same size), and a
// buffer too large for the memory available is refused with an error naming the size.
TEST_P(BackendOps, AllocationsAreZeroAfterReuse) {
  const std::size_t bytes = std::size_t(3) << 20;
  std::vector<std::uint8_t> host(bytes, 0xAB);
  for (int round = 0; round < 3; ++round) {
    void* p = be->allocate(bytes);
    std::vector<std::uint8_t> back(bytes, 0xCD);
    be->copy_to_host(back.data(), p, bytes);
    ASSERT_EQ(std::count(back.begin(), back.end(), std::uint8_t(0)), std::ptrdiff_t(bytes)) << "round " << round;
    be->copy_to_device(p, host.data(), bytes);  // dirty it for the next round
    be->deallocate(p, bytes);
  }
  const double avail = be->memory_available();
  if (avail > 0) {
    void* kept = be->allocate(bytes);
    be->deallocate(kept, bytes);  // (kept, and then given back before the refusal)
    try {
      be->allocate(std::size_t(avail * 2));
      FAIL() << "an allocation of twice the available memory succeeded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("out of"), std::string::npos) << e.what();  // CPU: "out of memory", CUDA: "out of GPU memory"
    }
  }
}

// The CPU backend's buffers of 2 MiB and more start on a 2 MiB boundary and carry the
// kernel's huge-page advice ("hg" in /proc/self/smaps), and the process's address space
// grows by the buffer's pages, not by the 2 MiB of alignment slack (unmapped before and after it).
std::size_t virtual_bytes() {  // VmSize in /proc/self/status
  std::ifstream status("/proc/self/status");
  std::string key;
  std::size_t kb = 0;
  while (status >> key)
    if (key == "VmSize:" && status >> kb) return kb * 1024;
  return 0;
}

std::string smaps_flags(const void* p) {  // VmFlags of the mapping holding p
  std::ifstream smaps("/proc/self/smaps");
  std::string line, flags;
  bool holds = false;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (line.rfind("VmFlags:", 0) == 0) {
      if (holds) flags = line;
    } else if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      holds = lo <= reinterpret_cast<std::uintptr_t>(p) && reinterpret_cast<std::uintptr_t>(p) < hi;
    }
  }
  return flags;
}

TEST(CpuMemory, LargeBuffersAreAlignedAndAdvisedHugePages) {
  const auto be = make_backend("cpu");
  const std::size_t bytes = (std::size_t(5) << 20) + 123, page = 4096;
  const std::size_t before = virtual_bytes();
  auto* p = static_cast<std::uint8_t*>(be->allocate(bytes));
  const std::size_t after = virtual_bytes();
  // (a margin below the 2 MiB slack for the heap growing meanwhile: reading /proc allocates)
  EXPECT_GE(after - before, (bytes + page - 1) / page * page);
  EXPECT_LT(after - before, (bytes + page - 1) / page * page + (std::size_t(1) << 20))
      << "the address space grew by the buffer's pages, not the alignment slack";
  ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % (std::size_t(1) << 21), 0u);
  ASSERT_EQ(std::count(p, p + bytes, std::uint8_t(0)), std::ptrdiff_t(bytes));
  std::fill_n(p, bytes, std::uint8_t(7));  // every page of it writable
  // (a kernel built without THP refuses the advice: then the pages stay 4 KB, as documented)
  const bool kernel_has_thp = std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good();
  const std::string flags = smaps_flags(p);
  EXPECT_EQ(flags.find(" hg") != std::string::npos, kernel_has_thp) << flags;
  be->deallocate(p, bytes);
}

// The guarded CPU backend: a buffer's last 64-byte line is followed by an inaccessible
// page, so a kernel or a plan that overruns a buffer faults at once in every test that
// runs on it (the model-vs-PyTorch test does).
TEST(GuardedBackend, AnOverrunFaultsAtOnce) {
  const auto be = make_backend("cpu_guarded");
  auto* p = static_cast<float*>(be->allocate(100 * sizeof(float)));
  for (int i = 0; i < 100; ++i) ASSERT_EQ(p[i], 0.0f) << "zero-filled";
  p[99] = 1.0f;          // the last element: fine
  volatile float* q = p;
  EXPECT_DEATH(q[112] = 2.0f, "") << "the first float past the 64-byte-rounded end";
  be->deallocate(p, 100 * sizeof(float));
}

INSTANTIATE_TEST_SUITE_P(EveryBackend, BackendOps, ::testing::ValuesIn(testing_util::usable_backend_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace palm
