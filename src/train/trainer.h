// palm train: PaLM's recipe over a data directory, with checkpoints, bitwise resume,
// signal handling and loss-spike rollback (docs/training.md).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "model/config.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace palm {

struct TrainOptions {
  ModelConfig model;             // vocab_size replaced by the data's tokenizer
  std::string preset;            // informational
  std::string data, out, init;
  std::int64_t steps = 1000, batch_size = 8, seq_len = 256, grad_accum = 1;
  std::uint64_t seed = 0;
  std::int64_t checkpoint_every = 100, keep_checkpoints = 3, eval_every = 100, eval_batches = 8;
  bool remat = false, bf16 = false;
  int threads = 0;
  OptimizerConfig optimizer;
  LrSchedule lr;
  std::string batch_ramp;        // "" = constant batch_size
  double z_loss = 1e-4;
  // loss spikes: a non-finite loss, or one above spike_factor x the median of the last
  // spike_window losses, rolls back to the newest checkpoint and skips spike_skip batches
  double spike_factor = 3.0;
  std::int64_t spike_window = 50, spike_skip = 200, max_rollbacks = 5;
  std::int64_t inject_spike = 0;  // test hook: multiply the loss by 100 whenever this step is trained
  // scale-out (under mpirun; docs/scaling.md): N = pods x data x tp processes
  int tp = 1, pods = 1;
  std::string shard = "none";     // none | optimizer (state on owners) | full (weights, gradients and state on owners)
  std::int64_t hash_every = 100;  // steps between the check that all replicas hold the same bits
  bool overlap = true;             // reduce gradients on a thread during the backward
  std::int64_t inject_divergence = 0;  // test hook: perturb the last rank's weights at this step
  std::string dump_gradients;          // test hook: the first step's gradients, PATH-tp-R-of-T.safetensors
  // this launch only (not in config.json): palm launch's watch (train/heartbeat.h)
  std::string heartbeat_dir;           // each rank's progress, rewritten every step
  std::int64_t inject_crash = 0;       // test hook: the last rank kills itself (SIGKILL) when it starts this step
  // this call only: called on the leader after each step with the step's metrics line
  // (metrics.jsonl's JSON, tokens_per_s and mfu included); the Python package's on_step
  std::function<void(const std::string& metrics_json)> on_step;
};

class DataLoader;
// Checks of the options (train_options.cpp), shared by the trainer and the preflight;
// each throws Error naming the option. check_options: before anything is opened;
// validated: with what the data fixes (vocabulary, context).
void check_options(const TrainOptions& o);
TrainOptions validated(TrainOptions o, const DataLoader& loader);

std::string train_options_to_json(const TrainOptions& o);
TrainOptions train_options_from_json(const std::string& json, const std::string& where);

// Trains from scratch (resume = false; RUN must not hold checkpoints) or continues RUN
// from its newest checkpoint. Returns the last completed step.
std::int64_t run_training(TrainOptions o, bool resume);

// Every check run_training makes before it starts a process group or touches memory, for
// world_size processes: options, data, the mesh (--tp, --pods), the batch split and, for a
// fresh start into an existing RUN, that RUN holds the same model and data (palm launch's
// preflight: a bad input is one clear error before any rank starts). Throws Error.
void preflight_training(TrainOptions o, int world_size, bool resume);
// A stop request (SIGINT/SIGTERM, delivered by base/signals.h's thread): the run finishes
// its step, writes a checkpoint and returns. A request made before the loop starts
// stops it after its first step.
void request_training_stop(int sig);

}  // namespace palm
