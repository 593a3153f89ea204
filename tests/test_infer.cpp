// infer's text-free pieces against closed forms: the sampler's token frequencies against
// the distributions temperature, top-k and top-p define (computed here in double from the
// logits), and the stop-string matcher against std::string::find over the whole text.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <condition_variable>
#include <mutex>

#include "infer/engine.h"
#include "infer/generate.h"
#include "infer/sampler.h"
#include "model/params.h"
#include "infer/stop.h"

namespace {

using namespace palm;

// ---- sampler ----

const std::vector<float> kLogits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f, 3.0f, 1.5f, -0.5f, 0.25f, -2.0f};

// The distribution the options define, independently of the sampler's code: softmax of
// logits / T; top-k keeps the k largest; top-p keeps the smallest prefix (by decreasing
// probability) whose mass reaches p; the kept probabilities renormalized.
std::vector<double> expected(double temperature, std::int64_t top_k, double top_p) {
  const std::size_t V = kLogits.size();
  std::vector<double> p(V);
  double z = 0;
  for (std::size_t v = 0; v < V; ++v) z += (p[v] = std::exp(kLogits[v] / temperature));
  for (auto& x : p) x /= z;
  std::vector<std::size_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return p[a] > p[b]; });
  std::size_t keep = V;
  if (top_k > 0) keep = std::min<std::size_t>(V, std::size_t(top_k));
  if (top_p < 1.0) {
    double cum = 0;
    std::size_t n = 0;
    while (n < keep && cum < top_p) cum += p[order[n++]];
    keep = n;
  }
  std::vector<double> q(V, 0.0);
  double kept = 0;
  for (std::size_t i = 0; i < keep; ++i) kept += p[order[i]];
  for (std::size_t i = 0; i < keep; ++i) q[order[i]] = p[order[i]] / kept;
  return q;
}

// Frequencies of n seeded draws; each must lie within 5 standard deviations of its
// probability (a token of probability 0 must never appear).
void expect_frequencies(const SamplingOptions& o, const std::vector<double>& want, int n = 200000) {
  SamplerScratch scratch;
  std::vector<double> count(kLogits.size(), 0.0);
  for (int j = 0; j < n; ++j)
    ++count[std::size_t(sample_token(process_backend(), kLogits.data(), std::int64_t(kLogits.size()), o, 3, std::uint64_t(j), scratch).token)];
  for (std::size_t v = 0; v < want.size(); ++v) {
    const double f = count[v] / n;
    if (want[v] == 0.0) {
      EXPECT_EQ(count[v], 0.0) << "token " << v << " is outside the kept set";
    } else {
      const double sigma = std::sqrt(want[v] * (1 - want[v]) / n);
      EXPECT_NEAR(f, want[v], 5 * sigma) << "token " << v << " T=" << o.temperature << " k=" << o.top_k << " p=" << o.top_p;
    }
  }
}

TEST(Sampler, GreedyIsTheArgmaxAndTheLogprobIsTheModels) {
  SamplerScratch scratch;
  SamplingOptions o;
  const Sampled s = sample_token(process_backend(), kLogits.data(), std::int64_t(kLogits.size()), o, 0, 0, scratch);
  EXPECT_EQ(s.token, 5);
  double z = 0;
  for (float l : kLogits) z += std::exp(double(l));
  EXPECT_NEAR(s.logprob, 3.0 - std::log(z), 1e-6);
  // with temperature and truncation the reported logprob is still the raw model's
  o.temperature = 0.5;
  o.top_k = 2;
  o.seed = 9;
  const Sampled t = sample_token(process_backend(), kLogits.data(), std::int64_t(kLogits.size()), o, 0, 1, scratch);
  EXPECT_NEAR(t.logprob, double(kLogits[std::size_t(t.token)]) - std::log(z), 1e-6);
}

TEST(Sampler, TemperatureFrequenciesMatchTheSoftmax) {
  for (double T : {1.0, 0.5, 2.0}) {
    SamplingOptions o;
    o.temperature = T;
    o.seed = 1234;
    expect_frequencies(o, expected(T, 0, 1.0));
  }
}

