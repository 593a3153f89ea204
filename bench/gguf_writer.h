// palm's weights as a GGUF file (llama.cpp's format, version 3) of a LLaMA-architecture
// model with the same sizes, so llama.cpp can run the same shapes beside palm
// (`palm bench generate --compare-llama-cpp`). llama.cpp has no PaLM architecture: the
// file is LLaMA-shaped (serial blocks, two RMS norms, one K/V head, SwiGLU, the
// embedding tied to the output), with palm's matrices split into LLaMA's names; the
// weight bytes and FLOPs per token equal palm's, the function computed does not.
#pragma once
#include <string>

#include "model/model.h"

namespace palm {

enum class GgufType { kF32, kBF16, kQ8_0 };

GgufType parse_gguf_type(const std::string& name);  // "f32" | "bf16" | "q8_0"
const char* gguf_type_name(GgufType t);

// Writes `path` (temp file + rename). The vocabulary is placeholder pieces (byte tokens
// and "▁pN"): the benchmark feeds token ids, never text.
void write_llama_gguf(const Weights& w, GgufType type, const std::string& path);

}  // namespace palm
