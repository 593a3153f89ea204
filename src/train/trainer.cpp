#include "train/trainer.h"

#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

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
#include "kernels/device_buffer.h"
#include "model/accounting.h"
#include "model/model.h"
#include "model/model_io.h"
#include "train/checkpoint.h"
#include "train/fsdp.h"
#include "train/heartbeat.h"
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

// fp32 GEMM rate on this machine for the MFU column (a short 1024^3 measurement): the
// fastest of ~0.5 s of products, since a peak is what the machine can do. The mean had
// read low when another program briefly shared the cores, and MFU then above 200%.
double quick_gemm_peak(Backend& be) {
  const std::int64_t n = 1024;
  DeviceFloats a(be, std::size_t(n * n)), b(be, std::size_t(n * n)), c(be, std::size_t(n * n));  // zeros: timing only
  be.gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  be.synchronize();
  const auto start = Clock::now();
  double fastest = INFINITY;
  while (std::chrono::duration<double>(Clock::now() - start).count() < 0.5) {
    const auto t0 = Clock::now();
    be.gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    be.synchronize();
    fastest = std::min(fastest, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return 2.0 * n * n * n / fastest;
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

// The whole run's memory on this host against MemAvailable (a device's: its free memory),
// once, before anything is written: a clear error naming the numbers instead of the OOM
// killer mid-run. Under
// --shard full, weights and gradients are resident only where owned: about 1/owners of them.
std::string fmt_gib(double gib) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", gib);
  return b;
}

void check_run_memory(const Backend& be, double weights, double grads, double state, double acts, int owners) {
  const double avail = be.memory_available();
  if (avail < 0) return;
  const double gib = double(1 << 30);
  if (!be.host_visible()) {  // a device's memory is taken at allocation: what is left must hold the activations
    PALM_CHECK(acts <= avail, "out of ", be.name(), " device memory: the activations need ", fmt_gib(acts / gib),
               " GiB, but only ", fmt_gib(avail / gib), " GiB are free after the weights, gradients and optimizer ",
               "state; lower --batch-size or --seq-len, or use --remat or --grad-accum");
    return;
  }
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");  // processes of this job on this host (mpirun)
  if (!local) local = std::getenv("SLURM_NTASKS_PER_NODE");  // (srun; absent when the tasks per node differ)
  const int per_host = local ? std::max(1, std::atoi(local)) : 1;
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

void request_training_stop(int sig) { g_stop_signal = sig; }

namespace {

// --shard optimizer|full: each rank of a pod's data-parallel group owns whole tensors
// (largest first, to the least loaded rank), keeps only their state and updates only
// them; the per-tensor RMS terms are then exactly the unsharded ones, and broadcasting
// each updated tensor from its owner makes the step bitwise that of --shard none.
std::vector<int> assign_owners(const ModelConfig& c, int ranks) {
  std::vector<std::pair<std::int64_t, std::size_t>> sizes;
  for_each_param(c, [&](const ParamInfo& p) { sizes.emplace_back(p.numel, sizes.size()); });
  std::stable_sort(sizes.begin(), sizes.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<int> owner(sizes.size(), 0);
  std::vector<std::int64_t> load(std::size_t(ranks), 0);
  for (const auto& [n, i] : sizes) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[std::size_t(r)] += n;
  }
  return owner;
}

// Where the run stands: restored from a checkpoint (resume, rollback) and saved into one.
struct RunState {
  std::int64_t step = 0;          // last completed step
  std::int64_t skip_samples = 0;  // data skipped by rollbacks
  std::int64_t tokens_seen = 0;
  double wall_before = 0;         // seconds of earlier launches
  json rollbacks = json::array();
};

// One launch of `palm train`: setup (the constructor), the run state (resume, init,
// rollback), one step, and the record (metrics, progress, evaluation, checkpoints).
class TrainingRun {
 public:
  TrainingRun(TrainOptions o, bool resume);
  ~TrainingRun() {
    if (metrics_) std::fclose(metrics_);
  }
  std::int64_t run();  // returns the last completed step

 private:
  // ---- setup
  TrainOptions o_;
  bool resume_;
  BatchRamp ramp_;
  std::int64_t micro_;  // rows per forward/backward over all data-parallel ranks
  DataLoader loader_;
  std::unique_ptr<Backend> be_;
  Mesh mesh_;
  ModelConfig shard_config_;  // this rank's tensors (tensor parallelism: a shard)
  TpLayout layout_;
  int W_, R_;                 // data-parallel ranks, this rank's index
  bool leader_;               // writes the run's files and shows progress
  std::int64_t local_;        // rows this rank computes per micro-batch
  std::vector<int> owner_;
  std::vector<bool> owned_;
  std::unique_ptr<Weights> w_;
  std::unique_ptr<Gradients> g_;
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<Activations> acts_;
  std::unique_ptr<FullySharded> fsdp_;
  std::unique_ptr<OverlappedReduce> overlap_;
  std::string metrics_path_, record_path_, tok_dir_;
  // ---- run state
  RunState st_;
  std::int64_t start_step_ = 0;
  void restore();
  void initialize();
  bool roll_back(std::int64_t k, double loss);  // false when it may not (throws then)
  // ---- one step
  std::vector<std::int32_t> rows_, tokens_, targets_;
  std::vector<double> recent_;  // the spike detector's window
  struct StepResult {
    double loss = 0, z_loss = 0;
  };
  void zero_gradients();
  StepResult forward_backward(std::int64_t first, std::int64_t accum);
  void finish_gradients(std::int64_t accum);
  void fill_batch();
  // ---- record
  std::FILE* metrics_ = nullptr;
  Clock::time_point t_start_, t_loop_;
  std::int64_t loop_tokens_ = 0;
  ModelAccounting acc_;
  double peak_ = 0;
  std::string state_json();
  void checkpoint();
  double evaluate();
  void record(std::int64_t k, const StepResult& s, double lr, double gnorm, std::int64_t B, Progress& progress);
  std::unique_ptr<HeartbeatWriter> heartbeat_;  // under palm launch
  void beat(std::int64_t k, double loss, const char* phase);
  void report_end();
};

TrainingRun::TrainingRun(TrainOptions o, bool resume)
    : o_((check_options(o), std::move(o))),
      resume_(resume),
      ramp_(BatchRamp::parse(o_.batch_ramp, o_.batch_size)),
      micro_(o_.batch_size / o_.grad_accum),
      loader_(o_.data, o_.seq_len, o_.seed),
      be_(make_backend()),
      // a GPU rank's gradients and weights are device memory: NCCL (or MPI staged through the host)
      mesh_(be_->name() == "cuda" ? make_device_world_comm() : make_world_comm(), o_.tp, o_.pods) {
  for (const auto& [from, b] : ramp_.points)
    PALM_CHECK(b % micro_ == 0, "--batch-ramp batch ", b, " is not a multiple of the micro-batch ", micro_);
  o_ = validated(std::move(o_), loader_);
  tok_dir_ = (fs::path(o_.data) / "tokenizer").string();
  shard_config_ = o_.tp > 1 ? tp_local_config(o_.model, o_.tp) : o_.model;
  layout_ = TpLayout{o_.model, mesh_.tensor_index(), o_.tp};
  W_ = mesh_.data_parallel_ranks();
  R_ = mesh_.data_parallel_index();
  leader_ = mesh_.world().rank() == 0;
  PALM_CHECK(micro_ % W_ == 0, "the micro-batch of ", micro_, " sequences does not split over ", W_,
             " data-parallel ranks (--batch-size / --grad-accum must be a multiple of ", W_, ")");
  local_ = micro_ / W_;
  if (mesh_.world().size() > 1)
    std::fprintf(stderr, "palm train: %s, %lld of every %lld sequences\n", mesh_.describe().c_str(), (long long)local_,
                 (long long)micro_);
  if (o_.bf16 && leader_ && be_->name().rfind("cpu", 0) == 0 && !describe_hardware().native_bf16)
    std::fprintf(stderr,
                 "palm train: warning: this CPU has no bf16 instructions (AVX512_BF16 or AMX-BF16): --bf16's GEMMs "
                 "are emulated and can be slower than fp32 (palm bench train --bf16 measures both)\n");
  w_ = std::make_unique<Weights>(*be_, shard_config_);
  g_ = std::make_unique<Gradients>(*be_, shard_config_);
  if (o_.shard != "none" && mesh_.data() > 1) {
    owner_ = assign_owners(shard_config_, mesh_.data());
    for (int r : owner_) owned_.push_back(r == mesh_.data_index());
  }
  opt_ = std::make_unique<Optimizer>(*be_, shard_config_, o_.optimizer, owned_);
  if (o_.tp > 1) {
    std::vector<bool> split;
    for_each_param(shard_config_, [&](const ParamInfo& p) { split.push_back(p.tp_split != TpSplit::kNone); });
    opt_->set_tensor_parallel(&mesh_.tensor_group(), split);
  }
  // Refuse a run that cannot fit before touching its memory (buffers are resident only
  // once written): weights, gradients, optimizer state and activations of this process,
  // times the processes on this host.
  const ActivationPlan plan{local_, o_.seq_len, o_.remat, true, o_.bf16, o_.tp > 1};
  check_run_memory(*be_, double(w_->arena.size()) * 4, double(g_->arena.size()) * 4, double(opt_->state_bytes()),
                   double(Activations::bytes_needed(*be_, shard_config_, plan)), o_.shard == "full" ? mesh_.data() : 1);
  acts_ = std::make_unique<Activations>(*be_, shard_config_, plan);
  // --shard full: weights and gradients resident only on their owners (src/train/fsdp.h)
  if (o_.shard == "full" && !owner_.empty()) {
    fsdp_ = std::make_unique<FullySharded>(*be_, mesh_.data_group(), shard_config_, *w_, *g_, owner_);
    acts_->parallel.sharded = fsdp_.get();
    opt_->set_norm_group(&mesh_.data_group());  // each gradient lives on its owner only
  }
  // data parallelism: each block's gradients are reduced while the blocks below compute
  if (o_.overlap && W_ > 1 && o_.tp == 1 && !fsdp_) {
    overlap_ = std::make_unique<OverlappedReduce>(mesh_.gradient_comm(), shard_config_, *g_);
    acts_->parallel.overlap = overlap_.get();
  }
  if (o_.tp > 1) {
    acts_->parallel.tp = {&mesh_.tensor_group(), mesh_.tensor_index(), o_.tp};
    acts_->parallel.vocab_offset = std::int64_t(mesh_.tensor_index()) * shard_config_.vocab_size;
  }
  metrics_path_ = (fs::path(o_.out) / "metrics.jsonl").string();
  record_path_ = leader_ ? metrics_path_ : "/dev/null";  // only the leader writes the record
  rows_.resize(std::size_t(local_ * (o_.seq_len + 1)));
  tokens_.resize(std::size_t(local_ * o_.seq_len));
  targets_.resize(std::size_t(local_ * o_.seq_len));
}

// ---------------------------------------------------------------- run state

void TrainingRun::restore() {
  // A checkpoint interrupted by kill -9 is a hidden temporary: remove it.
  std::error_code ec;
  if (leader_)
    for (const auto& e : fs::directory_iterator(fs::path(o_.out) / "checkpoints", ec))
      if (e.path().filename().string().rfind(".step-", 0) == 0) fs::remove_all(e.path(), ec);
  mesh_.world().barrier();
  const std::string ckpt = latest_checkpoint(o_.out);
  PALM_CHECK(!ckpt.empty(), o_.out, ": no complete checkpoint to resume from");
  const auto st = nlohmann::json::parse(load_checkpoint(ckpt, *w_, *opt_, &layout_));
  if (fsdp_) fsdp_->release_all();
  PALM_CHECK(st.at("tokenizer_sha256") == loader_.tokenizer_sha256(), ckpt, ": made with the tokenizer ",
             st.at("tokenizer_sha256").get<std::string>(), " but the data uses ", loader_.tokenizer_sha256());
  const std::string manifest_sha = sha256_file((fs::path(o_.data) / "manifest.json").string());
  PALM_CHECK(!st.contains("data_manifest_sha256") || st["data_manifest_sha256"] == manifest_sha, ckpt,
             ": trained on the data whose manifest has sha256 ", st.value("data_manifest_sha256", std::string()),
             ", but ", o_.data, "/manifest.json now has ", manifest_sha,
             " (the data changed: resuming would not continue the same run)");
  // state.json is a file a person may edit: every number checked before it is used
  st_.step = checked_state_int(st, "step", 0, std::int64_t(1) << 50, ckpt);
  st_.skip_samples = checked_state_int(st, "skip_samples", 0, std::int64_t(1) << 50, ckpt);
  st_.tokens_seen = checked_state_int(st, "tokens_seen", 0, std::int64_t(1) << 60, ckpt);
  st_.wall_before = st.value("wall_seconds", 0.0);
  st_.rollbacks = st.value("rollbacks", json::array());
  if (leader_) truncate_metrics(metrics_path_, st_.step);
  if (leader_) std::fprintf(stderr, "resuming %s from step %lld (%s)\n", o_.out.c_str(), (long long)st_.step, ckpt.c_str());
}

void TrainingRun::initialize() {
  PALM_CHECK(list_checkpoints(o_.out).empty(), o_.out, ": already holds checkpoints; use --resume ", o_.out,
             " or another --out");
  mesh_.world().barrier();  // every rank has looked before the leader writes
  if (leader_) fs::create_directories(o_.out);
  if (!o_.init.empty()) {
    const auto init = load_model(process_backend("cpu"), o_.init);  // host data: sliced here, then copied
    PALM_CHECK(init->config.vocab_size == o_.model.vocab_size, "--init ", o_.init, " has vocab ", init->config.vocab_size,
               " but the data's tokenizer has ", o_.model.vocab_size);
    PALM_CHECK(init->config == o_.model, "--init ", o_.init, ": its config differs from the run's (",
               config_differences(init->config, o_.model), ": file vs run)");
    for_each_param(shard_config_, [&](const ParamInfo& p) {
      const ParamInfo& gp = param_list(o_.model)[std::size_t(&p - param_list(shard_config_).data())];
      HostWindow local(*be_, w_->arena.data() + p.offset, std::size_t(p.numel), /*load=*/false);
      tp_extract(init->arena.data() + gp.offset, gp.shape, tp_slice(gp, layout_.rank, layout_.size), local.data());
      local.commit();
    });
  } else {
    const std::vector<bool>* only = fsdp_ ? &owned_ : nullptr;  // --shard full: what this rank owns
    if (o_.tp > 1) init_weights_tp(*be_, *w_, o_.model, layout_.rank, layout_.size, o_.seed, only);  // the shard of the same init
    else init_weights(*be_, *w_, o_.seed, only);
  }
  if (fsdp_) fsdp_->release_all();
  if (leader_) write_text_atomic(metrics_path_, "");
}

// Loss spike at step k: back to the newest checkpoint, skipping the batches around the
// spike. Throws when there is no checkpoint yet or --max-rollbacks is reached.
bool TrainingRun::roll_back(std::int64_t k, double loss) {
  const std::string ckpt = latest_checkpoint(o_.out);
  PALM_CHECK(!ckpt.empty(), "loss spike at step ", k, " (loss ", loss, ") before the first checkpoint: stopping");
  PALM_CHECK(std::int64_t(st_.rollbacks.size()) < o_.max_rollbacks, "loss spike at step ", k, ": already rolled back ",
             st_.rollbacks.size(), " times (--max-rollbacks): stopping");
  const auto st = nlohmann::json::parse(load_checkpoint(ckpt, *w_, *opt_, &layout_));
  if (fsdp_) fsdp_->release_all();
  const std::int64_t back_to = st.at("step");
  const std::int64_t skip_steps = std::max(o_.spike_skip, k - back_to);
  st_.skip_samples = st.value("skip_samples", std::int64_t(0)) + ramp_.samples_before(k + skip_steps) - ramp_.samples_before(k);
  st_.tokens_seen = st.value("tokens_seen", std::int64_t(0));
  json event = {{"event", "rollback"}, {"spike_step", k}, {"loss", std::isfinite(loss) ? loss : -1.0},
                {"median", median(recent_)}, {"to_step", back_to}, {"skipped_batches", skip_steps}};
  // the list keeps every rollback of the run, also those after the checkpoint it
  // returns to: a spike that recurs must reach --max-rollbacks
  st_.rollbacks.push_back(event);
  std::fprintf(stderr, "\nloss spike at step %lld (%.4f, median %.4f): rolled back to step %lld, skipping %lld batches\n",
               (long long)k, loss, median(recent_), (long long)back_to, (long long)skip_steps);
  st_.step = back_to;
  recent_.clear();
  std::fflush(metrics_);
  std::fclose(metrics_);
  if (leader_) truncate_metrics(metrics_path_, st_.step);
  if (!o_.heartbeat_dir.empty()) {
    heartbeat_ = std::make_unique<HeartbeatWriter>(o_.heartbeat_dir, mesh_.world().rank());
    beat(st_.step, 0, "ready");
  }
  metrics_ = std::fopen(record_path_.c_str(), "a");
  event["step"] = st_.step;
  std::fprintf(metrics_, "%s\n", event.dump().c_str());
  return true;
}

// ---------------------------------------------------------------- one step

void TrainingRun::zero_gradients() {
  Gradients& g = *g_;
  if (fsdp_) {  // other owners' gradients are already zero pages: touch only this rank's
    std::size_t i = 0;
    for_each_param(shard_config_, [&](const ParamInfo& p) {
      if (fsdp_->owns(i++)) be_->memset_on_device(g.arena.data() + p.offset, 0, sizeof(float) * std::size_t(p.numel));
    });
  } else {
    be_->memset_on_device(g.arena.data(), 0, sizeof(float) * g.arena.size());
  }
}

// rows_ (local_ windows of seq_len + 1 tokens) -> tokens_ and their next-token targets_
void TrainingRun::fill_batch() {
  for (std::int64_t r = 0; r < local_; ++r)
    for (std::int64_t t = 0; t < o_.seq_len; ++t) {
      tokens_[std::size_t(r * o_.seq_len + t)] = rows_[std::size_t(r * (o_.seq_len + 1) + t)];
      targets_[std::size_t(r * o_.seq_len + t)] = rows_[std::size_t(r * (o_.seq_len + 1) + t + 1)];
    }
}

TrainingRun::StepResult TrainingRun::forward_backward(std::int64_t first, std::int64_t accum) {
  StepResult s;
  for (std::int64_t m = 0; m < accum; ++m) {
    loader_.samples(first + m * micro_ + R_ * local_, local_, rows_.data());
    fill_batch();
    const LossStats l = forward(*be_, *w_, *acts_, tokens_.data(), targets_.data(), float(o_.z_loss));
    // the last micro-batch sums the step's gradients over the replicas
    backward(*be_, mesh_.gradient_comm(), *w_, *acts_, tokens_.data(), *g_, m == accum - 1);
    s.loss += l.loss / double(accum);
    s.z_loss += l.z_loss / double(accum);
  }
  if (W_ > 1) {  // the global batch's mean: the same bits on every rank
    double lz[2] = {s.loss, s.z_loss};
    mesh_.gradient_comm().all_reduce_sum(lz, 2);
    s.loss = lz[0] / W_;
    s.z_loss = lz[1] / W_;
  }
  return s;
}

// Summed gradients -> the mean over the global batch, where the optimizer needs them.
void TrainingRun::finish_gradients(std::int64_t accum) {
  Gradients& g = *g_;
  if (accum * W_ > 1) {  // each micro-batch's gradient is a mean over its local rows
    const float inv = 1.0f / float(accum * W_);
    std::size_t t = 0;
    for_each_param(shard_config_, [&](const ParamInfo& p) {
      if (fsdp_ && !fsdp_->owns(t++)) return;  // not here (and not touched: it stays unresident)
      be_->scale(g.arena.data() + p.offset, inv, p.numel);
    });
  }
  if (fsdp_ && mesh_.pods() > 1) {  // owners swap their summed gradients with their twins
    std::size_t i = 0;
    for_each_param(shard_config_, [&](const ParamInfo& p) {
      if (fsdp_->owns(i++)) mesh_.pod_twins().all_reduce_sum(g.arena.data() + p.offset, p.numel);
    });
  }
}

// ---------------------------------------------------------------- record

std::string TrainingRun::state_json() {
  json s;
  s["step"] = st_.step;
  s["seed"] = o_.seed;
  s["config"] = nlohmann::json::parse(config_to_json(o_.model));
  s["tokenizer_sha256"] = loader_.tokenizer_sha256();
  s["data_manifest_sha256"] = sha256_file((fs::path(o_.data) / "manifest.json").string());
  s["skip_samples"] = st_.skip_samples;
  s["tokens_seen"] = st_.tokens_seen;
  s["wall_seconds"] = st_.wall_before + std::chrono::duration<double>(Clock::now() - t_start_).count();
  s["rollbacks"] = st_.rollbacks;
  const Hardware hw = describe_hardware();
  s["hardware"] = {{"cpu", hw.cpu_model}, {"logical_cpus", hw.logical_cpus}, {"usable_cpus", hw.usable_cpus},
                   {"threads", current_threads()}, {"gpus", 0}, {"backend", be_->name()}, {"host", hw.hostname}};
  return s.dump(2) + "\n";
}

void TrainingRun::checkpoint() {
  std::fflush(metrics_);
  if (!owner_.empty() || o_.tp > 1) {
    // the state is spread over pod 0's ranks: each writes its share (its tensor shard of
    // the weights, the optimizer state it owns)
    const bool writer = mesh_.pod_index() == 0 && (!owner_.empty() || mesh_.data_index() == 0);
    std::vector<bool> weights_owned;  // --shard full: each writer writes the weights it owns
    if (fsdp_)
      for (std::size_t i = 0; i < owner_.size(); ++i) weights_owned.push_back(fsdp_->owns(i));
    save_checkpoint_sharded(mesh_.world(), leader_, writer, owner_.empty() ? 0 : mesh_.data_index(),
                            owner_.empty() ? 1 : mesh_.data(), o_.out, st_.step, *w_, *opt_,
                            leader_ ? state_json() : std::string(), tok_dir_, loader_.tokenizer_sha256(),
                            o_.keep_checkpoints, layout_, weights_owned);
    return;
  }
  // replicas hold the same bits (checked by hash): the leader's copy is the checkpoint
  if (leader_)
    save_checkpoint(o_.out, st_.step, *w_, *opt_, state_json(), tok_dir_, loader_.tokenizer_sha256(), o_.keep_checkpoints);
  mesh_.world().barrier();
}

// Validation loss: every rank evaluates the same windows in batches of its local size.
double TrainingRun::evaluate() {
  const std::int64_t windows = std::min(loader_.val_windows(), o_.eval_batches * micro_);
  if (windows < micro_) return NAN;
  double sum = 0;
  std::int64_t batches = 0;
  for (std::int64_t first = 0; first + local_ <= windows; first += local_, ++batches) {
    for (std::int64_t r = 0; r < local_; ++r) loader_.val_window(first + r, rows_.data() + r * (o_.seq_len + 1));
    fill_batch();
    sum += forward(*be_, *w_, *acts_, tokens_.data(), targets_.data(), 0.0f).loss;
  }
  return sum / double(batches);
}

void TrainingRun::record(std::int64_t k, const StepResult& s, double lr, double gnorm, std::int64_t B, Progress& progress) {
  const double el = std::chrono::duration<double>(Clock::now() - t_loop_).count();
  const double tps = el > 0 ? double(loop_tokens_) / el : 0;
  // tokens/s and MFU: this session's rate since its first step (the dashboard's curves)
  json line = {{"step", k},           {"loss", s.loss},   {"z_loss", s.z_loss},
               {"lr", lr},            {"grad_norm", gnorm}, {"batch", B},
               {"tokens", st_.tokens_seen}, {"tokens_per_s", tps}, {"mfu", peak_ > 0 ? tps * acc_.flops_per_token / peak_ : 0.0}};
  std::fprintf(metrics_, "%s\n", line.dump().c_str());
  if (leader_ && o_.on_step) o_.on_step(line.dump());
  if (leader_)
    progress.update(k - start_step_,
                    str_cat("step ", k, "/", o_.steps, "  loss ", std::round(s.loss * 1e4) / 1e4, "  z ",
                            std::round(s.z_loss * 1e5) / 1e5, "  lr ", lr, "  |g| ", std::round(gnorm * 1e3) / 1e3, "  ",
                            std::lround(tps), " tok/s  MFU ", std::round(1000 * tps * acc_.flops_per_token / peak_) / 10, "%"));
  if (k % o_.eval_every == 0 || k == o_.steps) {
    const double v = evaluate();
    if (fsdp_) fsdp_->release_globals();
    if (std::isfinite(v)) {
      std::fprintf(metrics_, "%s\n", json({{"step", k}, {"val_loss", v}}).dump().c_str());
      std::fprintf(stderr, "%sstep %lld: validation loss %.4f\n", isatty(2) ? "\n" : "", (long long)k, v);
    }
  }
}

void TrainingRun::beat(std::int64_t k, double loss, const char* phase) {
  if (!heartbeat_) return;
  const double el = std::chrono::duration<double>(Clock::now() - t_loop_).count();
  heartbeat_->beat(k, loss, el > 0 ? double(loop_tokens_) / el : 0, phase);
}

// What sharding saves and how much communication the steps exposed.
void TrainingRun::report_end() {
  if (mesh_.world().size() > 1) {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmHWM:", 0) == 0 || line.rfind("VmRSS:", 0) == 0)
        std::fprintf(stderr, "palm train: %s %s memory%s\n", mesh_.describe().c_str(),
                     line[2] == 'H' ? "peak resident" : "resident at the end,", line.substr(6).c_str());
  }
  if (leader_ && mesh_.world().size() > 1 && st_.step > start_step_) {
    const double el = std::chrono::duration<double>(Clock::now() - t_loop_).count();
    const double steps = double(st_.step - start_step_);
    if (overlap_)
      std::fprintf(stderr, "palm train: gradient communication %.4f s per step, of which exposed %.4f s (%.1f%% of a %.4f s step; the rest overlapped the backward)\n",
                   mesh_.gradient_seconds() / steps, overlap_->waited_seconds() / steps,
                   100 * overlap_->waited_seconds() / el, el / steps);
    else
      std::fprintf(stderr, "palm train: gradient communication %.4f s of %.4f s per step (%.1f%%, not overlapped with the backward)\n",
                   mesh_.gradient_seconds() / steps, el / steps, 100 * mesh_.gradient_seconds() / el);
  }
}

// ---------------------------------------------------------------- the loop

std::int64_t TrainingRun::run() {
  if (resume_ && latest_checkpoint(o_.out).empty()) {
    // killed before its first checkpoint: its config.json is all a fresh start needs
    // (initialization and data order are functions of the seed)
    if (leader_)
      std::fprintf(stderr, "%s has no complete checkpoint yet: starting it from step 0 with its stored config\n",
                   o_.out.c_str());
    resume_ = false;
  }
  if (resume_) restore();
  else initialize();
  if (leader_) write_text_atomic((fs::path(o_.out) / "config.json").string(), train_options_to_json(o_));
  mesh_.world().barrier();

  acc_ = account(*be_, o_.model, micro_, o_.seq_len);
  peak_ = quick_gemm_peak(*be_);
  if (!o_.heartbeat_dir.empty()) {
    heartbeat_ = std::make_unique<HeartbeatWriter>(o_.heartbeat_dir, mesh_.world().rank());
    beat(st_.step, 0, "ready");
  }
  metrics_ = std::fopen(record_path_.c_str(), "a");
  PALM_CHECK(metrics_, metrics_path_, ": cannot append");
  t_start_ = Clock::now();
  start_step_ = st_.step;
  Progress progress("train", std::max<std::int64_t>(o_.steps - start_step_, 1), "steps");
  t_loop_ = Clock::now();
  while (st_.step < o_.steps) {
    const std::int64_t k = st_.step + 1;
    const std::int64_t B = ramp_.batch_at(k);
    const std::int64_t accum = B / micro_;
    if (o_.inject_crash == k && mesh_.world().rank() == mesh_.world().size() - 1) ::raise(SIGKILL);
    zero_gradients();
    StepResult s = forward_backward(ramp_.samples_before(k) + st_.skip_samples, accum);
    if (o_.inject_spike == k) s.loss *= 100;  // each time step k is trained: a recurring spike
    const bool spike = !std::isfinite(s.loss) ||
                       (std::int64_t(recent_.size()) >= std::min<std::int64_t>(o_.spike_window, 10) &&
                        s.loss > o_.spike_factor * median(recent_));
    if (spike && roll_back(k, s.loss)) continue;
    finish_gradients(accum);
    const double lr = o_.lr.at(k);
    if (!o_.dump_gradients.empty() && k == start_step_ + 1 && mesh_.pod_index() == 0 && mesh_.data_index() == 0) {
      std::vector<TensorToWrite> grads;  // this tensor rank's gradients, reduced and scaled
      const HostWindow host(*be_, g_->arena.data(), g_->arena.size());
      for_each_param(shard_config_, [&](const ParamInfo& p) { grads.push_back({p.name, p.shape, host.data() + p.offset}); });
      write_safetensors(o_.dump_gradients + "-tp-" + std::to_string(layout_.rank) + "-of-" + std::to_string(layout_.size) +
                            ".safetensors",
                        {}, grads);
    }
    const double gnorm = opt_->step(*w_, *g_, k, lr);
    if (fsdp_) fsdp_->release_globals();
    if (!owner_.empty() && !fsdp_) {  // every tensor from the rank that updated it
      std::size_t i = 0;
      for_each_param(shard_config_, [&](const ParamInfo& p) {
        mesh_.data_group().broadcast(w_->arena.data() + p.offset, p.numel, owner_[i++]);
      });
    }
    st_.step = k;
    st_.tokens_seen += B * o_.seq_len;
    loop_tokens_ += B * o_.seq_len;
    recent_.push_back(s.loss);
    if (std::int64_t(recent_.size()) > o_.spike_window) recent_.erase(recent_.begin());
    record(k, s, lr, gnorm, B, progress);
    beat(k, s.loss, "step");
    if (o_.inject_divergence == k && mesh_.world().rank() == mesh_.world().size() - 1) {
      HostWindow first(*be_, w_->arena.data(), 1);
      first.data()[0] += 1e-3f;
      first.commit();
    }
    if (mesh_.world().size() > 1) {
      // every rank stops at the same step, whichever the signal reached first
      std::int64_t stop_flag = g_stop_signal.load();
      mesh_.world().all_reduce_max(&stop_flag, 1);
      if (stop_flag && !g_stop_signal) g_stop_signal = int(stop_flag);
      if (k % o_.hash_every == 0 || k == o_.steps)
        check_replicas_identical(*be_, fsdp_ ? mesh_.pod_twins() : mesh_.replicas(), *w_, k, fsdp_ ? &owned_ : nullptr);
    }
    if (k % o_.checkpoint_every == 0 || k == o_.steps || g_stop_signal) {
      beat(k, s.loss, "checkpoint");  // a long write is not a hang
      checkpoint();
    }
    if (g_stop_signal) {
      std::fprintf(stderr, "\nsignal %d: stopped after step %lld with a checkpoint; resume with palm train --resume %s\n",
                   int(g_stop_signal), (long long)k, o_.out.c_str());
      break;
    }
  }
  if (resume_ && st_.step == start_step_ && st_.step == o_.steps) {
    // nothing to train: rewrite the newest checkpoint in this launch's layout (resharding)
    checkpoint();
    if (leader_)
      std::fprintf(stderr, "rewrote the checkpoint of step %lld in this layout (tp %d, %d data-parallel ranks, shard %s)\n",
                   (long long)st_.step, o_.tp, W_, o_.shard.c_str());
  }
  std::fclose(metrics_);
  metrics_ = nullptr;
  g_stop_signal = 0;  // handled
  // the steps this launch did (a signal stops it short of the total)
  if (leader_) progress.finish_at(st_.step - start_step_, str_cat("step ", st_.step, ", ", st_.tokens_seen, " tokens"));
  report_end();
  return st_.step;
}

}  // namespace

std::int64_t run_training(TrainOptions o, bool resume) {
  set_threads(o.threads);
  return TrainingRun(std::move(o), resume).run();
}

}  // namespace palm