TEST(Sampler, TopKKeepsTheKMostLikelyRenormalized) {
  for (std::int64_t k : {1, 3, 6}) {
    SamplingOptions o;
    o.temperature = 1.0;
    o.top_k = k;
    o.seed = 77;
    expect_frequencies(o, expected(1.0, k, 1.0));
  }
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  for (double p : {0.5, 0.8, 0.95}) {
    SamplingOptions o;
    o.temperature = 0.8;
    o.top_p = p;
    o.seed = 5;
    expect_frequencies(o, expected(0.8, 0, p));
  }
  // top-k then top-p, as the sampler documents
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_k = 4;
  o.top_p = 0.7;
  o.seed = 6;
  std::vector<double> k4 = expected(1.0, 4, 1.0);  // top-p over the top-4 renormalized mass
  std::vector<std::size_t> order(k4.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return k4[a] > k4[b]; });
  std::vector<double> want(k4.size(), 0.0);
  double cum = 0, kept = 0;
  std::size_t n = 0;
  while (cum < 0.7) cum += k4[order[n++]];
  for (std::size_t i = 0; i < n; ++i) kept += k4[order[i]];
  for (std::size_t i = 0; i < n; ++i) want[order[i]] = k4[order[i]] / kept;
  expect_frequencies(o, want);
}

TEST(Sampler, ASeedReproducesItsDrawsAndAnotherSeedDiffers) {
  SamplerScratch scratch;
  SamplingOptions a;
  a.temperature = 1.0;
  a.seed = 42;
  SamplingOptions b = a;
  b.seed = 43;
  int same_seed_equal = 0, other_seed_equal = 0;
  for (int j = 0; j < 1000; ++j) {
    const auto x = sample_token(process_backend(), kLogits.data(), 10, a, 1, std::uint64_t(j), scratch).token;
    same_seed_equal += x == sample_token(process_backend(), kLogits.data(), 10, a, 1, std::uint64_t(j), scratch).token;
    other_seed_equal += x == sample_token(process_backend(), kLogits.data(), 10, b, 1, std::uint64_t(j), scratch).token;
  }
  EXPECT_EQ(same_seed_equal, 1000);
  EXPECT_LT(other_seed_equal, 700);  // two independent draws agree with probability sum p^2 ~ 0.3
}

// ---- stop strings ----

TEST(Stop, TheEarliestOccurrenceWinsWhateverTheOrderGiven) {
  EXPECT_EQ(StopMatcher({"b", "ab"}).find("xab"), 1u);
  EXPECT_EQ(StopMatcher({"ab", "b"}).find("xab"), 1u);
  EXPECT_EQ(StopMatcher({"\nQ:", "\n\nQ:"}).find("answer\n\nQ: next"), 6u);
  EXPECT_EQ(StopMatcher({"zz"}).find("abc"), std::string::npos);
  EXPECT_EQ(StopMatcher({}).find("abc"), std::string::npos);
  EXPECT_EQ(StopMatcher({"abc", "d"}).hold_back(), 2u);
  EXPECT_THROW(StopMatcher({"a", ""}), std::exception);
}

TEST(Stop, PieceByPieceEqualsAFullSearchOfTheTextSoFar) {
  // random texts over a small alphabet cut into random pieces (as tokens arrive), random
  // stop sets: after each piece, the incremental search finds what find() of every stop
  // string over the whole text so far finds (the earliest occurrence, once one exists)
  std::mt19937 rng(7);
  auto rand_string = [&](std::size_t lo, std::size_t hi) {
    std::string s(lo + rng() % (hi - lo + 1), ' ');
    for (auto& ch : s) ch = "abc\n"[rng() % 4];
    return s;
  };
  int stopped = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> stops;
    for (int i = 0, n = 1 + int(rng() % 3); i < n; ++i) stops.push_back(rand_string(1, 4));
    const std::string text = rand_string(0, 40);
    const StopMatcher m(stops);
    std::string grown;
    for (std::size_t at = 0; at < text.size();) {
      const std::size_t piece = 1 + rng() % 5;
      const std::size_t from = grown.size();
      grown += text.substr(at, piece);
      at += piece;
      std::size_t want = std::string::npos;
      for (const auto& s : stops) want = std::min(want, grown.find(s));
      ASSERT_EQ(m.find(grown, from), want) << "trial " << trial << " text so far [" << grown << "]";
      if (want != std::string::npos) {
        ++stopped;
        break;
      }
    }
  }
  EXPECT_GT(stopped, 1000) << "most trials meet a stop string";
}

