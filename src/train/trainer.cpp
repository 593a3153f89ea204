#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/memory_info.h"
#include "base/check.h"
#include "base/hardware.h"
#include "base/file_util.h"
#include "base/progress.h"
#include "base/sha256.h"
#include "base/threads.h"
#include "data/loader.h"
#include "dist/comm.h"
#include "dist/mesh.h"
#include "model/safetensors.h"
#include "model/tensor_parallel.h"
#include "kernels/backend.h"
#include "model/accounting.h"
#include "model/model.h"
#include "model/model_io.h"
#include "train/checkpoint.h"
#include "train/fsdp.h"
#include "train/overlap.h"

namespace palm {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

std::atomic<int> g_stop_signal{0};  // set by request_training_stop (base/signals.h's thread)

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// fp32 GEMM rate on this machine for the MFU column (a short 1024^3 measurement).
double quick_gemm_peak(Backend& be) {
  const std::int64_t n = 1024;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  be.gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  const auto t0 = Clock::now();
  int calls = 0;
  while (std::chrono::duration<double>(Clock::now() - t0).count() < 0.5) {
    be.gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    ++calls;
  }
  return 2.0 * n * n * n * calls / std::chrono::duration<double>(Clock::now() - t0).count();
}

// Data-parallel replicas (and pods) must hold bitwise the same parameters; a mismatch is a
// bug or a hardware fault, and training on would diverge silently.
// `only`: the tensors this rank holds (fully sharded), else all.
void check_replicas_identical(Backend& be, Comm& world, const Weights& w, std::int64_t step, const std::vector<bool>* only = nullptr) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  std::size_t i = 0;
  for_each_param(w.config, [&](const ParamInfo& p) {
    if (only && !(*only)[i++]) return;
    h = (h ^ be.hash_floats(w.arena.data() + p.offset, p.numel)) * 0x100000001B3ull;
  });
  std::int64_t v[2] = {std::int64_t(h), std::int64_t(~h)};
  world.all_reduce_max(v, 2);
  PALM_CHECK(v[0] == ~v[1], "step ", step, ": the parameters differ between replicas (hash ", h, " on rank ",
             world.rank(), "); stopping");
}

// The whole run's memory on this host against MemAvailable, once, before anything is
// written: a clear error naming the numbers instead of the OOM killer mid-run. Under
// --shard full, weights and gradients are resident only where owned: about 1/owners of them.
std::string fmt_gib(double gib) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", gib);
  return b;
}

void check_run_memory(double weights, double grads, double state, double acts, int owners) {
  const double avail = available_memory_bytes();
  if (avail < 0) return;
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");  // processes of this job on this host
  const int per_host = local ? std::max(1, std::atoi(local)) : 1;
  const double gib = double(1 << 30);
  weights /= owners;
  grads /= owners;
  const double per_process = weights + grads + state + acts;
  PALM_CHECK(per_process * per_host <= avail, "out of memory: this run needs ", fmt_gib(per_process / gib),
             " GiB per process (weights ", fmt_gib(weights / gib), ", gradients ", fmt_gib(grads / gib),
             ", optimizer state ", fmt_gib(state / gib), ", activations ", fmt_gib(acts / gib), ")",
             per_host > 1 ? " x " + std::to_string(per_host) + " processes on this host" : std::string(), ", but only ",
             fmt_gib(avail / gib), " GiB are available; lower --batch-size or --seq-len, use --remat or --grad-accum, "
             "or shard (--shard optimizer|full)");
}

// An integer of a checkpoint's state.json (absent: 0) within [lo, hi], else a clear error.
std::int64_t checked_state_int(const json& st, const char* key, std::int64_t lo, std::int64_t hi, const std::string& where) {
  if (!st.contains(key)) return 0;
  const json& v = st[key];
  PALM_CHECK(v.is_number_integer() && v.get<std::int64_t>() >= lo && v.get<std::int64_t>() <= hi, where,
             "/state.json: \"", key, "\" must be an integer in [", lo, ", ", hi, "], got ", v.dump());
  return v.get<std::int64_t>();
}

