// Decode attention (Backend::attention_decode, attention_decode_beside) on every backend
// usable here, against the last row of causal attention in double (ref::attention) over
// the cache's own values: fp32 caches to 1e-5 of the largest output. bf16 caches (k and v
// rounded to bf16, and the queries too, so that the oracle holds whether or not a backend
// rounds them) to what rounding the softmax weights to bf16 may move each output, as the
// CPU's vdpbf16ps kernel does: up to 2^-8 of each term (bf16's unit roundoff), so at most
// 2^-8 sum_t p_t |v_t| / sum_t p_t (the same attention over |v|), allowed twice that (at
// 2^-9 the kernel fails: the bound is reached); a lost pair, block or tile moves outputs by
// whole terms (a swapped dimension order and a lost pair each fail most bf16 cases).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/threads.h"
#include "device_mirror.h"
#include "expect_close.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_stored_avx512.h"
#include "random_vec.h"
#include "ref/ref_ops.h"

namespace palm {
namespace {

using testing_util::expect_close;
using testing_util::Mirror;
using testing_util::rand_vec;

// x rounded to bf16, nearest even (what store_kv_rows writes)
std::uint16_t bf16_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return std::uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}
float bf16_value(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}
void round_to_bf16(std::vector<float>& v) {
  for (float& x : v) x = bf16_value(bf16_bits(x));
}

const char* name(KvFormat f) { return f == KvFormat::kBF16 ? "bf16" : "fp32"; }

// The cache rows in backend memory in format f; bf16: `rows` becomes the rounded values
// the backend holds (the oracle's input).
const void* upload(Mirror& m, std::vector<float>& rows, KvFormat f) {
  if (f == KvFormat::kF32) return m.in(rows);
  std::vector<std::uint16_t> bits(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) bits[i] = bf16_bits(rows[i]);
  round_to_bf16(rows);
  return m.in(bits);
}

// Head outputs [H*K] of a query at the last of T cached positions (rows at ld: k | v).
ref::Vec last_row(const std::vector<float>& q, const std::vector<float>& rows, i64 ld, i64 T, i64 H, i64 K) {
  ref::Vec qq(T * H * K, 0.0), k(T * K), v(T * K);
  for (i64 c = 0; c < H * K; ++c) qq[(T - 1) * H * K + c] = q[c];
  for (i64 t = 0; t < T; ++t)
    for (i64 e = 0; e < K; ++e) k[t * K + e] = rows[t * ld + e], v[t * K + e] = rows[t * ld + K + e];
  const ref::Vec full = ref::attention(qq, k, v, 1, T, H, K);
  return ref::Vec(full.begin() + (T - 1) * H * K, full.end());
}

// o (attention_decode's output for q over the T rows) against last_row, as the header says.
void expect_attention(const std::vector<float>& o, const std::vector<float>& q, const std::vector<float>& rows, i64 ld,
                      i64 T, i64 H, i64 K, KvFormat f, const std::string& what) {
  const ref::Vec want = last_row(q, rows, ld, T, H, K);
  if (f == KvFormat::kF32) return expect_close(o, want, 1e-5, what);
  std::vector<float> magnitudes = rows;
  for (i64 t = 0; t < T; ++t)
    for (i64 e = K; e < 2 * K; ++e) magnitudes[t * ld + e] = std::fabs(magnitudes[t * ld + e]);
  const ref::Vec bound = last_row(q, magnitudes, ld, T, H, K);
  double max_ref = 1e-30;
  for (const double w : want) max_ref = std::max(max_ref, std::abs(w));
  int bad = 0;
  for (std::size_t i = 0; i < o.size(); ++i)
    if (std::abs(double(o[i]) - want[i]) > std::ldexp(bound[i], -7) + 1e-5 * max_ref && bad++ < 3)
      ADD_FAILURE() << what << ": element " << i << " got " << o[i] << " want " << want[i] << ", allowed +-"
                    << std::ldexp(bound[i], -7);
}

class DecodeAttention : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { be = make_backend(GetParam()); }
  std::unique_ptr<Backend> be;
};