// A failure inside the engine's thread (here a request's own callback throws, as a
// server callback could with std::bad_alloc) fails that request with the message; the
// other requests and the engine go on.
TEST(Engine, AFailingRequestFailsAloneAndTheEngineStaysUp) {
  ModelConfig c = preset("tiny");
  Weights w(process_backend(), c);
  const auto be = make_backend();
  init_weights(*be, w, 5);
  Engine engine(*be, w, 4, 8);
  struct Outcome {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> reasons, errors;
  } out;
  auto request = [&](bool throws) {
    EngineRequest r;
    r.prompt = {1, 2, 3};
    r.max_tokens = 8;
    r.sampling.temperature = 0;
    r.on_token = [throws](std::int32_t, double) -> bool {
      if (throws) throw std::runtime_error("the callback failed");
      return false;
    };
    r.on_done = [&out](const std::string& reason, const std::string& error) {
      std::lock_guard<std::mutex> lock(out.mu);
      out.reasons.push_back(reason);
      out.errors.push_back(error);
      out.cv.notify_all();
    };
    return r;
  };
  ASSERT_EQ(engine.submit(request(false)), Engine::Admit::kAccepted);
  ASSERT_EQ(engine.submit(request(true)), Engine::Admit::kAccepted);
  ASSERT_EQ(engine.submit(request(false)), Engine::Admit::kAccepted);
  {
    std::unique_lock<std::mutex> lock(out.mu);
    ASSERT_TRUE(out.cv.wait_for(lock, std::chrono::seconds(30), [&] { return out.reasons.size() == 3; }));
  }
  EXPECT_EQ(std::count(out.reasons.begin(), out.reasons.end(), "length"), 2);
  ASSERT_EQ(std::count(out.reasons.begin(), out.reasons.end(), "error"), 1);
  EXPECT_NE(std::find(out.errors.begin(), out.errors.end(), "the callback failed"), out.errors.end());
  // still serving
  ASSERT_EQ(engine.submit(request(false)), Engine::Admit::kAccepted);
  std::unique_lock<std::mutex> lock(out.mu);
  ASSERT_TRUE(out.cv.wait_for(lock, std::chrono::seconds(30), [&] { return out.reasons.size() == 4; }));
  EXPECT_EQ(out.reasons.back(), "length");
}

// The engine (palm serve) keeps its sequences' caches in the format it is given and then
// decodes what generate (palm generate) decodes with caches of that format, to the bit.
TEST(Engine, ABf16CacheGivesWhatGenerateGivesWithOne) {
  ModelConfig c = preset("tiny");
  Weights w(process_backend(), c);
  const auto be = make_backend();
  init_weights(*be, w, 7);
  GenerationRequest g;
  g.prompt = {5, 9, 2, 7};
  g.max_tokens = 12;
  g.sampling.temperature = 0;
  const auto never = [](std::size_t, std::int32_t) { return false; };
  const auto want = generate(*be, w, {g}, 1, never, nullptr, nullptr, KvFormat::kBF16)[0];
  const auto fp32 = generate(*be, w, {g}, 1, never, nullptr, nullptr, KvFormat::kF32)[0];
  ASSERT_EQ(want.logprobs.size(), 12u);
  EXPECT_EQ(want.logprobs[0], fp32.logprobs[0]);  // from the prompt's forward, which reads no cache
  EXPECT_NE(std::vector<double>(want.logprobs.begin() + 1, want.logprobs.end()),
            std::vector<double>(fp32.logprobs.begin() + 1, fp32.logprobs.end()));
  Engine engine(*be, w, 4, 8, nullptr, KvFormat::kBF16);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::int32_t> tokens;
  std::vector<double> logprobs;
  bool done = false;
  EngineRequest r;
  r.prompt = g.prompt;
  r.max_tokens = g.max_tokens;
  r.sampling = g.sampling;
  r.on_token = [&](std::int32_t t, double lp) {
    tokens.push_back(t);
    logprobs.push_back(lp);
    return false;
  };
  r.on_done = [&](const std::string&, const std::string&) {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  };
  ASSERT_EQ(engine.submit(std::move(r)), Engine::Admit::kAccepted);
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return done; }));
  EXPECT_EQ(tokens, want.tokens);
  EXPECT_EQ(logprobs, want.logprobs);
}

}  // namespace
