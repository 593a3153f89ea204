// KV-cache decoding: logits at every position equal the full forward pass; a batch of
// sequences of different lengths equals each decoded alone; stored weights and a bf16 cache
// stay within their rounding of it.
#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "base/check.h"
#include "model/decode.h"
#include "model/model.h"
#include "test_util.h"

namespace palm {
namespace {

ModelConfig cfg() { return testing_util::tiny_odd_config(); }

std::vector<float> full_logits(Backend& be, const Weights& w, const std::vector<std::int32_t>& seq) {
  Activations acts(be, w.config, ActivationPlan{1, std::int64_t(seq.size()), false, false});
  std::vector<std::int32_t> targets(seq.size(), 0);
  forward(be, w, acts, seq.data(), targets.data(), 0.0f);
  return std::vector<float>(acts.logits, acts.logits + seq.size() * w.config.vocab_size);
}

double rel_err(const float* got, const float* want, std::int64_t n) {
  double max_ref = 1e-30, max_err = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    max_ref = std::max(max_ref, double(std::abs(want[i])));
    max_err = std::max(max_err, double(std::abs(got[i] - want[i])));
  }
  return max_err / max_ref;
}

void expect_close(const float* got, const float* want, std::int64_t n, const std::string& what) {
  EXPECT_LT(rel_err(got, want, n), 1e-5) << what;
}

// A random model, a random sequence and the full forward's logits for it.
struct Reference {
  Reference(unsigned weight_seed, unsigned seq_seed, std::size_t len) : w(process_backend(), cfg()) {
    init_weights(*make_backend(), w, weight_seed);
    std::mt19937 g(seq_seed);
    seq.resize(len);
    for (auto& t : seq) t = std::int32_t(g() % w.config.vocab_size);
    want = full_logits(*be, w, seq);
  }
  std::unique_ptr<Backend> be = make_backend();
  Weights w;
  std::vector<std::int32_t> seq;
  std::vector<float> want;
};

TEST(Decode, EveryPositionEqualsTheFullForward) {
  Reference r(5, 1, 40);
  const ModelConfig& c = r.w.config;
  auto& be = r.be;
  const Weights& w = r.w;
  const auto& seq = r.seq;
  const auto& want = r.want;
  for (std::int64_t prompt : {1, 7, 39}) {
    KvCache cache(*be, c, c.max_seq_len);
    std::vector<float> logits(c.vocab_size);
    prefill(*be, w, cache, seq.data(), prompt, logits.data());
    expect_close(logits.data(), want.data() + (prompt - 1) * c.vocab_size, c.vocab_size, "prefill");
    DecodeScratch s(*be, c, 1);
    std::vector<KvCache*> one = {&cache};
    for (std::int64_t t = prompt; t < std::int64_t(seq.size()); ++t) {
      decode_step(*be, w, one, &seq[t], logits.data(), s);
      expect_close(logits.data(), want.data() + t * c.vocab_size, c.vocab_size, "decode position " + std::to_string(t));
    }
  }
}

TEST(Decode, BatchOfDifferentLengthsEqualsEachAlone) {
  const ModelConfig c = cfg();
  Weights w(process_backend(), c);
  init_weights(*make_backend(), w, 6);
  auto be = make_backend();
  std::mt19937 g(2);
  const std::vector<std::int64_t> prompts = {3, 11, 1, 25};
  std::vector<std::vector<std::int32_t>> seqs;
  for (auto p : prompts) {
    std::vector<std::int32_t> s(std::size_t(p + 6));
    for (auto& t : s) t = std::int32_t(g() % c.vocab_size);
    seqs.push_back(s);
  }
  std::vector<KvCache> caches;
  for (std::size_t i = 0; i < prompts.size(); ++i) caches.emplace_back(*be, c, c.max_seq_len);
  std::vector<float> scratch(c.vocab_size);
  for (std::size_t i = 0; i < prompts.size(); ++i) prefill(*be, w, caches[i], seqs[i].data(), prompts[i], scratch.data());
  DecodeScratch s(*be, c, 4);
  std::vector<KvCache*> ptrs;
  for (auto& cc : caches) ptrs.push_back(&cc);
  std::vector<float> batch_logits(4 * c.vocab_size);
  for (int step = 0; step < 6; ++step) {
    std::vector<std::int32_t> next;
    for (std::size_t i = 0; i < prompts.size(); ++i) next.push_back(seqs[i][prompts[i] + step]);
    decode_step(*be, w, ptrs, next.data(), batch_logits.data(), s);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const auto want = full_logits(*be, w, std::vector<std::int32_t>(seqs[i].begin(), seqs[i].begin() + prompts[i] + step + 1));
      expect_close(batch_logits.data() + i * c.vocab_size, want.data() + (prompts[i] + step) * c.vocab_size,
                   c.vocab_size, "sequence " + std::to_string(i) + " step " + std::to_string(step));
    }
  }
  EXPECT_EQ(caches[3].len, 31);
}

