// Checkpoints: RUN/checkpoints/step-N/ holds model.safetensors (the interchange format),
// optimizer.safetensors, state.json and the tokenizer. Written into a temporary
// directory, fsynced and renamed; RUN/latest names the newest complete one (written
// atomically after the rename), so a kill -9 at any moment leaves the previous
// checkpoint valid. The last K are kept.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/params.h"
#include "train/optimizer.h"

namespace palm {

std::string checkpoint_dir(const std::string& run, std::int64_t step);
void save_checkpoint(const std::string& run, std::int64_t step, const Weights& w, Optimizer& opt,
                     const std::string& state_json, const std::string& tokenizer_dir,
                     const std::string& tokenizer_sha256, std::int64_t keep);
// Complete checkpoints of a run, by step.
std::vector<std::int64_t> list_checkpoints(const std::string& run);
// The newest complete checkpoint ("" when none): RUN/latest, or the highest step-N.
std::string latest_checkpoint(const std::string& run);
// Loads weights and optimizer state (validated against w's config); returns state.json.
std::string load_checkpoint(const std::string& dir, Weights& w, Optimizer& opt);

}  // namespace palm
