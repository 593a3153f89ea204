// The whole model against the independent PyTorch reference (tools/palm_ref.py, float64):
// logits, loss, z-loss and every parameter gradient; remat = stored, bit for bit;
// determinism across runs and thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "base/file_util.h"
#include "dist/comm.h"
#include "model/model.h"
#include "model/model_io.h"
#include "model/safetensors.h"
#include "device_mirror.h"
#include "test_util.h"

namespace palm {
namespace {

namespace fs = std::filesystem;

ModelConfig tiny_odd() { return testing_util::tiny_odd_config(); }

// Random weights with non-trivial LayerNorm scales, so every gradient path is exercised.
// In `backend`'s memory (the LayerNorm scales written through a HostWindow).
std::unique_ptr<Weights> random_model(const ModelConfig& c, unsigned seed, const std::string& backend = "cpu") {
  auto w = std::make_unique<Weights>(process_backend(backend), c);
  init_weights(process_backend(backend), *w, seed);
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  HostWindow host(w->arena.backend(), w->arena.data(), w->arena.size());
  for_each_param(c, [&](const ParamInfo& p) {
    if (p.init == ParamInit::kOnes)
      for (std::int64_t i = 0; i < p.numel; ++i) host.data()[p.offset + i] = u(g);
  });
  host.commit();
  return w;
}

struct Batch {
  std::int64_t B, T;
  std::vector<std::int32_t> tokens, targets;
};

Batch random_batch(const ModelConfig& c, std::int64_t B, std::int64_t T, unsigned seed) {
  Batch b{B, T, std::vector<std::int32_t>(B * T), std::vector<std::int32_t>(B * T)};
  std::mt19937 g(seed);
  for (auto& t : b.tokens) t = std::int32_t(g() % c.vocab_size);
  for (auto& t : b.targets) t = std::int32_t(g() % c.vocab_size);
  return b;
}

struct Result {
  LossStats loss;
  std::vector<float> grads;
};

Result run_fwd_bwd(const Weights& w, const Batch& b, bool remat, float z = kDefaultZLoss,
                   bool bf16 = false, const std::string& backend = "cpu") {
  auto be = make_backend(backend);
  auto comm = make_local_comm();
  Activations acts(*be, w.config, ActivationPlan{b.B, b.T, remat, true, bf16});
  Gradients g(process_backend(backend), w.config);
  Result r;
  r.loss = forward(*be, w, acts, b.tokens.data(), b.targets.data(), z);
  backward(*be, *comm, w, acts, b.tokens.data(), g);
  const HostWindow grads(g.arena.backend(), g.arena.data(), g.arena.size());
  r.grads.assign(grads.data(), grads.data() + grads.size());
  return r;
}

double max_rel_err(const float* got, const std::vector<float>& want) {
  double max_ref = 1e-30, max_err = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    max_ref = std::max(max_ref, double(std::abs(want[i])));
    max_err = std::max(max_err, std::abs(double(got[i]) - double(want[i])));
  }
  return max_err / max_ref;
}

class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "palm_test_XXXXXX").string();
    path_ = ::mkdtemp(t.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& f) const { return (fs::path(path_) / f).string(); }

 private:
  std::string path_;
};

// The model against PyTorch (float64) on every backend compiled into this build and
// usable here.
class ModelOnEveryBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelOnEveryBackend, MatchesPyTorchReferenceLogitsLossAndEveryGradient) {
  const ModelConfig c = tiny_odd();
  const auto w = random_model(c, 3, GetParam());
  const Batch b = random_batch(c, 2, 13, 4);
  TempDir dir;
  save_model(dir / "m.safetensors", *w);
  {
    std::ofstream f(dir / "batch.json");
    auto rows = [&](const std::vector<std::int32_t>& v) {
      std::string s = "[";
      for (std::int64_t r = 0; r < b.B; ++r) {
        s += r ? ",[" : "[";
        for (std::int64_t t = 0; t < b.T; ++t) s += (t ? "," : "") + std::to_string(v[r * b.T + t]);
        s += "]";
      }
      return s + "]";
    };
    f << "{\"tokens\": " << rows(b.tokens) << ", \"targets\": " << rows(b.targets)
      << ", \"z_loss\": 1e-4}";
  }
  const std::string cmd = testing_util::torch_python() + " " + testing_util::source_dir(PALM_SOURCE_DIR) +
                          "/tools/palm_ref.py grads --model " +
                          (dir / "m.safetensors") + " --batch " + (dir / "batch.json") +
                          " --out " + (dir / "ref.safetensors") + " --dtype float64";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "PyTorch reference failed: " << cmd;
  SafetensorsFile ref(dir / "ref.safetensors");
  auto tensor = [&](const std::string& name) {
    const auto& t = ref.tensors().at(name);
    std::vector<float> v(t.numel());
    ref.read_f32(t, v.data());
    return v;
  };

