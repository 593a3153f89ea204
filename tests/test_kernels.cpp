// Every Backend op against the double references in ref/, at odd shapes, and every
// backward op against central finite differences of the reference forward in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <cstring>
#include <random>
#include <tuple>

#include "device_mirror.h"
#include "expect_close.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_stored_avx512.h"
#include "random_vec.h"
#include "ref/ref_ops.h"

namespace palm {
namespace {

using ref::Vec;

using testing_util::expect_close;
using testing_util::Mirror;
using testing_util::rand_vec;

Vec to_d(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

// Central differences of f at x, for up to `samples` evenly spread coordinates.
// Compares with the analytic gradient `grad` (scale-aware tolerance).
void expect_grad_fd(const std::function<double(const Vec&)>& f, const std::vector<float>& x,
                    const std::vector<float>& grad, double tol, const char* what,
                    std::size_t samples = 300) {
  Vec xd = to_d(x);
  const std::size_t stride = std::max<std::size_t>(1, x.size() / samples);
  double max_ref = 1e-30, max_err = 0;
  std::vector<std::pair<double, double>> pairs;
  for (std::size_t i = 0; i < x.size(); i += stride) {
    const double h = 1e-5 * std::max(1.0, std::abs(xd[i]));
    const double keep = xd[i];
    xd[i] = keep + h;
    const double fp = f(xd);
    xd[i] = keep - h;
    const double fm = f(xd);
    xd[i] = keep;
    const double num = (fp - fm) / (2 * h);
    pairs.emplace_back(grad[i], num);
  }
  for (auto& [a, n] : pairs) max_ref = std::max(max_ref, std::abs(n));
  for (auto& [a, n] : pairs) max_err = std::max(max_err, std::abs(a - n));
  EXPECT_LE(max_err, tol * max_ref) << what << " (" << pairs.size() << " coordinates checked)";
}

double dot(const Vec& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Every test runs on every backend compiled into this build and usable here
// (testing_util::usable_backend_names()), on buffers in that backend's memory.

class Kernels : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    be = make_backend(GetParam());
  }
  std::unique_ptr<Backend> be;
};

TEST_P(Kernels, GemmAllTransposesOddShapesAndStrides) {
  for (i64 M : {1, 8, 17, 129})
    for (i64 N : {1, 17, 130})
      for (i64 K : {1, 17, 129})
        for (int ta = 0; ta < 2; ++ta)
          for (int tb = 0; tb < 2; ++tb) {
            const i64 lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
            auto A = rand_vec((ta ? K : M) * lda, 1), B = rand_vec((tb ? N : K) * ldb, 2);
            for (float beta : {0.5f, 0.0f}) {
              auto C = rand_vec(M * ldc, 3);
              const Vec want = ref::gemm(ta, tb, M, N, K, 0.7, to_d(A), lda, to_d(B), ldb, beta, to_d(C), ldc);
              // beta 0 overwrites: what C held (NaN here) must not reach the result
              if (beta == 0.0f) std::fill(C.begin(), C.end(), std::numeric_limits<float>::quiet_NaN());
              Mirror d(*be);
              be->gemm(ta, tb, M, N, K, 0.7f, d.in(A), lda, d.in(B), ldb, beta, d.out(C), ldc);
              d.back();
              // the padding between rows (ldc > N) is left alone
              for (i64 m = 0; m < M; ++m)
                for (i64 n = N; n < ldc && beta == 0.0f; ++n) EXPECT_TRUE(std::isnan(C[m * ldc + n]));
              for (i64 m = 0; m < M && beta == 0.0f; ++m)
                for (i64 n = N; n < ldc; ++n) C[m * ldc + n] = float(want[m * ldc + n]);
              expect_close(C, want, 1e-5, "gemm");
            }
          }
}

TEST_P(Kernels, GemmBf16ExactOnBf16RepresentableInputs) {
  // Values k/8 with |k| < 128 have at most 8 significant bits: exact in bfloat16, so the
  // only error left is fp32 accumulation.
  std::mt19937 g(5);
  std::uniform_int_distribution<int> d(-127, 127);
  // M = 4133: the CPU runs products with A transposed in blocks of 2048 rows (two and a part)
  for (i64 M : {1, 17, 129, 4133})
    for (i64 N : {1, 130})
      for (i64 K : {17, 129})
        for (int ta = 0; ta < 2; ++ta)
          for (int tb = 0; tb < 2; ++tb) {
            const i64 lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N;
            std::vector<float> A((ta ? K : M) * lda), B((tb ? N : K) * ldb), C(M * ldc, 0.5f);
            for (auto& x : A) x = d(g) / 8.0f;
            for (auto& x : B) x = d(g) / 8.0f;
            for (float beta : {0.0f, 1.0f}) {
              std::vector<float> c = C;
              const Vec want = ref::gemm(ta, tb, M, N, K, 0.25, to_d(A), lda, to_d(B), ldb, beta, to_d(c), ldc);
              Mirror m(*be);
              be->gemm_bf16(ta, tb, M, N, K, 0.25f, m.in(A), lda, m.in(B), ldb, beta, m.out(c), ldc);
              m.back();
              expect_close(c, want, 1e-6, "gemm_bf16 exact inputs");
            }
          }
}

TEST_P(Kernels, GemmBf16ErrorIsBf16Rounding) {
  const i64 M = 33, N = 65, K = 257;
  auto A = rand_vec(M * K, 30), B = rand_vec(N * K, 31);
  std::vector<float> C(M * N);
  Mirror d(*be);
  be->gemm_bf16(false, true, M, N, K, 1.0f, d.in(A), K, d.in(B), K, 0.0f, d.out(C), N);
  d.back();
  const Vec want = ref::gemm(false, true, M, N, K, 1.0, to_d(A), K, to_d(B), K, 0.0, Vec(M * N), N);
  // each operand is off by at most 2^-9 relative: a dot product of random-sign terms is
  // off by ~2^-8 * |a||b| / sqrt(K) typical; bound it loosely by 2^-6 of the largest value
  expect_close(C, want, 1.0 / 64, "gemm_bf16 rounding");
  // and it is not exact: the inputs really were rounded
  double diff = 0;
  for (i64 i = 0; i < M * N; ++i) diff = std::max(diff, std::abs(C[i] - want[i]));
  EXPECT_GT(diff, 1e-5);
}

TEST_P(Kernels, RowsTimesStoredAllFormats) {
  // bf16 and int8 weights made exactly representable, so the product is exact in double.
  // The int8 kernels may round the activations (the CPU's VNNI kernel quantizes them in
  // groups of kQuantGroup consecutive values, to max|x|/127 steps):
  // each result must then lie within what that rounding can change, sum_k |w_k| * (the
  // activation's largest rounding error), plus 1e-5.
  // The bf16 kernels may carry an activation as two bf16: hi = bf16(x) is within 2^-9 |x|
  // of x, lo = bf16(x - hi) within 2^-9 of the remainder, so hi + lo is within 2^-18 |x|,
  // far tighter than one bf16 (2^-9, which must fail); the CPU's panel kernel rounds no
  // activation and is held to fp32 summation, except from bf16_dot_min_rows() rows on
  // (AVX512_BF16's vdpbf16ps), where it rounds each activation to bf16, to nearest even:
  // within 2^-8 |x| (8 significant bits), and held to fp32 summation of those.
  // K: a partial group and a partial 4-byte quad (329 = 2 * 128 + 73, 4,229 = 33 * 128 + 5),
  // rows shorter than one quad or pair (3, 2), a pair of whole quads past one group (130);
  // N: 27 panels of 16 rows and a part: at 1-2 rows 3 blocks of 8 or 6 of 4 panels side by
  // side, then 3 panels alone, then the part. The weights go through
  // stored_to_product_layout first, as stored weights do.
  const i64 N = 27 * 16 + 5;
  for (auto [K, b] : {std::pair<i64, i64>{329, 1}, {329, 2}, {329, 3}, {329, 9}, {329, 17}, {329, 70}, {4229, 1}, {4229, 6},
                      {3, 17}, {2, 1}, {130, 16}}) {
    SCOPED_TRACE("K " + std::to_string(K) + ", b " + std::to_string(b));
    auto X = rand_vec(b * K, 50);
    if (b > 1) X[K + 7] = 40.0f;  // an outlier: its group's other values lose precision, not other groups'
    std::mt19937 g(51);
    std::uniform_int_distribution<int> d(-127, 127);
    std::vector<float> wf(N * K), scales(N);
    std::vector<std::uint16_t> wb(N * K);
    std::vector<std::int8_t> wq(N * K);
    for (i64 n = 0; n < N; ++n) scales[n] = 0.01f * float(n + 1);
    for (i64 i = 0; i < N * K; ++i) {
      wq[i] = std::int8_t(d(g));
      wf[i] = float(wq[i]) / 8.0f;  // 8 significant bits: exact in bf16
      std::uint32_t bits;
      std::memcpy(&bits, &wf[i], 4);
      wb[i] = std::uint16_t(bits >> 16);
    }
    // the largest rounding of activation (i, k) each format's kernels may make
    std::vector<double> x_err_int8(b * K), x_err_bf16(b * K);
    for (i64 i = 0; i < b * K; ++i) x_err_bf16[i] = std::ldexp(std::abs(double(X[i])), -18) * (1 + 1e-6);
    // the quantization groups of each row, as cpu_stored_avx512.h defines them
    auto groups = [&](auto&& each_group) {
      for (i64 k0 = 0; k0 < K; k0 += kQuantGroup) {
        std::vector<i64> ks;
        for (i64 k = k0; k < std::min(K, k0 + kQuantGroup); ++k) ks.push_back(k);
        each_group(ks);
      }
    };
    std::vector<float> x_int8(b * K);  // what the CPU's VNNI kernel multiplies, from its definition
    for (i64 i = 0; i < b; ++i)
      groups([&](const std::vector<i64>& ks) {
        float amax = 0;
        for (i64 k : ks) amax = std::max(amax, std::fabs(X[i * K + k]));
        for (i64 k : ks) {
          x_err_int8[i * K + k] = 0.5 * double(amax) / 127 * (1 + 1e-6);
          x_int8[i * K + k] = amax == 0.0f ? 0.0f
                              : (amax / 127.0f) * float(std::clamp(int(std::nearbyint(X[i * K + k] * (127.0f / amax))), -127, 127));
        }
      });
    const bool cpu_dot = GetParam().rfind("cpu", 0) == 0 && stored_avx512_available();
    // what the CPU's vdpbf16ps kernel multiplies: X rounded to bf16 by the bits, nearest even
    const bool bf16_rounds = cpu_dot && bf16_dot_min_rows() > 0 && b >= bf16_dot_min_rows();
    std::vector<float> x_bf16(b * K);
    for (i64 i = 0; i < b * K; ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, &X[i], 4);
      bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
      std::memcpy(&x_bf16[i], &bits, 4);
      if (bf16_rounds) x_err_bf16[i] = std::ldexp(std::abs(double(X[i])), -8) * (1 + 1e-6);
    }
    Mirror dev(*be);
    auto check = [&](WeightFormat f, const void* W, const float* sc, double mult_of_n(i64), const std::vector<double>* x_err) {
      // the CPU's AVX-512 kernels: int8 multiplies the quantized activations, bf16 the fp32
      // ones (weights widened exactly) or the bf16-rounded ones, fp32 (up to 16 rows) the
      // fp32 ones, so each matches its model up to fp32 summation
      const std::vector<float>* x_model = !cpu_dot                    ? nullptr
                                          : f == WeightFormat::kInt8 ? &x_int8
                                          : f == WeightFormat::kBF16 ? (bf16_rounds ? &x_bf16 : &X)
                                          : b <= 16                  ? &X
                                                                     : nullptr;
      std::vector<float> C(b * N, 1.0f);
      Mirror m(*be);
      be->rows_times_stored(m.in(X), b, K, W, f, sc, N, 0.5f, 2.0f, m.out(C));
      m.back();
      double max_ref = 0;
      Vec want(b * N), bound(b * N);
      for (i64 i = 0; i < b; ++i)
        for (i64 n = 0; n < N; ++n) {
          double s = 0, e = 0;
          for (i64 k = 0; k < K; ++k) {
            s += double(X[i * K + k]) * double(wq[n * K + k]);
            if (x_err) e += std::abs(double(wq[n * K + k])) * (*x_err)[i * K + k];
          }
          want[i * N + n] = 0.5 * mult_of_n(n) * s + 2.0;
          bound[i * N + n] = 0.5 * mult_of_n(n) * e;
          max_ref = std::max(max_ref, std::abs(want[i * N + n]));
        }
      for (i64 j = 0; j < b * N; ++j)
        ASSERT_LE(std::abs(double(C[j]) - want[j]), bound[j] + 1e-5 * max_ref)
            << "format " << int(f) << " b " << b << " element " << j << ": got " << C[j] << " want " << want[j];
      if (!x_model) return;
      Vec exact(b * N);  // the kernel's own arithmetic: only fp32 summation error remains
      for (i64 i = 0; i < b; ++i)
        for (i64 n = 0; n < N; ++n) {
          double s = 0;
          for (i64 k = 0; k < K; ++k) s += double((*x_model)[i * K + k]) * double(wq[n * K + k]);
          exact[i * N + n] = 0.5 * mult_of_n(n) * s + 2.0;
        }
      // (fp32 rounding adds up like a random walk over the K terms: 2e-6 of the largest
      // result up to K = 1024, growing as sqrt(K); at K = 4,229, b = 6 one of 437 x 6
      // results was 2.05e-6 off)
      const double tol = 2e-6 * std::max(1.0, std::sqrt(double(K) / 1024));
      expect_close(C, exact, tol,
                   f == WeightFormat::kInt8 ? "int8 VNNI kernel"
                   : f == WeightFormat::kF32 ? "fp32 kernel"
                   : bf16_rounds            ? "bf16 vdpbf16ps kernel"
                                            : "bf16 panel kernel");
    };
    float* wf_stored = dev.in(wf);
    be->stored_to_product_layout(wf_stored, WeightFormat::kF32, N, K);  // nothing happens to fp32
    check(WeightFormat::kF32, wf_stored, nullptr, [](i64) { return 1.0 / 8; }, nullptr);
    std::uint16_t* wb_stored = dev.in(wb);
    be->stored_to_product_layout(wb_stored, WeightFormat::kBF16, N, K);
    check(WeightFormat::kBF16, wb_stored, nullptr, [](i64) { return 1.0 / 8; }, &x_err_bf16);
    static std::vector<float> sc;
    sc = scales;
    std::int8_t* wq_stored = dev.in(wq);
    be->stored_to_product_layout(wq_stored, WeightFormat::kInt8, N, K);
    check(WeightFormat::kInt8, wq_stored, dev.in(scales), [](i64 n) { return double(sc[n]); }, &x_err_int8);
  }
}

TEST_P(Kernels, EmbeddingForwardAndBackward) {
  const i64 V = 17, D = 129, N = 33;
  auto E = rand_vec(V * D, 4);
  std::vector<std::int32_t> tok(N);
  for (i64 n = 0; n < N; ++n) tok[n] = std::int32_t((n * 7) % V);
  std::vector<float> x(N * D);
  Mirror d(*be);
  be->embedding_fwd(tok.data(), d.in(E), d.out(x), N, D);
  d.back();
  for (i64 n = 0; n < N; ++n)
    for (i64 d = 0; d < D; ++d) ASSERT_EQ(x[n * D + d], E[tok[n] * D + d]);
  auto dx = rand_vec(N * D, 5);
  std::vector<float> dE(V * D, 1.0f);
  Mirror m(*be);
  be->embedding_bwd_acc(tok.data(), m.in(dx), m.out(dE), N, D);
  m.back();
  Vec want(V * D, 1.0);
  for (i64 n = 0; n < N; ++n)
    for (i64 d = 0; d < D; ++d) want[tok[n] * D + d] += dx[n * D + d];
  expect_close(dE, want, 1e-6, "embedding_bwd_acc");
}

TEST_P(Kernels, LayerNormForwardAndFiniteDifferences) {
  for (i64 N : {1, 17})
    for (i64 D : {1, 17, 129}) {
      auto x = rand_vec(N * D, 6, 2.0f), scale = rand_vec(D, 7);
      for (auto& v : x) v += 3.0f;  // a non-zero mean
      std::vector<float> y(N * D), mean(N), rstd(N);
      Mirror d(*be);
      float *dmean = d.out(mean), *drstd = d.out(rstd);
      const float *dx_in = d.in(x), *dscale_in = d.in(scale);
      be->layernorm_fwd(dx_in, dscale_in, d.out(y), dmean, drstd, N, D, 1e-6f);
      d.back();
      expect_close(y, ref::layernorm(to_d(x), to_d(scale), N, D, 1e-6), 2e-5, "layernorm_fwd");
      if (D == 1) continue;  // the output is identically 0: no gradient to check
      auto dy = rand_vec(N * D, 8);
      std::vector<float> dx(N * D, 0.0f), dscale(D, 0.0f);
      Mirror m(*be);
      be->layernorm_bwd_acc(m.in(dy), dx_in, dscale_in, dmean, drstd, m.out(dx), m.out(dscale), N, D);
      m.back();
      const Vec dyd = to_d(dy);
      auto loss_x = [&](const Vec& xv) {
        const Vec yv = ref::layernorm(xv, to_d(scale), N, D, 1e-6);
        double s = 0;
        for (std::size_t i = 0; i < yv.size(); ++i) s += yv[i] * dyd[i];
        return s;
      };
      auto loss_s = [&](const Vec& sv) {
        const Vec yv = ref::layernorm(to_d(x), sv, N, D, 1e-6);
        double s = 0;
        for (std::size_t i = 0; i < yv.size(); ++i) s += yv[i] * dyd[i];
        return s;
      };
      expect_grad_fd(loss_x, x, dx, 1e-3, "layernorm dx");
      expect_grad_fd(loss_s, scale, dscale, 1e-3, "layernorm dscale");
    }
}

TEST_P(Kernels, LayerNormBackwardAccumulates) {
  const i64 N = 5, D = 17;
  auto x = rand_vec(N * D, 9), scale = rand_vec(D, 10), dy = rand_vec(N * D, 11);
  std::vector<float> y(N * D), mean(N), rstd(N);
  Mirror d(*be);
  float *dxv = d.in(x), *dsc = d.in(scale), *ddy = d.in(dy), *dmean = d.out(mean), *drstd = d.out(rstd);
  be->layernorm_fwd(dxv, dsc, d.out(y), dmean, drstd, N, D, 1e-6f);
  std::vector<float> dx0(N * D, 0.0f), ds0(D, 0.0f), dx1(N * D, 2.0f), ds1(D, 3.0f);
  be->layernorm_bwd_acc(ddy, dxv, dsc, dmean, drstd, d.out(dx0), d.out(ds0), N, D);
  be->layernorm_bwd_acc(ddy, dxv, dsc, dmean, drstd, d.out(dx1), d.out(ds1), N, D);
  d.back();
  for (i64 i = 0; i < N * D; ++i) EXPECT_NEAR(dx1[i], dx0[i] + 2.0f, 1e-6);
  for (i64 i = 0; i < D; ++i) EXPECT_NEAR(ds1[i], ds0[i] + 3.0f, 1e-6);
}

TEST_P(Kernels, RopeForwardStridedAndFiniteDifferences) {
  const i64 T = 13, B = 2, N = B * T, heads = 3, K = 16, ld = heads * K + 5;
  auto in = rand_vec(N * ld, 12);
  std::vector<float> out(N * heads * K);
  Mirror d(*be);
  be->rope_fwd(d.in(in), ld, d.out(out), heads * K, N, T, heads, K, 10000.0f);
  d.back();
  Vec x(N * heads * K);
  for (i64 n = 0; n < N; ++n)
    for (i64 c = 0; c < heads * K; ++c) x[n * heads * K + c] = in[n * ld + c];
  expect_close(out, ref::rope(x, N, T, heads, K, 10000.0), 1e-5, "rope_fwd");
  // in place
  std::vector<float> inplace(in);
  {
    Mirror m(*be);
    float* dip = m.out(inplace);
    be->rope_fwd(dip, ld, dip, ld, N, T, heads, K, 10000.0f);
    m.back();
  }
  for (i64 n = 0; n < N; ++n)
    for (i64 c = 0; c < heads * K; ++c) ASSERT_EQ(inplace[n * ld + c], out[n * heads * K + c]);
  auto dy = rand_vec(N * heads * K, 13);
  std::vector<float> dx(N * heads * K);
  Mirror m(*be);
  be->rope_bwd(m.in(dy), heads * K, m.out(dx), heads * K, N, T, heads, K, 10000.0f);
  m.back();
  std::vector<float> xf(x.begin(), x.end());
  expect_grad_fd([&](const Vec& xv) { return dot(ref::rope(xv, N, T, heads, K, 10000.0), dy); },
                 xf, dx, 1e-4, "rope_bwd");
}

TEST_P(Kernels, RopeAtExplicitPositionsEqualsRopeAtThosePositions) {
  const i64 heads = 3, K = 16, T = 40;
  // rows of random values rotated to `positions` by the backend: {input, output}
  auto rotate = [&](const std::vector<std::int32_t>& positions, unsigned seed) {
    const i64 rows = i64(positions.size());
    auto x = rand_vec(rows * heads * K, seed);
    std::vector<float> y(rows * heads * K);
    Mirror d(*be);
    be->rope_fwd_at(d.in(x), heads * K, d.out(y), heads * K, rows, positions.data(), heads, K, 10000.0f);
    d.back();
    return std::make_pair(x, y);
  };
  const std::vector<std::int32_t> pos = {0, 39, 7, 7, 1};
  const i64 N = i64(pos.size());
  const auto [in, out] = rotate(pos, 40);
  // the reference rotates row n by n % T: place each row at its position in a T-row block
  for (i64 n = 0; n < N; ++n) {
    Vec block(T * heads * K, 0.0);
    for (i64 c = 0; c < heads * K; ++c) block[pos[n] * heads * K + c] = in[n * heads * K + c];
    const Vec want = ref::rope(block, T, T, heads, K, 10000.0);
    std::vector<float> got(out.begin() + n * heads * K, out.begin() + (n + 1) * heads * K);
    expect_close(got, Vec(want.begin() + pos[n] * heads * K, want.begin() + (pos[n] + 1) * heads * K), 1e-5, "rope_fwd_at");
  }
  // positions past the CPU's table of angles (65,536 rows), which are computed per row, beside
  // one inside it; the oracle is the rotation's closed form in double
  const std::vector<std::int32_t> far = {70000, 65536, 2};
  const i64 F = i64(far.size());
  const auto [in_far, out_far] = rotate(far, 43);
  Vec want_far(F * heads * K);
  for (i64 n = 0; n < F; ++n)
    for (i64 h = 0; h < heads; ++h)
      for (i64 i = 0; i < K / 2; ++i) {
        const double angle = double(far[n]) * std::pow(10000.0, -2.0 * double(i) / double(K));
        const double x1 = in_far[(n * heads + h) * K + i], x2 = in_far[(n * heads + h) * K + i + K / 2];
        want_far[(n * heads + h) * K + i] = x1 * std::cos(angle) - x2 * std::sin(angle);
        want_far[(n * heads + h) * K + i + K / 2] = x2 * std::cos(angle) + x1 * std::sin(angle);
      }
  expect_close(out_far, want_far, 1e-5, "rope_fwd_at past the table");
}

TEST_P(Kernels, SwigluForwardAndFiniteDifferences) {
  const i64 N = 17, F = 129, ld = 2 * F + 3;
  auto u = rand_vec(N * ld, 14, 3.0f);
  std::vector<float> act(N * F);
  Mirror d(*be);
  const float* du_in = d.in(u);
  be->swiglu_fwd(du_in, du_in + F, ld, d.out(act), N, F);
  d.back();
  Vec g(N * F), up(N * F);
  for (i64 n = 0; n < N; ++n)
    for (i64 f = 0; f < F; ++f) g[n * F + f] = u[n * ld + f], up[n * F + f] = u[n * ld + F + f];
  expect_close(act, ref::swiglu(g, up), 1e-5, "swiglu_fwd");
  auto da = rand_vec(N * F, 15);
  std::vector<float> du(N * ld, 0.0f);
  Mirror m(*be);
  float* ddu = m.out(du);
  be->swiglu_bwd(m.in(da), du_in, du_in + F, ld, ddu, ddu + F, ld, N, F);
  m.back();
  std::vector<float> dg(N * F), dup(N * F);
  for (i64 n = 0; n < N; ++n)
    for (i64 f = 0; f < F; ++f) dg[n * F + f] = du[n * ld + f], dup[n * F + f] = du[n * ld + F + f];
  std::vector<float> gf(g.begin(), g.end()), uf(up.begin(), up.end());
  expect_grad_fd([&](const Vec& gv) { return dot(ref::swiglu(gv, up), da); }, gf, dg, 1e-4, "swiglu dgate");
  expect_grad_fd([&](const Vec& uv) { return dot(ref::swiglu(g, uv), da); }, uf, dup, 1e-4, "swiglu dup");
}

struct AttnShape {
  i64 B, T, H, K;
};

class AttentionShapes : public ::testing::TestWithParam<std::tuple<std::string, AttnShape>> {
 protected:
  void SetUp() override {
    be = make_backend(std::get<0>(GetParam()));
  }
  std::unique_ptr<Backend> be;
};

TEST_P(AttentionShapes, ForwardAndFiniteDifferences) {
  const auto [B, T, H, K] = std::get<1>(GetParam());
  const i64 N = B * T, ld = 2 * K + 3;  // k | v interleaved in one strided buffer
  auto q = rand_vec(N * H * K, 16), kv = rand_vec(N * ld, 17);
  std::vector<float> saved(be->attention_saved_floats(B, T, H)), o(N * H * K);
  Mirror d(*be);
  const float *dq_in = d.in(q), *dkv_in = d.in(kv);
  float *dsaved = d.out(saved), *dout_o = d.out(o);
  be->attention_fwd(dq_in, dkv_in, dkv_in + K, ld, dsaved, dout_o, B, T, H, K);
  d.back();
  Vec k(N * K), v(N * K);
  for (i64 n = 0; n < N; ++n)
    for (i64 e = 0; e < K; ++e) k[n * K + e] = kv[n * ld + e], v[n * K + e] = kv[n * ld + K + e];
  const Vec qd = to_d(q);
  expect_close(o, ref::attention(qd, k, v, B, T, H, K), 1e-5, "attention_fwd");
  {  // inference: nothing saved (the CPU keeps its scores per thread and folds the sums)
    std::vector<float> o2(N * H * K, 7.0f);
    Mirror d2(*be);
    const float* kv2 = d2.in(kv);
    be->attention_fwd(d2.in(q), kv2, kv2 + K, ld, nullptr, d2.out(o2), B, T, H, K);
    d2.back();
    expect_close(o2, ref::attention(qd, k, v, B, T, H, K), 1e-5, "attention_fwd without saved");
  }

  auto dout = rand_vec(N * H * K, 18);
  std::vector<float> dq(N * H * K), dk(N * K), dkv(N * ld, 9.0f);
  std::vector<float> scratch(be->attention_bwd_scratch_floats(B, T, H, K));
  Mirror m(*be);
  float* ddkv = m.out(dkv);
  be->attention_bwd(m.in(dout), dq_in, dkv_in, dkv_in + K, ld, dout_o, dsaved, m.out(dq), m.out(dk), ddkv + K, ld,
                    m.in(scratch), i64(scratch.size()), B, T, H, K);
  m.back();
  std::vector<float> dv(N * K);
  for (i64 n = 0; n < N; ++n)
    for (i64 e = 0; e < K; ++e) {
      dv[n * K + e] = dkv[n * ld + K + e];
      ASSERT_EQ(dkv[n * ld + e], 9.0f) << "attention_bwd wrote outside dv";
    }
  std::vector<float> kf(k.begin(), k.end()), vf(v.begin(), v.end());
  expect_grad_fd([&](const Vec& x) { return dot(ref::attention(x, k, v, B, T, H, K), dout); }, q, dq, 1e-4, "attention dq");
  expect_grad_fd([&](const Vec& x) { return dot(ref::attention(qd, x, v, B, T, H, K), dout); }, kf, dk, 1e-4, "attention dk");
  expect_grad_fd([&](const Vec& x) { return dot(ref::attention(qd, k, x, B, T, H, K), dout); }, vf, dv, 1e-4, "attention dv");
}

INSTANTIATE_TEST_SUITE_P(Odd, AttentionShapes,
                         ::testing::Combine(::testing::ValuesIn(testing_util::usable_backend_names()),
                                            ::testing::Values(AttnShape{1, 1, 1, 2}, AttnShape{2, 17, 3, 16},
                                                              AttnShape{1, 33, 2, 8}, AttnShape{2, 70, 3, 16},
                                                              AttnShape{1, 40, 4, 128})),
                         [](const ::testing::TestParamInfo<std::tuple<std::string, AttnShape>>& p) {
                           const AttnShape a = std::get<1>(p.param);
                           return std::get<0>(p.param) + "_B" + std::to_string(a.B) + "_T" + std::to_string(a.T) + "_H" +
                                  std::to_string(a.H) + "_K" + std::to_string(a.K);
                         });

TEST_P(Kernels, CrossEntropyWithZLossAndFiniteDifferences) {
  for (i64 V : {1, 17, 129}) {
    const i64 N = 17;
    const float z = 1e-2f;  // larger than PaLM's 1e-4 so its gradient term is visible
    auto logits = rand_vec(N * V, 19, 3.0f);
    std::vector<std::int32_t> tgt(N);
    for (i64 n = 0; n < N; ++n) tgt[n] = std::int32_t((n * 5) % V);
    std::vector<float> nll(N), lz(N), dl(N * V);
    Mirror d(*be);
    be->xent_fwd_bwd(d.in(logits), tgt.data(), d.out(nll), d.out(lz), d.out(dl), z, 1.0f / N, N, V);
    d.back();
    Vec want_nll, want_lz;
    ref::xent(to_d(logits), tgt, N, V, z, &want_nll, &want_lz);
    expect_close(nll, want_nll, 1e-5, "xent nll");
    expect_close(lz, want_lz, 1e-5, "xent log_z");
    expect_grad_fd([&](const Vec& x) { return ref::xent(x, tgt, N, V, z); }, logits, dl, 1e-4, "xent dlogits");
    // in place (dlogits aliasing logits) gives the same gradient
    std::vector<float> inplace(logits);
    Mirror m(*be);
    float* dip = m.out(inplace);
    be->xent_fwd_bwd(dip, tgt.data(), m.out(nll), m.out(lz), dip, z, 1.0f / N, N, V);
    m.back();
    EXPECT_EQ(inplace, dl);
  }
}

TEST_P(Kernels, Add) {
  auto a = rand_vec(129, 20), b = rand_vec(129, 21);
  std::vector<float> out(129);
  Mirror d(*be);
  be->add(d.in(a), d.in(b), d.out(out), 129);
  d.back();
  for (int i = 0; i < 129; ++i) ASSERT_EQ(out[i], a[i] + b[i]);
}

INSTANTIATE_TEST_SUITE_P(EveryBackend, Kernels, ::testing::ValuesIn(testing_util::usable_backend_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace palm
