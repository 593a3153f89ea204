// palm bench generate: memory bandwidth, palm's decode tokens/s at batch 1 and 16 and
// prefill tokens/s, against the bandwidth floor and (where installed) PyTorch's
// KV-cache decode of the same model, in one run.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <omp.h>

#include "base/check.h"
#include "base/threads.h"
#include "common.h"
#include "kernels/backend.h"
#include "kernels/device_buffer.h"
#include "model/accounting.h"
#include "model/decode.h"
#include "model/model.h"
#include "llama_cpp_compare.h"
#include "paired_rate.h"
#include "pytorch_reference.h"
#include "timing_backend.h"

namespace palm {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct BenchGenOptions {
  std::string preset = "bench-medium", kv_cache = "auto";
  std::int64_t prompt = 128, tokens = 32;
  int threads = 0;
  int rounds = 5;
  bool no_reference = false, json = false, profile = false, llama_cpp = false;
};

// Read bandwidth: all threads summing a 1 GiB array, with 64 independent float lanes (four
// vector chains): with 16 (one chain, latency-bound) the probe read 50-53 GB/s where the
// decode kernels read 60+, a floor they "beat". A range is read either as one stream per
// thread or as 8 streams side by side (8 sub-ranges, a line of each in turn): on an Ice Lake
// VM one stream per core read ~22.5 GB/s and 8 streams ~30, and kernels reading 8 weight
// rows at once "beat" a one-stream floor by 10-25%. best_of reads the whole array both ways
// and keeps the faster; slice reads the next `bytes` of it (wrapping; at most the array),
// so that a sample as long as a decode step can be taken between every two steps. The array is
// written once and kept, in the CPU backend's memory as the weights are (huge pages where the
// system gives them): the floor is what the memory delivers to memory laid out like theirs.
class ReadProbe {
 public:
  ReadProbe() : host_(make_backend("cpu")), a_(*host_, std::size_t(1) << 28) { std::fill_n(a_.data(), a_.size(), 1.0f); }
  double best_of(int passes) const {
    double best = 0;
    for (int rep = 0; rep < passes; ++rep)
      for (std::size_t streams : {std::size_t(1), kStreams}) {
        const auto [bytes, seconds] = pass(0, a_.size() / 64, streams);
        best = std::max(best, bytes / seconds);
      }
    return best;
  }
  // {bytes read, seconds}: the next `bytes` of the array (at least 1 MiB, at most all of it),
  // as 1 or 8 streams per thread
  std::pair<double, double> slice(double bytes, bool eight_streams) {
    const std::size_t lines = a_.size() / 64, want = std::clamp<std::size_t>(std::size_t(bytes / 256), 4096, lines);
    if (next_ + want > lines) next_ = 0;
    const auto r = pass(next_, want, eight_streams ? kStreams : 1);
    next_ += want;
    return r;
  }

 private:
  static constexpr std::size_t kStreams = 8;
  // lines [first, first + count) of 64 floats: {bytes read, seconds}
  std::pair<double, double> pass(std::size_t first, std::size_t count, std::size_t streams) const {
    const float* a = a_.data() + first * 64;
    const auto t0 = Clock::now();
    double total = 0, bytes = 0;
#pragma omp parallel reduction(+ : total, bytes)
    {
      float lanes[kStreams][64] = {};  // independent accumulators: vectorized, bandwidth-bound
      // this thread's range, as `streams` sub-ranges of whole lines read in turn
      const std::size_t threads = std::size_t(omp_get_num_threads()), id = std::size_t(omp_get_thread_num());
      const std::size_t per = count / threads, begin = id * per, sub = per / streams;
      for (std::size_t i = 0; i < sub; ++i)
        for (std::size_t s = 0; s < streams; ++s) {
          const float* line = a + (begin + s * sub + i) * 64;
#pragma GCC unroll 64
          for (int k = 0; k < 64; ++k) lanes[s][k] += line[k];
        }
      for (const auto& l : lanes)
        for (float v : l) total += v;
      bytes += double(sub * streams * 64 * sizeof(float));  // all but a few lines of each thread's range
    }
    const double el = since(t0);
    PALM_CHECK(total > 0, "bandwidth probe");
    return {bytes, el};
  }