  // logits (a scoring forward keeps them)
  auto be = make_backend(GetParam());
  Activations acts(*be, c, ActivationPlan{b.B, b.T, false, false});
  forward(*be, *w, acts, b.tokens.data(), b.targets.data());
  const HostWindow logits(*be, acts.logits, std::size_t(b.B * b.T * c.vocab_size));
  EXPECT_LT(max_rel_err(logits.data(), tensor("logits")), 1e-4) << "logits";

  const Result r = run_fwd_bwd(*w, b, false, kDefaultZLoss, false, GetParam());
  EXPECT_NEAR(r.loss.loss, tensor("loss")[0], 1e-4 * tensor("loss")[0]);
  EXPECT_NEAR(r.loss.z_loss, tensor("z_loss")[0], 1e-4 * tensor("z_loss")[0]);
  int checked = 0;
  for_each_param(c, [&](const ParamInfo& p) {
    const auto want = tensor("grad." + p.name);
    ASSERT_EQ(std::int64_t(want.size()), p.numel) << p.name;
    const double err = max_rel_err(r.grads.data() + p.offset, want);
    EXPECT_LT(err, 1e-4) << "gradient of " << p.name;
    ++checked;
  });
  EXPECT_EQ(checked, 2 + 8 * 2);  // embed, final_norm and 8 tensors per layer
}
// bf16 mode on every backend: its stated tolerance (loss within 1%, gradient cosine > 0.999)
TEST_P(ModelOnEveryBackend, Bf16ModeStaysCloseToFp32) {
  const ModelConfig c = tiny_odd();
  const auto w = random_model(c, 11, GetParam());
  const Batch b = random_batch(c, 2, 29, 12);
  const Result f32 = run_fwd_bwd(*w, b, false, kDefaultZLoss, false, GetParam()),
               bf = run_fwd_bwd(*w, b, false, kDefaultZLoss, true, GetParam());
  EXPECT_NEAR(bf.loss.loss, f32.loss.loss, 1e-2 * f32.loss.loss);
  EXPECT_NE(bf.loss.loss, f32.loss.loss) << "bf16 mode must actually round";
  double dot = 0, n1 = 0, n2 = 0;
  for (std::size_t i = 0; i < f32.grads.size(); ++i) {
    dot += double(f32.grads[i]) * bf.grads[i];
    n1 += double(f32.grads[i]) * f32.grads[i];
    n2 += double(bf.grads[i]) * bf.grads[i];
  }
  EXPECT_GT(dot / std::sqrt(n1 * n2), 0.999) << "gradient direction (cosine)";
  // remat stays bitwise in bf16 too
  EXPECT_EQ(run_fwd_bwd(*w, b, true, kDefaultZLoss, true, GetParam()).grads, bf.grads);
}

