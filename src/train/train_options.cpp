// palm train's options as config.json holds them: written at the start of a run, read
// back by --resume (which continues with exactly these options).
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "train/trainer.h"

namespace palm {

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

}  // namespace palm
