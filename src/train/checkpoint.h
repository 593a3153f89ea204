// Checkpoints: RUN/checkpoints/step-N/ holds model.safetensors (the interchange format),
// optimizer.safetensors, state.json and the tokenizer. Written into a temporary
// directory, fsynced and renamed; RUN/latest names the newest complete one (written
// atomically after the rename), so a kill -9 at any moment leaves the previous
// checkpoint valid. The last K are kept.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "model/params.h"
#include "train/optimizer.h"

namespace palm {

std::string checkpoint_dir(const std::string& run, std::int64_t step);
void save_checkpoint(const std::string& run, std::int64_t step, const Weights& w, Optimizer& opt,
                     const std::string& state_json, const std::string& tokenizer_dir,
                     const std::string& tokenizer_sha256, std::int64_t keep);
// A rank's place in a tensor-parallel layout: the global config and its shard (T = 1: the
// whole model).
struct TpLayout {
  ModelConfig global;
  int rank = 0, size = 1;
};

// The same checkpoint written by the ranks of a sharded-optimizer job (a collective over
// `world`): each shard writer (the data-parallel ranks of pod 0) writes the optimizer
// state it owns to optimizer-shard-I-of-N.safetensors, the leader writes the rest and
// optimizer.index.json (tensor name -> file); the directory becomes visible, renamed,
// only once every file is complete. Any layout loads it (load_checkpoint).
// With `weights_owned` (--shard full) each writer also writes the weight tensors it owns
// (model[-tp-R-of-T]-shard-I-of-N.safetensors). Under tensor parallelism (layout.size > 1) every tensor rank of the writers writes its
// shard of the weights (model-tp-R-of-T.safetensors, named in model.index.json; no gather
// through one process) and of the optimizer state; loading reassembles any layout.
void save_checkpoint_sharded(Comm& world, bool leader, bool shard_writer, int shard, int shards, const std::string& run,
                             std::int64_t step, const Weights& w, Optimizer& opt, const std::string& state_json,
                             const std::string& tokenizer_dir, const std::string& tokenizer_sha256, std::int64_t keep,
                             const TpLayout& layout = {}, const std::vector<bool>& weights_owned = {});
// Complete checkpoints of a run, by step.
std::vector<std::int64_t> list_checkpoints(const std::string& run);
// The newest complete checkpoint ("" when none): RUN/latest, or the highest step-N.
std::string latest_checkpoint(const std::string& run);
// Loads weights and the optimizer state of the tensors `opt` owns, from
// optimizer.safetensors or the shard files its index names; returns state.json.
// With `layout`, w and opt are that rank's shard (of any tensor-parallel degree, whatever
// degree wrote the checkpoint).
std::string load_checkpoint(const std::string& dir, Weights& w, Optimizer& opt, const TpLayout* layout = nullptr);
// The global weights of a checkpoint in any layout (palm export).
std::unique_ptr<Weights> load_checkpoint_weights(Backend& be, const std::string& dir);

}  // namespace palm