TEST_P(DecodeAttention, EqualsTheLastRowOfCausalAttention) {
  // three sequences; and one alone, whose positions the CPU kernel splits between threads
  // (two parts of 35 on two threads, merged by their maxima and sums). 3 heads: the
  // products' path; 16 and 32 heads (K = 32 and 16): the CPU's heads-in-lanes kernels, one
  // and two blocks of 16 heads, 70 positions = 4 blocks of 16 positions and 6 alone (parts of
  // 35: 2 and 3, an odd count of positions for the bf16 kernel's pairs). K = 80 and 48: the
  // fp32 kernel's output tiles of 64 dimensions and of 16 and 48 after them; the bf16
  // kernel's tiles of 32 and a last one of 16 (K = 16: only that). Queries 30x as large
  // spread the scores over tens (standard deviation ~10): a head's maximum then rises past
  // the kernel's reference by more than its slack (8) in later blocks too, which must scale
  // down what was summed; at 1x only the first block sets it.
  for (const KvFormat f : {KvFormat::kF32, KvFormat::kBF16})
    for (const auto& [H, K] : {std::pair<i64, i64>{3, 16}, {16, 32}, {32, 16}, {16, 80}, {16, 48}})
      for (const float q_scale : {1.0f, 30.0f})
        for (const std::vector<std::int64_t>& lens :
             {std::vector<std::int64_t>{1, 17, 70}, std::vector<std::int64_t>{70}}) {
          const i64 ld = 2 * K + 5;
          const i64 b = i64(lens.size());
          auto q = rand_vec(b * H * K, 41);
          for (float& x : q) x *= q_scale;
          if (f == KvFormat::kBF16) round_to_bf16(q);
          std::vector<std::vector<float>> caches;
          std::vector<const void*> ptrs;  // host array of pointers into the backend's memory
          Mirror d(*be);
          for (i64 i = 0; i < b; ++i) {
            caches.push_back(rand_vec(lens[i] * ld, 42 + unsigned(i)));
            ptrs.push_back(upload(d, caches.back(), f));
          }
          std::vector<float> o(b * H * K);
          be->attention_decode(d.in(q), ptrs.data(), f, ld, lens.data(), d.out(o), b, H, K);
          d.back();
          for (i64 i = 0; i < b; ++i) {
            const std::vector<float> qi(q.begin() + i * H * K, q.begin() + (i + 1) * H * K);
            const std::vector<float> got(o.begin() + i * H * K, o.begin() + (i + 1) * H * K);
            expect_attention(got, qi, caches[i], ld, lens[i], H, K, f,
                         std::string("attention_decode, ") + name(f) + " cache, H " + std::to_string(H) + ", K " +
                             std::to_string(K) + ", queries x" + std::to_string(int(q_scale)) + ", sequence of " +
                             std::to_string(lens[i]));
          }
        }
}

