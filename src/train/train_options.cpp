// palm train's options: as config.json holds them (written at the start of a run, read
// back by --resume, which continues with exactly these options), and their checks, which
// the trainer and palm launch's preflight share.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

#include "base/check.h"
#include "base/file_util.h"
#include "data/loader.h"
#include "model/tensor_parallel.h"
#include "train/schedule.h"
#include "train/trainer.h"

namespace palm {

namespace fs = std::filesystem;

namespace {
using json = nlohmann::ordered_json;
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

// The options of a launch, checked, with what the data fixes (vocabulary, context).
TrainOptions validated(TrainOptions o, const DataLoader& loader) {
  validate(o.lr);
  if (o.lr.kind == "cosine" && o.lr.total == 0) o.lr.total = o.steps;
  o.model.vocab_size = loader.vocab_size();  // the data fixes the vocabulary: a preset's is replaced
  o.model.max_seq_len = std::max(o.model.max_seq_len, o.seq_len);
  validate(o.model);
  PALM_CHECK(o.shard == "none" || o.shard == "optimizer" || o.shard == "full", "--shard ", o.shard,
             ": expected none, optimizer or full");
  return o;
}

void check_options(const TrainOptions& o) {
  PALM_CHECK(!o.out.empty(), "--out RUN is required");
  PALM_CHECK(o.steps > 0, "--steps must be positive");
  PALM_CHECK(o.seq_len > 0 && o.batch_size > 0 && o.grad_accum > 0, "--seq-len, --batch-size and --grad-accum must be positive");
  PALM_CHECK(o.batch_size % o.grad_accum == 0, "--batch-size ", o.batch_size, " is not divisible by --grad-accum ", o.grad_accum);
  PALM_CHECK(o.checkpoint_every > 0 && o.eval_every > 0, "--checkpoint-every and --eval-every must be positive");
}

void preflight_training(TrainOptions o, int world_size, bool resume) {
  check_options(o);
  const BatchRamp ramp = BatchRamp::parse(o.batch_ramp, o.batch_size);
  const std::int64_t micro = o.batch_size / o.grad_accum;
  for (const auto& [from, b] : ramp.points)
    PALM_CHECK(b % micro == 0, "--batch-ramp batch ", b, " is not a multiple of the micro-batch ", micro);
  const DataLoader loader(o.data, o.seq_len, o.seed);
  o = validated(std::move(o), loader);
  PALM_CHECK(o.tp >= 1 && o.pods >= 1, "--tp and --pods must be >= 1 (got ", o.tp, ", ", o.pods, ")");
  PALM_CHECK(world_size % (o.tp * o.pods) == 0, world_size, " processes do not factor as pods x data x tensor with --pods ",
             o.pods, " --tp ", o.tp, ": N must be a multiple of ", o.tp * o.pods);
  if (o.tp > 1) tp_local_config(o.model, o.tp);  // throws naming the dimension tp does not divide
  const int W = world_size / o.tp;
  PALM_CHECK(micro % W == 0, "the micro-batch of ", micro, " sequences does not split over ", W,
             " data-parallel ranks (--batch-size / --grad-accum must be a multiple of ", W, ")");
  const fs::path cfg = fs::path(o.out) / "config.json";
  if (!resume && fs::exists(cfg)) {
    const TrainOptions stored = train_options_from_json(read_file(cfg.string()), cfg.string());
    const std::string diff = config_differences(stored.model, o.model);
    PALM_CHECK(diff.empty(), o.out, " holds a run of another model (", diff, ": stored vs given); give a new --out");
    PALM_CHECK(fs::equivalent(stored.data, o.data), o.out, " was trained on ", stored.data, ", not ", o.data);
  }
}

}  // namespace palm