TEST(Decode, StoredWeightFormatsTrackFp32) {
  Reference r(8, 4, 20);
  const ModelConfig& c = r.w.config;
  auto& be = r.be;
  const Weights& w = r.w;
  const auto& seq = r.seq;
  const auto& want = r.want;
  for (const char* name : {"fp32", "bf16", "int8"}) {
    const DecodeWeights dw(*be, w, parse_weight_format(name));
    KvCache cache(*be, c, c.max_seq_len);
    std::vector<float> logits(c.vocab_size);
    prefill(*be, w, cache, seq.data(), 1, logits.data());
    DecodeScratch s(*be, c, 1);
    std::vector<KvCache*> one = {&cache};
    double worst = 0;
    for (std::size_t t = 1; t < seq.size(); ++t) {
      decode_step(*be, w, one, &seq[t], logits.data(), s, &dw);
      worst = std::max(worst, rel_err(logits.data(), want.data() + t * c.vocab_size, c.vocab_size));
    }
    // fp32 storage is exact up to summation order; bf16 keeps 8 bits, int8 ~7 per row
    const double tol = name == std::string("fp32") ? 1e-5 : (name == std::string("bf16") ? 2e-2 : 5e-2);
    EXPECT_LT(worst, tol) << name;
    if (name != std::string("fp32")) {
      EXPECT_GT(worst, 1e-6) << name << " must actually round";
    }
  }
  const std::int64_t f32 = DecodeWeights(*be, w, WeightFormat::kF32).bytes();
  EXPECT_EQ(DecodeWeights(*be, w, WeightFormat::kBF16).bytes() * 2, f32);
  EXPECT_LT(DecodeWeights(*be, w, WeightFormat::kInt8).bytes() * 3, f32);  // 1 byte + a scale per row
  EXPECT_THROW(parse_weight_format("fp8"), Error);
}

TEST(Decode, Bf16CacheTracksFp32) {
  // 16 heads: the CPU's heads-in-lanes kernels (with AVX512_BF16 the vdpbf16ps one, which
  // rounds queries and softmax weights to bf16 too); 3 heads: the products on widened rows
  Reference r(9, 5, 24);
  for (const std::int64_t heads : {16, 3}) {
    ModelConfig c = cfg();
    c.n_heads = heads;
    Weights w(process_backend(), c);
    init_weights(*make_backend(), w, 9);
    const auto want = full_logits(*r.be, w, r.seq);
    for (const char* weights : {"fp32", "bf16"}) {
      const WeightFormat wf = parse_weight_format(weights);
      const DecodeWeights dw(*r.be, w, wf);
      KvCache cache(*r.be, c, c.max_seq_len, KvFormat::kBF16);
      std::vector<float> logits(c.vocab_size);
      prefill(*r.be, w, cache, r.seq.data(), 6, logits.data());  // reads the new k|v, not the cache
      expect_close(logits.data(), want.data() + 5 * c.vocab_size, c.vocab_size, "prefill");
      DecodeScratch s(*r.be, c, 1);
      std::vector<KvCache*> one = {&cache};
      double worst = 0;
      for (std::size_t t = 6; t < r.seq.size(); ++t) {
        decode_step(*r.be, w, one, &r.seq[t], logits.data(), s, wf == WeightFormat::kF32 ? nullptr : &dw);
        worst = std::max(worst, rel_err(logits.data(), want.data() + t * c.vocab_size, c.vocab_size));
      }
      EXPECT_LT(worst, 2e-2) << heads << " heads, " << weights << " weights";
      EXPECT_GT(worst, 1e-6) << heads << " heads, " << weights << " weights: the cache must actually round";
    }
  }
  // one step's caches share a format; the names
  const ModelConfig c = cfg();
  Weights w(process_backend(), c);
  init_weights(*make_backend(), w, 1);
  KvCache a(*r.be, c, 8, KvFormat::kF32), b(*r.be, c, 8, KvFormat::kBF16);
  std::vector<float> logits(2 * c.vocab_size);
  prefill(*r.be, w, a, r.seq.data(), 2, logits.data());
  prefill(*r.be, w, b, r.seq.data(), 2, logits.data());
  DecodeScratch s(*r.be, c, 2);
  EXPECT_THROW(decode_step(*r.be, w, {&a, &b}, r.seq.data(), logits.data(), s), Error);
  EXPECT_EQ(parse_kv_format("auto", WeightFormat::kF32), KvFormat::kF32);
  EXPECT_EQ(parse_kv_format("auto", WeightFormat::kInt8), KvFormat::kBF16);
  EXPECT_EQ(parse_kv_format("fp32", WeightFormat::kBF16), KvFormat::kF32);
  EXPECT_EQ(parse_kv_format("bf16", WeightFormat::kF32), KvFormat::kBF16);
  EXPECT_THROW(parse_kv_format("fp16", WeightFormat::kF32), Error);
}

TEST(Decode, CacheIsHTimesSmallerThanMultiHeadAndBoundsAreChecked) {
  const ModelConfig c = cfg();
  const auto cache_be = make_backend();  // outlives the cache it allocates
  KvCache cache(*cache_be, c, 10);
  // a multi-head cache of the same model keeps a K and a V row per head, layer and
  // position: L * T * H * (K + K) floats; multi-query shares one head, so H times fewer
  ASSERT_GT(c.n_heads, 1);
  const std::int64_t multi_head_floats = c.n_layers * 10 * c.n_heads * (c.head_dim + c.head_dim);
  EXPECT_EQ(std::int64_t(cache.data.size()) / 4 * c.n_heads, multi_head_floats);
  EXPECT_EQ(KvCache(*cache_be, c, 10, KvFormat::kBF16).data.size() * 2, cache.data.size());
  Weights w(process_backend(), c);
  init_weights(*make_backend(), w, 1);
  auto be = make_backend();
  std::vector<std::int32_t> prompt(11, 1);
  std::vector<float> logits(c.vocab_size);
  EXPECT_THROW(prefill(*be, w, cache, prompt.data(), 11, logits.data()), Error);
  EXPECT_THROW(KvCache(*make_backend(), c, c.max_seq_len + 1), Error);
}

}  // namespace
}  // namespace palm
