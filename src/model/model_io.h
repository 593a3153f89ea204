// Models as safetensors files: the tensor names of docs/formats.md and the config as
// JSON under __metadata__["palm.config"].
#pragma once
#include <map>
#include <memory>
#include <string>

#include "model/params.h"

namespace palm {

inline constexpr const char* kConfigKey = "palm.config";
inline constexpr const char* kTokenizerShaKey = "palm.tokenizer_sha256";

// extra_metadata is stored beside the config (e.g. the tokenizer's sha256).
void save_model(const std::string& path, const Weights& w,
                const std::map<std::string, std::string>& extra_metadata = {});
// Validates header, names, shapes and the config; throws Error with one line.
std::unique_ptr<Weights> load_model(Backend& be, const std::string& path);  // into be's memory
// The same checks, into existing weights of the file's config (no second copy of the model).
void read_model_into(const std::string& path, Weights& w);
ModelConfig read_model_config(const std::string& path);
std::map<std::string, std::string> read_model_metadata(const std::string& path);

}  // namespace palm