  std::size_t next_ = 0;  // slice's next line
  std::unique_ptr<Backend> host_;
  DeviceFloats a_;
};

// palm_ref.py decode (bench/pytorch_reference.h configures it): tokens/s, or negative.
double run_reference(const ModelConfig& c, std::int64_t prompt, std::int64_t tokens, int threads, std::string* note) {
  std::string how;
  const auto j = run_pytorch_reference(
      fmt::format("decode --config '{}' --prompt {} --tokens {} --threads {}", config_to_json(c), prompt, tokens, threads),
      &how);
  if (j.is_null()) {
    *note = how;
    return -1;
  }
  *note = fmt::format("torch {} fp32 KV-cache decode (inference_mode, preallocated cache), {} threads, {}",
                      j["torch"].get<std::string>(), threads, how);
  return j["decode_tokens_per_s"].get<double>();
}

void run_bench_generate(const BenchGenOptions& o) {
  set_threads(o.threads);
  const int threads = current_threads();
  const ModelConfig c = preset(o.preset);
  PALM_CHECK(o.prompt + o.tokens <= c.max_seq_len, "prompt + tokens exceed max_seq_len");
  fmt::print(stderr, "measuring memory bandwidth...\n");
  ReadProbe read;
  double bw = read.best_of(5);
  const auto cpu = make_backend();
  TimingBackend timing(*cpu);
  Backend* be = o.profile ? static_cast<Backend*>(&timing) : cpu.get();
  Weights w(*cpu, c);
  init_weights(*cpu, w, 1);
  const ModelAccounting a = account(*be, c, 1, o.prompt + o.tokens);
  // bytes read per decoded token at batch 1: every weight once (the embedding twice:
  // its row for the input and all of it for the logits; the row is negligible)
  const double weight_bytes = double(a.weight_bytes);

  std::mt19937 rng(3);
  const DecodeWeights* stored = nullptr;
  // each path's KV cache: --kv-cache, or by default as generate and serve pick it
  const auto kv_for = [&](const DecodeWeights* dw) { return parse_kv_format(o.kv_cache, dw ? dw->format : WeightFormat::kF32); };
  // A batch of sequences, prompts prefilled, decoded one step at a time (step), with the
  // time of its steps and (--profile) their time per op.
  struct Decoding {
    std::int64_t batch = 0, steps = 0;
    std::vector<std::unique_ptr<KvCache>> caches;
    std::vector<KvCache*> ptrs;
    std::unique_ptr<DeviceFloats> logits;
    std::unique_ptr<DecodeScratch> scratch;
    std::vector<std::int32_t> next;
    double seconds = 0;
    std::vector<double> step_seconds;
    std::map<std::string, double> per_op;
  };
  // `batch` prompts prefilled (those after the first, which warms up the GEMM shapes, timed
  // into *prompt_seconds, `per_prompt` sampled before each outside its time), then one
  // untimed warm-up step.
  auto start = [&](std::int64_t batch, std::vector<double>* prompt_seconds, Beside* per_prompt) {
    auto d = std::make_unique<Decoding>();
    d->batch = batch;
    d->logits = std::make_unique<DeviceFloats>(*be, std::size_t(batch * c.vocab_size));
    std::vector<std::int32_t> prompt(std::size_t(o.prompt));
    timing.totals.clear();
    for (std::int64_t i = 0; i < batch; ++i) {
      for (auto& t : prompt) t = std::int32_t(rng() % c.vocab_size);
      d->caches.push_back(std::make_unique<KvCache>(*be, c, o.prompt + o.tokens + 1, kv_for(stored)));
      if (i > 0 && per_prompt) per_prompt->take();
      const auto t0 = Clock::now();
      prefill(*be, w, *d->caches.back(), prompt.data(), o.prompt, d->logits->data());
      if (i > 0 && prompt_seconds) prompt_seconds->push_back(since(t0));
      d->ptrs.push_back(d->caches.back().get());
    }
    if (o.profile && prompt_seconds) {
      fmt::print("  profile, prefill of {} prompts (seconds per prompt):\n", batch);
      for (const auto& [op, tf] : timing.totals) fmt::print("    {:<18} {:8.5f}\n", op, tf.first / double(batch));
    }
    d->scratch = std::make_unique<DecodeScratch>(*be, c, batch);
    d->next.assign(std::size_t(batch), 5);
    decode_step(*be, w, d->ptrs, d->next.data(), d->logits->data(), *d->scratch, stored);  // warm-up
    return d;
  };
  auto step = [&](Decoding& d) {
    timing.totals.clear();
    const auto t0 = Clock::now();
    decode_step(*be, w, d.ptrs, d.next.data(), d.logits->data(), *d.scratch, stored);
    const double seconds = since(t0);
    d.seconds += seconds;
    d.step_seconds.push_back(seconds);
    ++d.steps;
    for (const auto& [op, tf] : timing.totals) d.per_op[op] += tf.first;
  };
  auto finish = [&](const Decoding& d) {  // tokens/s
    if (o.profile) {
      fmt::print("  profile, batch {} (seconds per step):\n", d.batch);
      for (const auto& [op, t] : d.per_op) fmt::print("    {:<18} {:8.5f}\n", op, t / double(d.steps));
    }
    return double(d.batch * d.steps) / d.seconds;
  };
  // Stored weight formats: the bytes per token, speed, and the logprob change they cause.
  struct FormatResult {
    std::string name;
    KvFormat kv = KvFormat::kF32;
    double bytes = 0;
    PairedRate b1;  // tokens/s, against the floor (bandwidth / bytes) beside it
    double b16 = 0;
    std::vector<double> b16_rounds;
    double mean_dlogprob = 0, max_dlogprob = 0, mean_dlogprob16 = 0, max_dlogprob16 = 0;
  };
  std::vector<FormatResult> formats;
  std::vector<std::unique_ptr<DecodeWeights>> stores;
  for (const char* name : {"fp32", "bf16", "int8"}) {
    stores.push_back(std::make_unique<DecodeWeights>(*cpu, w, parse_weight_format(name)));
    FormatResult f;
    f.name = name;
    f.bytes = double(stores.back()->bytes());
    f.kv = kv_for(stores.back().get());
    formats.push_back(f);
  }
  // This shared machine's bandwidth drifts by tens of percent within seconds (the same path
  // measured 47 and 70 tokens/s a minute apart), so every path at batch 1 and 16 and
  // prefill are measured in each of o.rounds interleaved rounds (5: the median survives two
  // rounds spoiled by a regime change inside a run); each batch-1 decode step lies between two
  // read probes of as many bytes as the step reads and precedes a batch-16 step, and each
  // timed prompt follows one 2048^3 sgemm (PairedRate, Beside). Tokens/s are each path's best
  // round; % of the floor, of the GEMM rate and x batch 1 the median round's.
  const double prefill_flops_per_token = 2.0 * double(a.non_embedding_parameters) +
                                         2.0 * double(c.n_layers * c.n_heads * c.head_dim) * double(o.prompt + 1);
  double gemm_peak = 0;
  SgemmSample sgemm;
  // Batch 1 against the floor read between its steps (PairedRate, Beside); with
  // `batch16`, batch 16 decoded too, its steps taking turns with batch 1's, so that its ratio
  // to batch 1 compares the same moments (apart, the two ran ~20 s apart: batch 16's 16
  // prompts lie between). Returns batch 16's tokens/s (0 without).
  auto decode = [&](PairedRate& rate, double bytes, bool batch16, std::vector<double>* prompt_seconds,
                    Beside* per_prompt) {
    const auto one = start(1, nullptr, nullptr);
    const auto many = batch16 ? start(16, prompt_seconds, per_prompt) : nullptr;
    Beside probe{[&](int variant) { return read.slice(bytes, variant == 1); }, 2};
    for (std::int64_t k = 1; k < o.tokens; ++k) {
      probe.take();
      step(*one);
      if (many) step(*many);
    }
    probe.take();  // the last step's sample after it
    const double tps = finish(*one);
    bw = std::max(bw, probe.rate());
    std::vector<double> step_rates;  // bytes/s
    for (const double t : one->step_seconds) step_rates.push_back(bytes / t);
    rate.add(tps, probe.fraction(step_rates));
    return many ? finish(*many) : 0.0;
  };
  PairedRate b1, prefill_rate;  // tokens/s against the floor; prefill FLOP/s against the GEMM rate
  double b16 = 0;
  std::vector<double> b16_rounds;
  fmt::print(stderr, "measuring decode and prefill ({} rounds)...\n", o.rounds);
  for (int round = 0; round < o.rounds; ++round) {
    std::vector<double> prompts;  // seconds of each timed prompt
    Beside gemm{[&](int) { return std::pair(sgemm.flops(), sgemm.seconds()); }};
    b16_rounds.push_back(decode(b1, weight_bytes, true, &prompts, &gemm));
    b16 = std::max(b16, b16_rounds.back());
    gemm_peak = std::max(gemm_peak, gemm.rate());
    // prefill: the round's FLOP/s over the sgemm samples' (the per-unit median is decode's,
    // where a probe is as long as the step beside it; a prompt is ~10 sgemm samples long)
    double total = 0;
    for (const double t : prompts) total += t;
    const double prefill_flops = double(prompts.size()) * double(o.prompt) * prefill_flops_per_token / total;
    prefill_rate.add(prefill_flops, prefill_flops / gemm.rate());
    for (std::size_t i = 0; i < stores.size(); ++i) {
      stored = stores[i].get();
      formats[i].b16_rounds.push_back(decode(formats[i].b1, formats[i].bytes, true, nullptr, nullptr));
      formats[i].b16 = std::max(formats[i].b16, formats[i].b16_rounds.back());
      stored = nullptr;
    }
  }
  // llama.cpp on the same sizes: two rounds, each running palm's format and then
  // llama.cpp's, so both meet the same moment of this machine; each keeps its best
  std::vector<LlamaCppRun> llama;
  std::string llama_engine, llama_note;
  if (o.llama_cpp) llama_note = LlamaCpp::unavailable();
  if (o.llama_cpp && llama_note.empty()) {
    LlamaCpp lc(w, threads, o.prompt, o.tokens);
    llama.resize(stores.size());
    for (int round = 0; round < 2; ++round)
      for (std::size_t i = 0; i < stores.size(); ++i) {
        stored = stores[i].get();
        decode(formats[i].b1, formats[i].bytes, false, nullptr, nullptr);
        stored = nullptr;
        const LlamaCppRun r = lc.run(i);
        if (round == 0) llama[i] = r;
        llama[i].prompt_tokens_per_s = std::max(llama[i].prompt_tokens_per_s, r.prompt_tokens_per_s);
        llama[i].decode_tokens_per_s = std::max(llama[i].decode_tokens_per_s, r.decode_tokens_per_s);
      }
    llama_engine = lc.engine();
  }
  // Quality: teacher-forced decode of random probes through each format (and its KV cache),
  // against the fp32 GEMM decode of the same batch with an fp32 cache, at batch 1 and at batch 16 (from 3 rows on the
  // stored bf16 and int8 products run other kernels than at batch 1).
  constexpr std::size_t kProbeTokens = 64;
  std::vector<std::int32_t> probe(16 * kProbeTokens);
  for (auto& t : probe) t = std::int32_t(rng() % c.vocab_size);
  auto logprobs = [&](const DecodeWeights* dw, KvFormat kv, std::int64_t batch) {  // [step][sequence]
    std::vector<std::unique_ptr<KvCache>> caches;
    std::vector<KvCache*> ptrs;
    for (std::int64_t i = 0; i < batch; ++i) {
      caches.push_back(std::make_unique<KvCache>(*be, c, std::int64_t(kProbeTokens), kv));
      ptrs.push_back(caches.back().get());
    }
    DecodeScratch s(*be, c, batch);
    std::vector<float> lg(std::size_t(batch * c.vocab_size));
    std::vector<std::int32_t> tok(static_cast<std::size_t>(batch));
    std::vector<double> out;
    for (std::size_t t = 0; t + 1 < kProbeTokens; ++t) {
      for (std::int64_t i = 0; i < batch; ++i) tok[std::size_t(i)] = probe[std::size_t(i) * kProbeTokens + t];
      decode_step(*cpu, w, ptrs, tok.data(), lg.data(), s, dw);
      for (std::int64_t i = 0; i < batch; ++i) {
        const float* l = lg.data() + i * c.vocab_size;
        double mx = l[0], z = 0;
        for (std::int64_t v = 0; v < c.vocab_size; ++v) mx = std::max(mx, double(l[v]));
        for (std::int64_t v = 0; v < c.vocab_size; ++v) z += std::exp(double(l[v]) - mx);
        out.push_back(double(l[probe[std::size_t(i) * kProbeTokens + t + 1]]) - mx - std::log(z));
      }
    }
    return out;
  };
  for (const std::int64_t batch : {1, 16}) {
    const std::vector<double> ref_lp = logprobs(nullptr, KvFormat::kF32, batch);
    for (std::size_t i = 0; i < stores.size(); ++i) {
      FormatResult& f = formats[i];
      const auto lp = logprobs(stores[i].get(), f.kv, batch);
      double& mean = batch == 1 ? f.mean_dlogprob : f.mean_dlogprob16;
      double& mx = batch == 1 ? f.max_dlogprob : f.max_dlogprob16;
      for (std::size_t t = 0; t < lp.size(); ++t) {
        mean += std::abs(lp[t] - ref_lp[t]) / double(lp.size());
        mx = std::max(mx, std::abs(lp[t] - ref_lp[t]));
      }
    }
  }
  stores.clear();
  const double floor_tps = bw / weight_bytes;  // the best probe of the run
  const double prefill_tps = prefill_rate.best / prefill_flops_per_token;
  double ref = -1;
  std::string note = "reference not run (--no-reference)";
  if (!o.no_reference) {
    fmt::print(stderr, "running the PyTorch reference...\n");
    ref = run_reference(c, o.prompt, o.tokens, threads, &note);
  }
  fmt::print("bench generate  preset {}  prompt {}  decode {} tokens  threads {}\n", o.preset, o.prompt, o.tokens, threads);
  fmt::print("  memory bandwidth (read)          {:8.1f} GB/s\n", bw / 1e9);
  fmt::print("  weights (fp32)                   {:8.1f} MB  -> floor {:.1f} tokens/s at batch 1\n", weight_bytes / 1e6, floor_tps);
  fmt::print("  palm decode, batch 1             {:8.1f} tokens/s  ({:.0f}% of the floor read beside it, median of {} rounds)\n",
             b1.best, 100 * b1.median_fraction(), b1.fractions.size());
  fmt::print("  palm decode, batch 16 (aggregate){:8.1f} tokens/s  ({:.1f}x batch 1 in the median round)\n", b16,
             median_ratio(b16_rounds, b1));
  fmt::print("  palm prefill                     {:8.1f} tokens/s  ({:.0f} GFLOP/s: {:.0f}% of the fp32 GEMM rate measured beside it, median round; best GEMM rate {:.0f} GFLOP/s)\n",
             prefill_tps, prefill_rate.best / 1e9, 100 * prefill_rate.median_fraction(), gemm_peak / 1e9);
  fmt::print("  stored weights (palm's GEMV kernel; batch 1: best round, % of the floor beside it in the median round; batch 16:\n"
             "  best round, x batch 1 in the median round; logprob change vs fp32 GEMM decode, 63 tokens per sequence, at batch 1 and 16):\n");
  for (const auto& f : formats) {
    fmt::print(
        "    {:<5} {:7.1f} MB  KV {}  floor {:6.1f}  batch 1 {:6.1f} tokens/s ({:3.0f}%)  batch 16 {:7.1f} ({:.1f}x)  |dlogprob| mean {:.2e} max {:.2e}"
        "  (batch 16: {:.2e} / {:.2e})\n",
        f.name, f.bytes / 1e6, kv_format_name(f.kv), bw / f.bytes, f.b1.best, 100 * f.b1.median_fraction(), f.b16, median_ratio(f.b16_rounds, f.b1),
        f.mean_dlogprob, f.max_dlogprob,
        f.mean_dlogprob16, f.max_dlogprob16);
  }
  fmt::print("  KV cache per token               {:8} bytes (multi-query) vs {} (multi-head): {}x smaller\n",
             a.kv_cache_bytes_per_token_f32, a.kv_cache_bytes_per_token_mha_f32, c.n_heads);
  if (ref > 0) {
    fmt::print("  PyTorch decode, batch 1          {:8.1f} tokens/s\n", ref);
    fmt::print("  palm / PyTorch                   {:8.2f}x   ({})\n", b1.best / ref, note);
  } else {
    fmt::print("  {}\n", note);
  }
  if (!llama.empty()) {
    // palm's formats beside llama.cpp's: fp32 ~ f32, bf16 ~ bf16, int8 (per-row scales) ~ q8_0
    fmt::print("  llama.cpp on the same sizes (LLaMA-shaped GGUF: llama.cpp has no PaLM architecture; {}):\n", llama_engine);
    for (std::size_t i = 0; i < llama.size() && i < formats.size(); ++i) {
      const auto& l = llama[i];
      fmt::print("    {:<5} vs {:<5} decode batch 1: palm {:6.1f}  llama.cpp {:6.1f} tokens/s ({:.2f}x)   prompt of {}: "
                 "llama.cpp {:6.1f} tokens/s\n",
                 formats[i].name, l.format, formats[i].b1.best, l.decode_tokens_per_s, formats[i].b1.best / l.decode_tokens_per_s,
                 o.prompt, l.prompt_tokens_per_s);
    }
    fmt::print("    palm prefill (fp32, {} tokens): {:.1f} tokens/s ({:.2f}x llama.cpp f32)\n", o.prompt, prefill_tps,
               prefill_tps / llama[0].prompt_tokens_per_s);
  } else if (o.llama_cpp) {
    fmt::print("  {}\n", llama_note);
  }
  if (o.json) {
    nlohmann::ordered_json j;
    j["preset"] = o.preset;
    j["threads"] = threads;
    j["weight_bytes"] = weight_bytes;
    j["bandwidth_bytes_per_s"] = bw;
    j["floor_tokens_per_s"] = floor_tps;
    j["prefill_tokens_per_s"] = prefill_tps;
    j["prefill_flops_per_s"] = prefill_rate.best;
    j["prefill_gemm_fraction"] = prefill_rate.median_fraction();
    j["prefill_gemm_fractions"] = prefill_rate.fractions;
    j["gemm_peak_flops_per_s"] = gemm_peak;
    j["decode_tokens_per_s"] = b1.best;
    j["decode_floor_fraction"] = b1.median_fraction();
    j["decode_floor_fractions"] = b1.fractions;
    j["decode_tokens_per_s_batch16"] = b16;
    j["batch16_over_batch1"] = median_ratio(b16_rounds, b1);
    j["kv_cache_bytes_per_token"] = a.kv_cache_bytes_per_token_f32;
    j["kv_cache_bytes_per_token_multi_head"] = a.kv_cache_bytes_per_token_mha_f32;
    if (ref > 0) j["reference_decode_tokens_per_s"] = ref;
    for (const auto& f : formats) {
      j["stored_" + f.name] = {{"weight_bytes", f.bytes}, {"kv_cache", kv_format_name(f.kv)}, {"decode_tokens_per_s", f.b1.best},
                               {"floor_fraction", f.b1.median_fraction()}, {"floor_fractions", f.b1.fractions},
                               {"decode_tokens_per_s_batch16", f.b16}, {"batch16_over_batch1", median_ratio(f.b16_rounds, f.b1)},
                               {"mean_abs_dlogprob", f.mean_dlogprob},
                               {"max_abs_dlogprob", f.max_dlogprob},
                               {"mean_abs_dlogprob_batch16", f.mean_dlogprob16}, {"max_abs_dlogprob_batch16", f.max_dlogprob16}};
    }
    if (!llama.empty()) {
      j["llama_cpp"]["engine"] = llama_engine;
      for (const auto& l : llama)
        j["llama_cpp"][l.format] = {{"file_bytes", l.file_bytes}, {"prompt_tokens_per_s", l.prompt_tokens_per_s},
                                    {"decode_tokens_per_s", l.decode_tokens_per_s}};
    } else if (o.llama_cpp) {
      j["llama_cpp"] = {{"skipped", llama_note}};
    }
    fmt::print("{}\n", j.dump());
  }
}

}  // namespace

