// palm.Model's state: the loaded model and tokenizer, the optional bf16/int8 decode
// weights, and a lock (one computation at a time per model: the activations and KV
// caches are per call, but the backend's scratch is shared).
#pragma once
#include <memory>
#include <mutex>
#include <string>

#include "common.h"
#include "model/stored_weights.h"

namespace palm::py_bindings {

struct PythonModel {
  ModelAndTokenizer loaded;
  std::unique_ptr<DecodeWeights> stored;  // null: fp32
  std::string weights_format = "fp32";
  KvFormat kv = KvFormat::kF32;  // generation's KV caches
  std::mutex mu;
  const ModelConfig& config() const { return loaded.weights->config; }
  ~PythonModel() { stored.reset(); }  // the decode copies live in the backend's memory: freed before it
};

}  // namespace palm::py_bindings