TEST_P(DecodeAttention, BesideAProductGivesBoth) {
  // attention_decode_beside: a batch-1 attention and a product against int8, bf16 or fp32
  // weights (the CPU runs them at once from 2 threads: one attends while the others take
  // groups of 4 panels or spans of 32 fp32 rows; 3 threads: two share the weights; 1 thread:
  // one after the other), each checked against its oracle as the tests above check them
  // alone: the attention against the last row of causal attention, the product against the
  // double-precision product of the activations as the kernel may round them (int8: the
  // VNNI kernel's quantized ones; bf16: x rounded to bf16 where the CPU multiplies on
  // vdpbf16ps, else x as it is; fp32: x as it is). N = 437: 6 groups
  // of 4 panels, 3 panels alone, a part of 5 rows; for fp32 13 spans of 32 rows, 2 blocks of
  // 8 and 5 rows alone. The bf16 and fp32 weights are the int8 ones / 8, exact in bf16.
  const i64 H = 16, K = 64, ld = 2 * K + 3, N = 27 * 16 + 5, Kp = 329;
  const int threads_before = current_threads();
  for (const KvFormat kv : {KvFormat::kF32, KvFormat::kBF16})
    for (const WeightFormat f : {WeightFormat::kInt8, WeightFormat::kBF16, WeightFormat::kF32})
      for (const int threads : {1, 2, 3})
        for (const i64 T : {std::int64_t(5), std::int64_t(300)}) {
          SCOPED_TRACE(std::string(name(kv)) + " cache, weight format " + std::to_string(int(f)) + ", threads " +
                       std::to_string(threads) + ", positions " + std::to_string(T));
          set_threads(threads);
          auto q = rand_vec(H * K, 60), cache = rand_vec(T * ld, 61);
          const auto x = rand_vec(Kp, 62);
          if (kv == KvFormat::kBF16) round_to_bf16(q);
          std::mt19937 g(63);
          std::uniform_int_distribution<int> d(-127, 127);
          std::vector<std::int8_t> wq(N * Kp);
          std::vector<float> wf(N * Kp), scales(N);
          std::vector<std::uint16_t> wb(N * Kp);
          for (auto& w : wq) w = std::int8_t(d(g));
          for (i64 i = 0; i < N * Kp; ++i) {
            wf[i] = float(wq[i]) / 8.0f;
            wb[i] = bf16_bits(wf[i]);
          }
          for (i64 n = 0; n < N; ++n) scales[n] = 0.01f * float(n + 1);
          Mirror m(*be);
          void* w_stored = f == WeightFormat::kInt8   ? static_cast<void*>(m.in(wq))
                           : f == WeightFormat::kBF16 ? static_cast<void*>(m.in(wb))
                                                      : static_cast<void*>(m.in(wf));
          be->stored_to_product_layout(w_stored, f, N, Kp);
          const void* cache_ptr[1] = {upload(m, cache, kv)};
          const std::int64_t lens[1] = {T};
          std::vector<float> o(H * K), C(N, 1.0f);
          be->attention_decode_beside(
              m.in(q), cache_ptr, kv, ld, lens, m.out(o), 1, H, K,
              {m.in(x), 1, Kp, w_stored, f, f == WeightFormat::kInt8 ? m.in(scales) : nullptr, N, 0.5f, 2.0f, m.out(C)});
          m.back();
          expect_attention(o, q, cache, ld, T, H, K, kv, "attention beside the product");
          // int8: the CPU's VNNI kernel quantizes groups of kQuantGroup to max|x| / 127 steps;
          // others multiply x as it is
          const bool cpu_kernels = GetParam().rfind("cpu", 0) == 0 && stored_avx512_available();
          const bool quantized = f == WeightFormat::kInt8 && cpu_kernels;
          const bool bf16_rounds = f == WeightFormat::kBF16 && cpu_kernels && bf16_dot_min_rows() == 1;
          ref::Vec want(N);
          for (i64 n = 0; n < N; ++n) {
            double s = 0;
            for (i64 k0 = 0; k0 < Kp; k0 += kQuantGroup) {
              float amax = 0;
              for (i64 kk = k0; kk < std::min(Kp, k0 + kQuantGroup); ++kk) amax = std::max(amax, std::fabs(x[kk]));
              for (i64 kk = k0; kk < std::min(Kp, k0 + kQuantGroup); ++kk) {
                const float xr = bf16_rounds                 ? bf16_value(bf16_bits(x[kk]))
                                 : !quantized || amax == 0.0f ? x[kk]
                                                              : (amax / 127.0f) * float(std::clamp(int(std::nearbyint(x[kk] * (127.0f / amax))), -127, 127));
                s += double(xr) * (f == WeightFormat::kInt8 ? double(wq[n * Kp + kk]) : double(wf[n * Kp + kk]));
              }
            }
            want[n] = 0.5 * (f == WeightFormat::kInt8 ? double(scales[n]) : 1.0) * s + 2.0;
          }
          expect_close(C, want, 2e-6, "product beside the attention");
        }
  set_threads(threads_before);
}

INSTANTIATE_TEST_SUITE_P(EveryBackend, DecodeAttention, ::testing::ValuesIn(testing_util::usable_backend_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace palm