INSTANTIATE_TEST_SUITE_P(, ModelOnEveryBackend, ::testing::ValuesIn(testing_util::usable_backend_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

TEST(Model, RematGradientsAreBitwiseEqual) {
  const ModelConfig c = tiny_odd();
  const auto w = random_model(c, 5);
  const Batch b = random_batch(c, 3, 37, 6);
  const Result stored = run_fwd_bwd(*w, b, false), remat = run_fwd_bwd(*w, b, true);
  EXPECT_EQ(stored.loss.loss, remat.loss.loss);
  EXPECT_EQ(stored.grads, remat.grads);
}

TEST(Model, DeterministicAcrossRunsAndThreadCounts) {
  const ModelConfig c = tiny_odd();
  const auto w = random_model(c, 7);
  const Batch b = random_batch(c, 2, 45, 8);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  const Result a = run_fwd_bwd(*w, b, false), a2 = run_fwd_bwd(*w, b, false);
  omp_set_num_threads(1);
  const Result one = run_fwd_bwd(*w, b, false);
  omp_set_num_threads(saved);
  EXPECT_EQ(a.grads, a2.grads) << "same thread count must be bitwise reproducible";
  EXPECT_EQ(a.loss.loss, one.loss.loss);
  EXPECT_EQ(a.grads, one.grads) << "1 and 2 threads must agree bit for bit";
}

TEST(Model, ZLossGradientIsIncluded) {
  // Central finite differences of the whole model's objective, cross-entropy + z-loss
  // (a large coefficient, so the z-loss share is large), at the parameters whose
  // gradient the z-loss moves most: the backward's gradient must equal the difference
  // quotient there, and differ from the gradient without z-loss by far more than the
  // tolerance (so a backward that dropped the z-loss term fails).
  const ModelConfig c = tiny_odd();
  const auto w = random_model(c, 9);
  const Batch b = random_batch(c, 1, 9, 10);
  const float z = 0.5f;
  const Result with = run_fwd_bwd(*w, b, false, z), without = run_fwd_bwd(*w, b, false, 0.0f);
  EXPECT_GT(with.loss.z_loss, 0.0);
  EXPECT_EQ(without.loss.z_loss, 0.0);
  std::vector<std::size_t> idx(with.grads.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto z_share = [&](std::size_t i) { return std::abs(double(with.grads[i]) - double(without.grads[i])); };
  std::partial_sort(idx.begin(), idx.begin() + 6, idx.end(), [&](std::size_t a, std::size_t c2) { return z_share(a) > z_share(c2); });
  auto objective = [&]() {
    auto be = make_backend();
    Activations acts(*be, c, ActivationPlan{b.B, b.T, false, true, false});
    const LossStats s = forward(*be, *w, acts, b.tokens.data(), b.targets.data(), z);
    return s.loss + s.z_loss;
  };
  for (int k = 0; k < 6; ++k) {
    const std::size_t i = idx[std::size_t(k)];
    float& theta = w->arena.data()[i];
    const float keep = theta;
    const float eps = 1e-2f * std::max(1.0f, std::abs(keep));
    theta = keep + eps;
    const double up = objective();
    theta = keep - eps;
    const double down = objective();
    theta = keep;
    const double fd = (up - down) / (2.0 * double(eps));
    const double tol = 0.02 * std::abs(fd) + 2e-4;
    EXPECT_NEAR(with.grads[i], fd, tol) << "parameter element " << i;
    EXPECT_GT(z_share(i), 5 * tol) << "the z-loss term is visible at element " << i;
  }
}

TEST(Model, ActivationsPlannedWithOneThreadRunWithTwo) {
  // the attention backward's scratch holds one block per thread of the count at planning
  // time; running with more threads once overran it (an assert, a crash)
  if (omp_get_num_procs() < 2) GTEST_SKIP() << "one core: a second thread changes nothing";
  const ModelConfig c = tiny_odd();
  const auto w = random_model(c, 21);
  const Batch b = random_batch(c, 2, 40, 22);
  const int before = omp_get_max_threads();
  auto be = make_backend();
  auto comm = make_local_comm();
  omp_set_num_threads(1);
  Activations acts(*be, c, ActivationPlan{b.B, b.T, false, true, false});
  Gradients g(process_backend(), c);
  omp_set_num_threads(2);
  const LossStats l = forward(*be, *w, acts, b.tokens.data(), b.targets.data(), kDefaultZLoss);
  backward(*be, *comm, *w, acts, b.tokens.data(), g);
  omp_set_num_threads(before);
  const Result ref = run_fwd_bwd(*w, b, false);
  EXPECT_NEAR(l.loss, ref.loss.loss, 1e-6 * ref.loss.loss);
  EXPECT_LT(max_rel_err(g.arena.data(), ref.grads), 1e-5);
}

TEST(Model, InitIsDeterministicAndHasTheContractStatistics) {
  ModelConfig c = tiny_odd();
  c.d_model = 256;
  c.d_ff = 512;
  Weights a(process_backend(), c), b(process_backend(), c), d(process_backend(), c);
  init_weights(*make_backend(), a, 1);
  init_weights(*make_backend(), b, 1);
  init_weights(*make_backend(), d, 2);
  ASSERT_EQ(0, std::memcmp(a.arena.data(), b.arena.data(), a.arena.size() * 4));
  ASSERT_NE(0, std::memcmp(a.arena.data(), d.arena.data(), a.arena.size() * 4));
  for_each_param(c, [&](const ParamInfo& p) {
    double s = 0, s2 = 0;
    for (std::int64_t i = 0; i < p.numel; ++i) {
      const double v = a.arena.data()[p.offset + i];
      s += v;
      s2 += v * v;
    }
    const double mean = s / p.numel, var = s2 / p.numel - mean * mean;
    if (p.init == ParamInit::kOnes) {
      EXPECT_EQ(mean, 1.0) << p.name;
      return;
    }
    const double want = p.init == ParamInit::kUnitNormal ? 1.0 : 1.0 / double(p.shape.back());
    // sample variance of n normals: relative standard error sqrt(2/n)
    EXPECT_NEAR(var / want, 1.0, 6 * std::sqrt(2.0 / p.numel)) << p.name;
    EXPECT_NEAR(mean, 0.0, 6 * std::sqrt(want / p.numel)) << p.name;
  });
}

}  // namespace
}  // namespace palm