void register_bench_generate(CLI::App& bench) {
  auto o = std::make_shared<BenchGenOptions>();
  auto* cmd = bench.add_subcommand("generate", "Decode tokens/s (batch 1, 16), prefill, bandwidth floor, PyTorch");
  cmd->add_option("--preset", o->preset, "Model preset (random weights)")->capture_default_str();
  cmd->add_option("--prompt", o->prompt, "Prompt tokens")->capture_default_str()->check(integer_in(1, 1 << 20));
  // (the first is decoded untimed: at least one timed step between two probes)
  cmd->add_option("--tokens", o->tokens, "Decoded tokens per sequence (2 or more)")->capture_default_str()->check(integer_in(2, 1 << 20));
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_option("--rounds", o->rounds, "Interleaved measurement rounds (each rate's median round is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  cmd->add_option("--kv-cache", o->kv_cache, "KV cache elements of every path: fp32, bf16, or auto (bf16 beside bf16/int8 weights)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  cmd->add_flag("--profile", o->profile, "Time per op of a decode step");
  cmd->add_flag("--no-reference", o->no_reference, "Skip the PyTorch reference");
  cmd->add_flag("--compare-llama-cpp", o->llama_cpp,
                "Also run llama.cpp (npm node-llama-cpp) on the same sizes as GGUF f32, bf16 and q8_0 (use --prompt 512 for pp512)");
  cmd->add_flag("--json", o->json, "End with one JSON line");
  cmd->callback([o] { run_bench_generate(*o); });
}

}  // namespace palm
