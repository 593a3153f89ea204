// palm bench train: this machine's fp32 GEMM peak, palm's forward+backward throughput
// and MFU, and the PyTorch reference on the same step, all in one run.
#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <memory>
#include <random>
#include <vector>

#include "base/check.h"
#include "base/hardware.h"
#include "base/progress.h"
#include "base/threads.h"
#include "common.h"
#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/accounting.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "pytorch_reference.h"
#include "timing_backend.h"

namespace palm {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct BenchTrainOptions {
  std::string preset = "bench-small";
  std::int64_t batch_size = 0;
  std::int64_t seq_len = 0;
  int steps = 0;
  int threads = 0;
  bool remat = false;
  bool profile = false;
  bool bf16 = false;
  bool with_optimizer = false;
  bool no_reference = false;
  bool json = false;
};

// palm_ref.py bench (bench/pytorch_reference.h configures it): its tokens/s, or a
// negative number with *note saying why.
double run_reference(const ModelConfig& c, std::int64_t B, std::int64_t T, int threads,
                     int steps, bool bf16, std::string* note) {
  std::string how;
  const auto j = run_pytorch_reference(fmt::format("bench --config '{}' --batch-size {} --seq-len {} --threads {} --steps {}{}",
                                                   config_to_json(c), B, T, threads, steps, bf16 ? " --bf16" : ""),
                                       &how);
  if (j.is_null()) {
    *note = how;
    return -1;
  }
  *note = fmt::format("torch {} {}, {} threads, {}", j["torch"].get<std::string>(), bf16 ? "bf16 autocast" : "fp32",
                      j["threads"].get<int>(), how);
  return j["tokens_per_s"].get<double>();
}

void run_bench_train(const BenchTrainOptions& o) {
  set_threads(o.threads);
  const int threads = current_threads();
  const ModelConfig c = preset(o.preset);
  // The reference shapes: bench-small batch 8 x 256, bench-medium batch 4 x 512.
  const bool medium = o.preset == "bench-medium" || o.preset == "bench-1b";
  const std::int64_t B = o.batch_size > 0 ? o.batch_size : (medium ? 4 : 8);
  const std::int64_t T = o.seq_len > 0 ? o.seq_len : (medium ? 512 : 256);
  const int steps = o.steps > 0 ? o.steps : (medium ? 4 : 6);

  const auto cpu = make_backend();  // the --backend choice (named cpu for history: it may be cuda)
  const bool accelerator = cpu->name() == "cuda";
  std::string device = describe_hardware().cpu_model, peak_how = "oneDNN sgemm 2048^3", peak_bf16_how = "gemm_bf16 2048^3";
  double peak = 0, peak_bf16 = 0;
  if (accelerator) {
    for (const auto& b : backend_inventory())
      if (b.name == cpu->name() && !b.devices.empty()) device = b.devices.front().name;
    fmt::print(stderr, "measuring the device's GEMM peaks...\n");
    peak = measure_backend_gemm_peak(*cpu, false, 8192);
    peak_bf16 = measure_backend_gemm_peak(*cpu, true, 8192);
    peak_how = "cuBLAS sgemm 8192^3, no TF32";
    peak_bf16_how = "gemm_bf16 8192^3: cuBLAS bf16, fp32 accumulation, operand conversion included";
  } else {
    fmt::print(stderr, "measuring the fp32 GEMM peak ({} threads)...\n", threads);
    peak = measure_gemm_peak();
    peak_bf16 = o.bf16 ? measure_gemm_peak(cpu.get()) : 0;
    if (o.bf16 && !describe_hardware().native_bf16) peak_bf16_how += ", emulated: no AVX512_BF16 / AMX-BF16 here";
  }

  TimingBackend timing(*cpu);
  Backend* be = o.profile ? static_cast<Backend*>(&timing) : cpu.get();
  const auto comm = make_local_comm();
  Weights w(*cpu, c);
  init_weights(*cpu, w, 1);
  Gradients g(*cpu, c);
  Activations acts(*be, c, ActivationPlan{B, T, o.remat, true, o.bf16});
  std::mt19937 rng(7);
  std::vector<std::int32_t> tokens(B * T), targets(B * T);
  for (auto& t : tokens) t = std::int32_t(rng() % c.vocab_size);
  for (auto& t : targets) t = std::int32_t(rng() % c.vocab_size);
  Optimizer opt(*be, c, OptimizerConfig{});
  std::int64_t opt_step = 0;
  auto step = [&] {
    if (o.with_optimizer) g.arena.zero();
    forward(*be, w, acts, tokens.data(), targets.data());
    backward(*be, *comm, w, acts, tokens.data(), g);
    if (o.with_optimizer) {
      ++opt_step;
      opt.step(w, g, opt_step, std::min(1e-2, 1.0 / std::sqrt(double(opt_step))));
    }
  };
  // --bf16 also times palm's fp32 step, alternating with the bf16 steps (the goal is
  // a ratio of the two in one run; on a shared machine alternating keeps drift out of it)
  std::unique_ptr<Activations> acts32;
  auto step32 = [&] {
    forward(*cpu, w, *acts32, tokens.data(), targets.data());
    backward(*cpu, *comm, w, *acts32, tokens.data(), g);
  };
  if (o.bf16 && !o.with_optimizer) {
    acts32 = std::make_unique<Activations>(*cpu, c, ActivationPlan{B, T, o.remat, true, false});
    step32();
  }
  step();  // warm-up: first touch of every buffer
  timing.totals.clear();
  Progress progress(o.with_optimizer ? "palm train step" : acts32 ? "palm fwd+bwd, bf16 and fp32 alternating" : "palm fwd+bwd",
                    acts32 ? 2 * steps : steps, "steps");
  double el = 0, el32 = 0;
  for (int s = 0; s < steps; ++s) {
    auto t0 = Clock::now();
    step();
    el += seconds_since(t0);
    progress.update(acts32 ? 2 * s + 1 : s + 1);
    if (!acts32) continue;
    t0 = Clock::now();
    step32();
    el32 += seconds_since(t0);
    progress.update(2 * s + 2);
  }
  progress.finish();
  const double fp32_tokens_per_s = acts32 ? double(B * T * steps) / el32 : 0;
  const auto op_totals = timing.totals;  // before the bf16-vs-fp32 comparison below
  const double tokens_per_s = double(B * T * steps) / el;
  const ModelAccounting a = account(*be, c, B, T);
  const double achieved = tokens_per_s * a.flops_per_token;
  // MFU against the peak of the arithmetic actually used
  const double mfu = achieved / (o.bf16 ? peak_bf16 : peak);

  double ref = -1;
  std::string note = o.with_optimizer ? "reference not run: it times forward+backward only (drop --with-optimizer)"
                                      : "reference not run (--no-reference)";
  if (accelerator && !o.no_reference) note = "reference not run: the PyTorch reference runs on the CPU only";
  if (!o.no_reference && !o.with_optimizer && !accelerator) {
    fmt::print(stderr, "running the PyTorch reference...\n");
    ref = run_reference(c, B, T, threads, steps, o.bf16, &note);
  }
  // bf16's effect: loss and gradients against fp32 on the same weights and batch.
  double loss_f32 = 0, loss_bf16 = 0, grad_cosine = 1;
  if (o.bf16) {
    const LossStats sb = forward(*be, w, acts, tokens.data(), targets.data());
    g.arena.zero();
    backward(*be, *comm, w, acts, tokens.data(), g);
    std::vector<float> gb;
    {
      const HostWindow h(*cpu, g.arena.data(), g.arena.size());
      gb.assign(h.data(), h.data() + h.size());
    }
    if (!acts32) acts32 = std::make_unique<Activations>(*cpu, c, ActivationPlan{B, T, o.remat, true, false});
    const LossStats sf = forward(*cpu, w, *acts32, tokens.data(), targets.data());
    g.arena.zero();
    backward(*cpu, *comm, w, *acts32, tokens.data(), g);
    const HostWindow g32(*cpu, g.arena.data(), g.arena.size());
    double dot = 0, n1 = 0, n2 = 0;
    for (std::size_t i = 0; i < gb.size(); ++i) {
      dot += double(gb[i]) * g32.data()[i];
      n1 += double(gb[i]) * gb[i];
      n2 += double(g32.data()[i]) * g32.data()[i];
    }
    loss_f32 = sf.loss;
    loss_bf16 = sb.loss;
    grad_cosine = dot / std::sqrt(n1 * n2);
  }

  fmt::print("bench train  preset {}  batch {} x seq {}  backend {} ({})  threads {}{}{}\n", o.preset, B, T,
             cpu->name(), device, threads, o.remat ? "  remat" : "", o.bf16 ? "  bf16 GEMMs (fp32 master weights)" : "");
  fmt::print("  fp32 GEMM peak ({})  {:8.1f} GFLOP/s\n", peak_how, peak / 1e9);
  if (peak_bf16 > 0) fmt::print("  bf16 GEMM peak ({})  {:8.1f} GFLOP/s\n", peak_bf16_how, peak_bf16 / 1e9);
  fmt::print("  palm {}{:8.1f} tokens/s  {:6.1f} GFLOP/s  MFU {:.1f}%\n",
             o.with_optimizer ? "fwd+bwd+Adafactor step      " : "forward+backward            ", tokens_per_s,
             achieved / 1e9, 100 * mfu);
  if (fp32_tokens_per_s > 0)
    fmt::print("  palm fp32 forward+backward       {:8.1f} tokens/s  (alternating with the bf16 steps): bf16 {:.2f}x fp32\n",
               fp32_tokens_per_s, tokens_per_s / fp32_tokens_per_s);
  if (o.bf16) {
    fmt::print("  bf16 vs fp32 (same weights and batch): loss {:.6f} vs {:.6f} ({:+.2e} relative), gradient cosine {:.6f}\n",
               loss_bf16, loss_f32, (loss_bf16 - loss_f32) / loss_f32, grad_cosine);
  }
  if (o.profile) {
    double total = 0;
    for (const auto& [op, tf] : op_totals) total += tf.first;
    fmt::print("  profile per step ({:.3f} s in ops of {:.3f} s):\n", total / steps, el / steps);
    std::vector<std::pair<double, std::string>> rows;
    for (const auto& [op, tf] : op_totals) rows.emplace_back(tf.first, op);
    std::sort(rows.rbegin(), rows.rend());
    for (const auto& [sec, op] : rows) {
      const double fl = op_totals.at(op).second;
      fmt::print("    {:<16} {:8.4f} s {:5.1f}%{}\n", op, sec / steps, 100 * sec / total,
                 fl > 0 ? fmt::format("  {:7.1f} GFLOP/s", fl / sec / 1e9) : "");
    }
  }
  if (ref > 0) {
    fmt::print("  PyTorch reference                     {:8.1f} tokens/s  {:6.1f} GFLOP/s  MFU {:.1f}%\n",
               ref, ref * a.flops_per_token / 1e9,
               100 * ref * a.flops_per_token / (o.bf16 ? peak_bf16 : peak));
    fmt::print("  palm / PyTorch                        {:8.2f}x   ({})\n", tokens_per_s / ref, note);
  } else {
    fmt::print("  {}\n", note);
  }
  if (o.json) {
    nlohmann::ordered_json j;
    j["preset"] = o.preset;
    j["backend"] = cpu->name();
    j["device"] = device;
    j["batch_size"] = B;
    j["seq_len"] = T;
    j["threads"] = threads;
    j["remat"] = o.remat;
    j["bf16"] = o.bf16;
    if (o.bf16 && !accelerator) j["bf16_native"] = describe_hardware().native_bf16;
    j["with_optimizer"] = o.with_optimizer;
    j["tokens_per_s"] = tokens_per_s;
    j["flops_per_token"] = a.flops_per_token;
    j["gemm_peak_flops"] = peak;
    if (peak_bf16 > 0) j["gemm_peak_flops_bf16"] = peak_bf16;
    j["achieved_flops"] = achieved;
    j["mfu"] = mfu;
    if (fp32_tokens_per_s > 0) {
      j["fp32_tokens_per_s"] = fp32_tokens_per_s;
      j["ratio_vs_fp32"] = tokens_per_s / fp32_tokens_per_s;
    }
    if (o.bf16) {
      j["loss_fp32"] = loss_f32;
      j["loss_bf16"] = loss_bf16;
      j["grad_cosine_bf16_vs_fp32"] = grad_cosine;
    }
    if (ref > 0) {
      j["reference_tokens_per_s"] = ref;
      j["ratio_vs_reference"] = tokens_per_s / ref;
    }
    fmt::print("{}\n", j.dump());
  }
}

}  // namespace