void truncate_metrics(const std::string& path, std::int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", std::int64_t(0)) <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // a line cut by kill -9: dropped
    }
  }
  write_text_atomic(path, kept);
}

}  // namespace

std::string train_options_to_json(const TrainOptions& o) {
  json j;
  j["model"] = nlohmann::json::parse(config_to_json(o.model));
  j["preset"] = o.preset;
  j["data"] = o.data;
  j["init"] = o.init;
  j["steps"] = o.steps;
  j["batch_size"] = o.batch_size;
  j["seq_len"] = o.seq_len;
  j["grad_accum"] = o.grad_accum;
  j["seed"] = o.seed;
  j["checkpoint_every"] = o.checkpoint_every;
  j["keep_checkpoints"] = o.keep_checkpoints;
  j["eval_every"] = o.eval_every;
  j["eval_batches"] = o.eval_batches;
  j["remat"] = o.remat;
  j["bf16"] = o.bf16;
  j["optimizer"] = o.optimizer.kind;
  j["clip_norm"] = o.optimizer.clip_norm;
  j["lr_schedule"] = o.lr.kind;
  j["lr"] = o.lr.peak;
  j["warmup_steps"] = o.lr.warmup;
  j["min_lr_ratio"] = o.lr.min_ratio;
  j["batch_ramp"] = o.batch_ramp;
  j["z_loss"] = o.z_loss;
  j["spike_factor"] = o.spike_factor;
  j["spike_window"] = o.spike_window;
  j["spike_skip"] = o.spike_skip;
  j["max_rollbacks"] = o.max_rollbacks;
  j["weight_decay"] = o.optimizer.weight_decay;
  // the layout it last ran with (informational: a resume takes its layout from the command line)
  j["layout"] = {{"tp", o.tp}, {"pods", o.pods}, {"shard", o.shard}};
  return j.dump(2) + "\n";
}

TrainOptions train_options_from_json(const std::string& text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(str_cat(where, ": not valid JSON: ", e.what()));
  }
  TrainOptions o;
  try {
    o.model = config_from_json(j.at("model").dump(), where + " (model)");
    o.preset = j.value("preset", "");
    o.data = j.at("data").get<std::string>();
    o.init = j.value("init", "");
    o.steps = j.at("steps");
    o.batch_size = j.at("batch_size");
    o.seq_len = j.at("seq_len");
    o.grad_accum = j.value("grad_accum", 1);
    o.seed = j.value("seed", 0);
    o.checkpoint_every = j.value("checkpoint_every", 100);
    o.keep_checkpoints = j.value("keep_checkpoints", 3);
    o.eval_every = j.value("eval_every", 100);
    o.eval_batches = j.value("eval_batches", 8);
    o.remat = j.value("remat", false);
    o.bf16 = j.value("bf16", false);
    o.optimizer.kind = j.value("optimizer", "adafactor");
    o.optimizer.clip_norm = j.value("clip_norm", 1.0);
    o.optimizer.weight_decay = j.value("weight_decay", 0.1);
    o.lr.kind = j.value("lr_schedule", "palm");
    o.lr.peak = j.value("lr", 1e-2);
    o.lr.warmup = j.value("warmup_steps", 0);
    o.lr.min_ratio = j.value("min_lr_ratio", 0.1);
    o.batch_ramp = j.value("batch_ramp", "");
    o.z_loss = j.value("z_loss", 1e-4);
    o.spike_factor = j.value("spike_factor", 3.0);
    o.spike_window = j.value("spike_window", 50);
    o.spike_skip = j.value("spike_skip", 200);
    o.max_rollbacks = j.value("max_rollbacks", 5);
  } catch (const nlohmann::json::exception& e) {
    fail(str_cat(where, ": ", e.what()));
  }
  return o;
}

void request_training_stop(int sig) { g_stop_signal = sig; }

