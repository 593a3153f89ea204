// Models as safetensors files: the tensor names of docs/formats.md and the config as
// JSON under __metadata__["palm.config"].
#pragma once
#include <memory>
#include <string>

#include "model/params.h"

namespace palm {

inline constexpr const char* kConfigKey = "palm.config";

void save_model(const std::string& path, const Weights& w);
// Validates header, names, shapes and the config; throws Error with one line.
std::unique_ptr<Weights> load_model(const std::string& path);
ModelConfig read_model_config(const std::string& path);

}  // namespace palm