constexpr std::int64_t kProbeN = 2048;

SgemmSample::SgemmSample() : a_(kProbeN * kProbeN, 0.5f), b_(kProbeN * kProbeN, 0.25f), c_(kProbeN * kProbeN) {}

double SgemmSample::flops() const { return 2.0 * double(kProbeN * kProbeN * kProbeN); }

double SgemmSample::seconds() {
  const auto t0 = Clock::now();
  dnnl_sgemm('N', 'T', kProbeN, kProbeN, kProbeN, 1.0f, a_.data(), kProbeN, b_.data(), kProbeN, 0.0f, c_.data(), kProbeN);
  return seconds_since(t0);
}

// Best of three runs (seconds_per_run each) of a 2048^3 GEMM: the rate the GEMM library reaches here, in
// fp32 (oneDNN sgemm) or bf16 (the backend's gemm_bf16, conversions included).
double measure_gemm_peak(Backend* bf16_backend, double seconds_per_run) {
  const std::int64_t n = kProbeN;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    int calls = 0;
    const auto t0 = Clock::now();
    do {
      if (bf16_backend) {
        bf16_backend->gemm_bf16(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
      } else {
        dnnl_sgemm('N', 'T', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
      }
      ++calls;
    } while (seconds_since(t0) < seconds_per_run);
    best = std::max(best, 2.0 * n * n * n * calls / seconds_since(t0));
  }
  return best;
}

// Best of three runs of an n^3 GEMM on the backend's own buffers (queued work waited
// for): the rate its GEMM reaches, fp32 or bf16 (conversions included).
double measure_backend_gemm_peak(Backend& be, bool bf16, std::int64_t n, double seconds_per_run) {
  DeviceFloats a(be, std::size_t(n * n)), b(be, std::size_t(n * n)), c(be, std::size_t(n * n));
  be.fill_normal(a.data(), n, n, 1, 1, 1.0, n, 0, 0, 0.0f);
  be.fill_normal(b.data(), n, n, 1, 2, 1.0, n, 0, 0, 0.0f);
  auto run = [&] {
    if (bf16) be.gemm_bf16(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    else be.gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  };
  run();  // warm-up: library setup, clocks up
  be.synchronize();
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    int calls = 0;
    const auto t0 = Clock::now();
    do {
      run();
      be.synchronize();
      ++calls;
    } while (seconds_since(t0) < seconds_per_run);
    best = std::max(best, 2.0 * double(n) * n * n * calls / seconds_since(t0));
  }
  return best;
}

void register_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks measured against a named reference in one run");
  bench->require_subcommand(1);
  auto o = std::make_shared<BenchTrainOptions>();
  auto* cmd = bench->add_subcommand("train", "GEMM peak, palm forward+backward throughput and MFU, PyTorch reference");
  cmd->add_option("--preset", o->preset, "bench-small or bench-medium (any preset works)")->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "Batch size (default 8 small, 4 medium)");
  cmd->add_option("--seq-len", o->seq_len, "Sequence length (default 256 small, 512 medium)");
  cmd->add_option("--steps", o->steps, "Timed steps (default 6 small, 4 medium)");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_flag("--remat", o->remat, "Recompute activations in the backward");
  cmd->add_flag("--bf16", o->bf16, "bf16 GEMMs with fp32 accumulation and master weights (PyTorch: autocast bf16)");
  cmd->add_flag("--with-optimizer", o->with_optimizer,
                "Time the full training step (PaLM's Adafactor included; no PyTorch reference)");
  cmd->add_flag("--profile", o->profile, "Print time per op (wall clock per step)");
  cmd->add_flag("--no-reference", o->no_reference, "Skip the PyTorch reference");
  cmd->add_flag("--json", o->json, "End with one JSON line");
  cmd->callback([o] { run_bench_train(*o); });
  register_bench_tokenizer(*bench);
  register_bench_generate(*bench);
  register_bench_serve(*bench);
  register_bench_comm(*bench);
}

}  // namespace palm