std::int64_t run_training(TrainOptions o, bool resume) {
  set_threads(o.threads);
  PALM_CHECK(!o.out.empty(), "--out RUN is required");
  PALM_CHECK(o.steps > 0, "--steps must be positive");
  PALM_CHECK(o.seq_len > 0 && o.batch_size > 0 && o.grad_accum > 0, "--seq-len, --batch-size and --grad-accum must be positive");
  PALM_CHECK(o.batch_size % o.grad_accum == 0, "--batch-size ", o.batch_size, " is not divisible by --grad-accum ", o.grad_accum);
  PALM_CHECK(o.checkpoint_every > 0 && o.eval_every > 0, "--checkpoint-every and --eval-every must be positive");
  validate(o.lr);
  if (o.lr.kind == "cosine" && o.lr.total == 0) o.lr.total = o.steps;
  const BatchRamp ramp = BatchRamp::parse(o.batch_ramp, o.batch_size);
  const std::int64_t micro = o.batch_size / o.grad_accum;  // rows per forward/backward
  for (const auto& [from, b] : ramp.points)
    PALM_CHECK(b % micro == 0, "--batch-ramp batch ", b, " is not a multiple of the micro-batch ", micro);

  // The data fixes the vocabulary: a preset's vocab is replaced.
  DataLoader loader(o.data, o.seq_len, o.seed);
  const std::string tok_dir = (fs::path(o.data) / "tokenizer").string();
  o.model.vocab_size = loader.vocab_size();
  o.model.max_seq_len = std::max(o.model.max_seq_len, o.seq_len);
  validate(o.model);

  const auto be = make_backend();
  // The mesh: every rank of a data-parallel replica set takes its slice of each micro-batch.
  Mesh mesh(make_world_comm(), o.tp, o.pods);
  // tensor parallelism: this rank holds a shard; `local` is the config of its tensors
  const ModelConfig shard_config = o.tp > 1 ? tp_local_config(o.model, o.tp) : o.model;
  const TpLayout layout{o.model, mesh.tensor_index(), o.tp};
  PALM_CHECK(o.shard == "none" || o.shard == "optimizer" || o.shard == "full", "--shard ", o.shard,
             ": expected none, optimizer or full");
  const int W = mesh.data_parallel_ranks(), R = mesh.data_parallel_index();
  const bool leader = mesh.world().rank() == 0;  // writes the run's files and shows progress
  PALM_CHECK(micro % W == 0, "the micro-batch of ", micro, " sequences does not split over ", W,
             " data-parallel ranks (--batch-size / --grad-accum must be a multiple of ", W, ")");
  const std::int64_t local = micro / W;  // rows this rank computes per micro-batch
  if (mesh.world().size() > 1) std::fprintf(stderr, "palm train: %s, %lld of every %lld sequences\n", mesh.describe().c_str(), (long long)local, (long long)micro);
  Weights w(*be, shard_config);
  Gradients g(*be, shard_config);
  // --shard optimizer: each rank of a pod's data-parallel group owns whole tensors (largest
  // first, to the least loaded rank), keeps only their state and updates only them; the
  // per-tensor RMS terms are then exactly the unsharded ones, and broadcasting each
  // updated tensor from its owner makes the step bitwise that of --shard none.
  std::vector<int> owner;
  std::vector<bool> owned;
  if (o.shard != "none" && mesh.data() > 1) {
    std::vector<std::pair<std::int64_t, std::size_t>> sizes;
    for_each_param(shard_config, [&](const ParamInfo& p) { sizes.emplace_back(p.numel, sizes.size()); });
    std::stable_sort(sizes.begin(), sizes.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    owner.assign(sizes.size(), 0);
    std::vector<std::int64_t> load(std::size_t(mesh.data()), 0);
    for (const auto& [n, i] : sizes) {
      const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
      owner[i] = r;
      load[std::size_t(r)] += n;
    }
    for (int r : owner) owned.push_back(r == mesh.data_index());
  }
  Optimizer opt(*be, shard_config, o.optimizer, owned);
  if (o.tp > 1) {
    std::vector<bool> split;
    for_each_param(shard_config, [&](const ParamInfo& p) { split.push_back(p.tp_split != TpSplit::kNone); });
    opt.set_tensor_parallel(&mesh.tensor_group(), split);
  }
  // Refuse a run that cannot fit before touching its memory (the arenas are anonymous
  // mappings: resident only once written): weights, gradients, optimizer state and
  // activations of this process, times the processes on this host.
  const ActivationPlan plan{local, o.seq_len, o.remat, true, o.bf16, o.tp > 1};
  check_run_memory(double(w.arena.size()) * 4, double(g.arena.size()) * 4, double(opt.state_bytes()),
                   double(Activations::bytes_needed(*be, shard_config, plan)), o.shard == "full" ? mesh.data() : 1);
  Activations acts(*be, shard_config, plan);
  // --shard full: weights and gradients resident only on their owners (src/train/fsdp.h)
  std::unique_ptr<FullySharded> fsdp;
  if (o.shard == "full" && !owner.empty()) {
    fsdp = std::make_unique<FullySharded>(*be, mesh.data_group(), shard_config, w, g, owner);
    acts.sharded = fsdp.get();
    opt.set_norm_group(&mesh.data_group());  // each gradient lives on its owner only
  }
  // data parallelism: each block's gradients are reduced while the blocks below compute
  std::unique_ptr<OverlappedReduce> overlap;
  if (o.overlap && W > 1 && o.tp == 1 && !fsdp) {
    overlap = std::make_unique<OverlappedReduce>(mesh.gradient_comm(), shard_config, g);
    acts.overlap = overlap.get();
  }
  if (o.tp > 1) {
    acts.tp = {&mesh.tensor_group(), mesh.tensor_index(), o.tp};
    acts.vocab_offset = std::int64_t(mesh.tensor_index()) * shard_config.vocab_size;
  }

  std::int64_t step = 0;            // last completed step
  std::int64_t skip_samples = 0;    // data skipped by rollbacks
  std::int64_t tokens_seen = 0;
  double wall_before = 0;
  json rollbacks = json::array();
  const std::string metrics_path = (fs::path(o.out) / "metrics.jsonl").string();
  if (resume && latest_checkpoint(o.out).empty()) {
    // killed before its first checkpoint: its config.json is all a fresh start needs
    // (initialization and data order are functions of the seed)
    if (leader) std::fprintf(stderr, "%s has no complete checkpoint yet: starting it from step 0 with its stored config\n", o.out.c_str());
    resume = false;
  }
  if (resume) {
    // A checkpoint interrupted by kill -9 is a hidden temporary: remove it.
    std::error_code ec;
    if (leader)
      for (const auto& e : fs::directory_iterator(fs::path(o.out) / "checkpoints", ec))
        if (e.path().filename().string().rfind(".step-", 0) == 0) fs::remove_all(e.path(), ec);
    mesh.world().barrier();
    const std::string ckpt = latest_checkpoint(o.out);
    PALM_CHECK(!ckpt.empty(), o.out, ": no complete checkpoint to resume from");
    const auto st = nlohmann::json::parse(load_checkpoint(ckpt, w, opt, &layout));
    if (fsdp) fsdp->release_all();
    PALM_CHECK(st.at("tokenizer_sha256") == loader.tokenizer_sha256(), ckpt, ": made with the tokenizer ",
               st.at("tokenizer_sha256").get<std::string>(), " but the data uses ", loader.tokenizer_sha256());
    const std::string manifest_sha = sha256_file((fs::path(o.data) / "manifest.json").string());
    PALM_CHECK(!st.contains("data_manifest_sha256") || st["data_manifest_sha256"] == manifest_sha, ckpt,
               ": trained on the data whose manifest has sha256 ", st.value("data_manifest_sha256", std::string()),
               ", but ", o.data, "/manifest.json now has ", manifest_sha,
               " (the data changed: resuming would not continue the same run)");
    // state.json is a file a person may edit: every number checked before it is used
    step = checked_state_int(st, "step", 0, std::int64_t(1) << 50, ckpt);
    skip_samples = checked_state_int(st, "skip_samples", 0, std::int64_t(1) << 50, ckpt);
    tokens_seen = checked_state_int(st, "tokens_seen", 0, std::int64_t(1) << 60, ckpt);
    wall_before = st.value("wall_seconds", 0.0);
    rollbacks = st.value("rollbacks", json::array());
    if (leader) truncate_metrics(metrics_path, step);
    if (leader) std::fprintf(stderr, "resuming %s from step %lld (%s)\n", o.out.c_str(), (long long)step, ckpt.c_str());
  } else {
    PALM_CHECK(list_checkpoints(o.out).empty(), o.out, ": already holds checkpoints; use --resume ", o.out,
               " or another --out");
    mesh.world().barrier();  // every rank has looked before the leader writes
    if (leader) fs::create_directories(o.out);
    if (!o.init.empty()) {
      const auto init = load_model(*be, o.init);
      PALM_CHECK(init->config.vocab_size == o.model.vocab_size, "--init ", o.init, " has vocab ", init->config.vocab_size,
                 " but the data's tokenizer has ", o.model.vocab_size);
      PALM_CHECK(init->config == o.model, "--init ", o.init, ": its config differs from the run's (",
                 config_differences(init->config, o.model), ": file vs run)");
      for_each_param(shard_config, [&](const ParamInfo& p) {
        const ParamInfo& gp = param_list(o.model)[std::size_t(&p - param_list(shard_config).data())];
        tp_extract(init->arena.data() + gp.offset, gp.shape, tp_slice(gp, layout.rank, layout.size),
                   w.arena.data() + p.offset);
      });
    } else {
      const std::vector<bool>* only = fsdp ? &owned : nullptr;  // --shard full: what this rank owns
      if (o.tp > 1) init_weights_tp(*be, w, o.model, layout.rank, layout.size, o.seed, only);  // the shard of the same init
      else init_weights(*be, w, o.seed, only);
    }
    if (fsdp) fsdp->release_all();
    if (leader) write_text_atomic(metrics_path, "");
  }
  if (leader) write_text_atomic((fs::path(o.out) / "config.json").string(), train_options_to_json(o));
  mesh.world().barrier();


  const ModelAccounting acc = account(*be, o.model, micro, o.seq_len);
  const double peak = quick_gemm_peak(*be);
  std::vector<std::int32_t> rows(local * (o.seq_len + 1)), tokens(local * o.seq_len), targets(local * o.seq_len);
  std::vector<double> recent;
  // only the leader writes the run's record; the others write to /dev/null
  const std::string record_path = leader ? metrics_path : "/dev/null";
  std::FILE* metrics = std::fopen(record_path.c_str(), "a");
  PALM_CHECK(metrics, metrics_path, ": cannot append");
  const auto t_start = Clock::now();

  auto state_json = [&]() {
    json s;
    s["step"] = step;
    s["seed"] = o.seed;
    s["config"] = nlohmann::json::parse(config_to_json(o.model));
    s["tokenizer_sha256"] = loader.tokenizer_sha256();
    s["data_manifest_sha256"] = sha256_file((fs::path(o.data) / "manifest.json").string());
    s["skip_samples"] = skip_samples;
    s["tokens_seen"] = tokens_seen;
    s["wall_seconds"] = wall_before + std::chrono::duration<double>(Clock::now() - t_start).count();
    s["rollbacks"] = rollbacks;
    const Hardware hw = describe_hardware();
    s["hardware"] = {{"cpu", hw.cpu_model}, {"logical_cpus", hw.logical_cpus}, {"usable_cpus", hw.usable_cpus},
                     {"threads", current_threads()}, {"gpus", 0}, {"backend", "cpu"}, {"host", hw.hostname}};
    return s.dump(2) + "\n";
  };
  auto checkpoint = [&] {
    std::fflush(metrics);
    if (!owner.empty() || o.tp > 1) {
      // the state is spread over pod 0's ranks: each writes its share (its tensor shard of
      // the weights, the optimizer state it owns)
      const bool writer = mesh.pod_index() == 0 && (!owner.empty() || mesh.data_index() == 0);
      std::vector<bool> weights_owned;  // --shard full: each writer writes the weights it owns
      if (fsdp)
        for (std::size_t i = 0; i < owner.size(); ++i) weights_owned.push_back(fsdp->owns(i));
      save_checkpoint_sharded(mesh.world(), leader, writer, owner.empty() ? 0 : mesh.data_index(),
                              owner.empty() ? 1 : mesh.data(), o.out, step, w, opt, leader ? state_json() : std::string(),
                              tok_dir, loader.tokenizer_sha256(), o.keep_checkpoints, layout, weights_owned);
      return;
    }
    // replicas hold the same bits (checked by hash): the leader's copy is the checkpoint
    if (leader) save_checkpoint(o.out, step, w, opt, state_json(), tok_dir, loader.tokenizer_sha256(), o.keep_checkpoints);
    mesh.world().barrier();
  };
  auto eval = [&]() -> double {
    // every rank evaluates the same windows in batches of its local size
    const std::int64_t windows = std::min(loader.val_windows(), o.eval_batches * micro);
    if (windows < micro) return NAN;
    double sum = 0;
    std::int64_t batches = 0;
    for (std::int64_t first = 0; first + local <= windows; first += local, ++batches) {
      for (std::int64_t r = 0; r < local; ++r) loader.val_window(first + r, rows.data() + r * (o.seq_len + 1));
      for (std::int64_t r = 0; r < local; ++r)
        for (std::int64_t t = 0; t < o.seq_len; ++t) {
          tokens[r * o.seq_len + t] = rows[r * (o.seq_len + 1) + t];
          targets[r * o.seq_len + t] = rows[r * (o.seq_len + 1) + t + 1];
        }
      sum += forward(*be, w, acts, tokens.data(), targets.data(), 0.0f).loss;
    }
    return sum / double(batches);
  };

  const std::int64_t start_step = step;
  Progress progress("train", std::max<std::int64_t>(o.steps - start_step, 1), "steps");
  const auto t_loop = Clock::now();
  std::int64_t loop_tokens = 0;
  while (step < o.steps) {
    const std::int64_t k = step + 1;
    const std::int64_t B = ramp.batch_at(k);
    const std::int64_t first = ramp.samples_before(k) + skip_samples;
    if (fsdp) {  // other owners' gradients are already zero pages: touch only this rank's
      std::size_t i = 0;
      for_each_param(shard_config, [&](const ParamInfo& p) {
        if (fsdp->owns(i++)) be->memset_on_device(g.arena.data() + p.offset, 0, sizeof(float) * std::size_t(p.numel));
      });
    } else {
      be->memset_on_device(g.arena.data(), 0, sizeof(float) * g.arena.size());
    }
    double loss = 0, zl = 0;
    const std::int64_t accum = B / micro;
    for (std::int64_t m = 0; m < accum; ++m) {
      loader.samples(first + m * micro + R * local, local, rows.data());
      for (std::int64_t r = 0; r < local; ++r)
        for (std::int64_t t = 0; t < o.seq_len; ++t) {
          tokens[r * o.seq_len + t] = rows[r * (o.seq_len + 1) + t];
          targets[r * o.seq_len + t] = rows[r * (o.seq_len + 1) + t + 1];
        }
      const LossStats s = forward(*be, w, acts, tokens.data(), targets.data(), float(o.z_loss));
      // the last micro-batch sums the step's gradients over the replicas
      backward(*be, mesh.gradient_comm(), w, acts, tokens.data(), g, m == accum - 1);
      loss += s.loss / double(accum);
      zl += s.z_loss / double(accum);
    }
    if (W > 1) {  // the global batch's mean: the same bits on every rank
      double lz[2] = {loss, zl};
      mesh.gradient_comm().all_reduce_sum(lz, 2);
      loss = lz[0] / W;
      zl = lz[1] / W;
    }
    if (o.inject_spike == k) loss *= 100;  // each time step k is trained: a recurring spike
    // Loss spike: roll back to the newest checkpoint and skip the batches around the spike.
    const bool spike = !std::isfinite(loss) ||
                       (std::int64_t(recent.size()) >= std::min<std::int64_t>(o.spike_window, 10) &&
                        loss > o.spike_factor * median(recent));
    if (spike) {
      const std::string ckpt = latest_checkpoint(o.out);
      PALM_CHECK(!ckpt.empty(), "loss spike at step ", k, " (loss ", loss, ") before the first checkpoint: stopping");
      PALM_CHECK(std::int64_t(rollbacks.size()) < o.max_rollbacks, "loss spike at step ", k, ": already rolled back ",
                 rollbacks.size(), " times (--max-rollbacks): stopping");
      const auto st = nlohmann::json::parse(load_checkpoint(ckpt, w, opt, &layout));
      if (fsdp) fsdp->release_all();
      const std::int64_t back_to = st.at("step");
      const std::int64_t skip_steps = std::max(o.spike_skip, k - back_to);
      skip_samples = st.value("skip_samples", std::int64_t(0)) + ramp.samples_before(k + skip_steps) - ramp.samples_before(k);
      tokens_seen = st.value("tokens_seen", std::int64_t(0));
      json event = {{"event", "rollback"}, {"spike_step", k}, {"loss", std::isfinite(loss) ? loss : -1.0},
                    {"median", median(recent)}, {"to_step", back_to}, {"skipped_batches", skip_steps}};
      // the list keeps every rollback of the run, also those after the checkpoint it
      // returns to: a spike that recurs must reach --max-rollbacks
      rollbacks.push_back(event);
      std::fprintf(stderr, "\nloss spike at step %lld (%.4f, median %.4f): rolled back to step %lld, skipping %lld batches\n",
                   (long long)k, loss, median(recent), (long long)back_to, (long long)skip_steps);
      step = back_to;
      recent.clear();
      std::fflush(metrics);
      std::fclose(metrics);
      if (leader) truncate_metrics(metrics_path, step);
      metrics = std::fopen(record_path.c_str(), "a");
      event["step"] = step;
      std::fprintf(metrics, "%s\n", event.dump().c_str());
      continue;
    }
    if (accum * W > 1) {  // each micro-batch's gradient is a mean over its local rows
      const float inv = 1.0f / float(accum * W);
      std::size_t t = 0;
      for_each_param(shard_config, [&](const ParamInfo& p) {
        if (fsdp && !fsdp->owns(t++)) return;  // not here (and not touched: it stays unresident)
        be->scale(g.arena.data() + p.offset, inv, p.numel);
      });
    }
    const double lr = o.lr.at(k);
    if (fsdp && mesh.pods() > 1) {  // owners swap their summed gradients with their twins
      std::size_t i = 0;
      for_each_param(shard_config, [&](const ParamInfo& p) {
        if (fsdp->owns(i++)) mesh.pod_twins().all_reduce_sum(g.arena.data() + p.offset, p.numel);
      });
    }
    if (!o.dump_gradients.empty() && k == start_step + 1 && mesh.pod_index() == 0 && mesh.data_index() == 0) {
      std::vector<TensorToWrite> grads;  // this tensor rank's gradients, reduced and scaled
      for_each_param(shard_config, [&](const ParamInfo& p) { grads.push_back({p.name, p.shape, g.arena.data() + p.offset}); });
      write_safetensors(o.dump_gradients + "-tp-" + std::to_string(layout.rank) + "-of-" + std::to_string(layout.size) + ".safetensors",
                        {}, grads);
    }
    const double gnorm = opt.step(w, g, k, lr);
    if (fsdp) fsdp->release_globals();
    if (!owner.empty() && !fsdp) {  // every tensor from the rank that updated it
      std::size_t i = 0;
      for_each_param(shard_config, [&](const ParamInfo& p) { mesh.data_group().broadcast(w.arena.data() + p.offset, p.numel, owner[i++]); });
    }
    step = k;
    tokens_seen += B * o.seq_len;
    loop_tokens += B * o.seq_len;
    recent.push_back(loss);
    if (std::int64_t(recent.size()) > o.spike_window) recent.erase(recent.begin());
    const double el = std::chrono::duration<double>(Clock::now() - t_loop).count();
    const double tps = el > 0 ? double(loop_tokens) / el : 0;
    json line = {{"step", k}, {"loss", loss}, {"z_loss", zl}, {"lr", lr}, {"grad_norm", gnorm}, {"batch", B},
                 {"tokens", tokens_seen}};
    std::fprintf(metrics, "%s\n", line.dump().c_str());
    if (leader) progress.update(k - start_step,
                    str_cat("step ", k, "/", o.steps, "  loss ", std::round(loss * 1e4) / 1e4, "  z ",
                            std::round(zl * 1e5) / 1e5, "  lr ", lr, "  |g| ", std::round(gnorm * 1e3) / 1e3, "  ",
                            std::lround(tps), " tok/s  MFU ", std::round(1000 * tps * acc.flops_per_token / peak) / 10, "%"));
    if (k % o.eval_every == 0 || k == o.steps) {
      const double v = eval();
      if (fsdp) fsdp->release_globals();
      if (std::isfinite(v)) {
        std::fprintf(metrics, "%s\n", json({{"step", k}, {"val_loss", v}}).dump().c_str());
        std::fprintf(stderr, "%sstep %lld: validation loss %.4f\n", isatty(2) ? "\n" : "", (long long)k, v);
      }
    }
    if (o.inject_divergence == k && mesh.world().rank() == mesh.world().size() - 1) w.arena.data()[0] += 1e-3f;
    if (mesh.world().size() > 1) {
      // every rank stops at the same step, whichever the signal reached first
      std::int64_t stop_flag = g_stop_signal.load();
      mesh.world().all_reduce_max(&stop_flag, 1);
      if (stop_flag && !g_stop_signal) g_stop_signal = int(stop_flag);
      if (k % o.hash_every == 0 || k == o.steps) check_replicas_identical(*be, fsdp ? mesh.pod_twins() : mesh.replicas(), w, k, fsdp ? &owned : nullptr);
    }
    if (k % o.checkpoint_every == 0 || k == o.steps || g_stop_signal) checkpoint();
    if (g_stop_signal) {
      std::fprintf(stderr, "\nsignal %d: stopped after step %lld with a checkpoint; resume with palm train --resume %s\n",
                   int(g_stop_signal), (long long)k, o.out.c_str());
      break;
    }
  }
  if (resume && step == start_step && step == o.steps) {
    // nothing to train: rewrite the newest checkpoint in this launch's layout (resharding)
    checkpoint();
    if (leader) std::fprintf(stderr, "rewrote the checkpoint of step %lld in this layout (tp %d, %d data-parallel ranks, shard %s)\n",
                             (long long)step, o.tp, W, o.shard.c_str());
  }
  std::fclose(metrics);
  g_stop_signal = 0;  // handled
  // the steps this launch did (a signal stops it short of the total)
  if (leader) progress.finish_at(step - start_step, str_cat("step ", step, ", ", tokens_seen, " tokens"));
  if (mesh.world().size() > 1) {  // what sharding saves shows here
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmHWM:", 0) == 0 || line.rfind("VmRSS:", 0) == 0)
        std::fprintf(stderr, "palm train: %s %s memory%s\n", mesh.describe().c_str(),
                     line[2] == 'H' ? "peak resident" : "resident at the end,", line.substr(6).c_str());
  }
  if (leader && mesh.world().size() > 1 && step > start_step) {
    const double el = std::chrono::duration<double>(Clock::now() - t_loop).count();
    const double steps = double(step - start_step);
    if (overlap)
      std::fprintf(stderr, "palm train: gradient communication %.4f s per step, of which exposed %.4f s (%.1f%% of a %.4f s step; the rest overlapped the backward)\n",
                   mesh.gradient_seconds() / steps, overlap->waited_seconds() / steps,
                   100 * overlap->waited_seconds() / el, el / steps);
    else
      std::fprintf(stderr, "palm train: gradient communication %.4f s of %.4f s per step (%.1f%%, not overlapped with the backward)\n",
                   mesh.gradient_seconds() / steps, el / steps, 100 * mesh.gradient_seconds() / el);
  }
  return step;
}

}  // namespace palm
