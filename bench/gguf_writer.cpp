#include "gguf_writer.h"

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "base/file_util.h"

namespace palm {

namespace {

// GGUF's value types and ggml's tensor types (gguf.h / ggml.h)
enum : std::uint32_t { kU32 = 4, kI32 = 5, kF32v = 6, kString = 8, kArray = 9 };
enum : std::uint32_t { kGgmlF32 = 0, kGgmlQ8_0 = 8, kGgmlBF16 = 30 };
constexpr std::uint64_t kAlign = 32;

class Out {
 public:
  void u32(std::uint32_t v) { raw(&v, 4); }
  void u64(std::uint64_t v) { raw(&v, 8); }
  void f32(float v) { raw(&v, 4); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, std::size_t n) { bytes.append(static_cast<const char*>(p), n); }
  void pad() {
    while (bytes.size() % kAlign) bytes.push_back('\0');
  }
  std::string bytes;
};

struct Tensor {
  std::string name;
  std::vector<std::uint64_t> dims;  // ggml order: dims[0] varies fastest (a row's length)
  const float* data;                // row-major [dims[1]][dims[0]]
  bool norm;                        // norms stay f32 whatever the type
};

std::uint16_t to_bf16(float f) {  // round to nearest even
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return std::uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

// Q8_0: blocks of 32 values, a half-precision scale max|x|/127 and 32 signed bytes.
void append_q8_0(std::string& out, const float* x, std::uint64_t n) {
  for (std::uint64_t b = 0; b < n; b += 32) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    const float d = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
    const std::uint16_t h = _cvtss_sh(d, 0);
    out.append(reinterpret_cast<const char*>(&h), 2);
    for (int i = 0; i < 32; ++i) out.push_back(char(std::int8_t(std::lrintf(x[b + i] * inv))));
  }
}

}  // namespace

GgufType parse_gguf_type(const std::string& name) {
  if (name == "f32") return GgufType::kF32;
  if (name == "bf16") return GgufType::kBF16;
  if (name == "q8_0") return GgufType::kQ8_0;
  fail("GGUF type must be f32, bf16 or q8_0, got '" + name + "'");
}

const char* gguf_type_name(GgufType t) { return t == GgufType::kF32 ? "f32" : t == GgufType::kBF16 ? "bf16" : "q8_0"; }

void write_llama_gguf(const Weights& w, GgufType type, const std::string& path) {
  const ModelConfig& c = w.config;
  const auto D = std::uint64_t(c.d_model), H = std::uint64_t(c.n_heads), K = std::uint64_t(c.head_dim),
             F = std::uint64_t(c.d_ff), V = std::uint64_t(c.vocab_size);
  if (type == GgufType::kQ8_0)
    PALM_CHECK(D % 32 == 0 && F % 32 == 0 && (H * K) % 32 == 0, "q8_0 needs d_model, d_ff and heads x head_dim in multiples of 32");
  const ModelView& v = w.view;
  std::vector<Tensor> tensors = {{"token_embd.weight", {D, V}, v.embed, false}, {"output_norm.weight", {D}, v.final_norm, true}};
  for (std::size_t l = 0; l < v.layers.size(); ++l) {
    const LayerView& L = v.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    // palm's fused input projection, row blocks q | k | v | gate | up, becomes LLaMA's
    // five matrices; palm's single pre-norm serves both of LLaMA's
    const float* in = L.w_in;
    tensors.push_back({p + "attn_norm.weight", {D}, L.norm, true});
    tensors.push_back({p + "attn_q.weight", {D, H * K}, in, false});
    tensors.push_back({p + "attn_k.weight", {D, K}, in + H * K * D, false});
    tensors.push_back({p + "attn_v.weight", {D, K}, in + (H + 1) * K * D, false});
    tensors.push_back({p + "attn_output.weight", {H * K, D}, L.w_o, false});
    tensors.push_back({p + "ffn_norm.weight", {D}, L.norm, true});
    tensors.push_back({p + "ffn_gate.weight", {D, F}, in + (H + 2) * K * D, false});
    tensors.push_back({p + "ffn_up.weight", {D, F}, in + (H + 2) * K * D + F * D, false});
    tensors.push_back({p + "ffn_down.weight", {F, D}, L.w_down, false});
  }

  Out o;
  o.raw("GGUF", 4);
  o.u32(3);
  o.u64(tensors.size());
  std::uint64_t kv = 0;
  Out meta;
  auto key = [&](const std::string& k, std::uint32_t t) {
    meta.str(k);
    meta.u32(t);
    ++kv;
  };
  auto u32 = [&](const std::string& k, std::uint32_t x) { key(k, kU32), meta.u32(x); };
  key("general.architecture", kString), meta.str("llama");
  key("general.name", kString), meta.str("palm-shaped LLaMA (palm bench generate --compare-llama-cpp)");
  u32("general.file_type", type == GgufType::kF32 ? 0 : type == GgufType::kBF16 ? 32 : 7);
  u32("llama.context_length", std::uint32_t(c.max_seq_len));
  u32("llama.embedding_length", std::uint32_t(D));
  u32("llama.block_count", std::uint32_t(c.n_layers));
  u32("llama.feed_forward_length", std::uint32_t(F));
  u32("llama.attention.head_count", std::uint32_t(H));
  u32("llama.attention.head_count_kv", 1);  // multi-query, as PaLM
  u32("llama.rope.dimension_count", std::uint32_t(K));
  u32("llama.vocab_size", std::uint32_t(V));
  key("llama.attention.layer_norm_rms_epsilon", kF32v), meta.f32(float(c.norm_eps));
  key("llama.rope.freq_base", kF32v), meta.f32(float(c.rope_base));
  // a SentencePiece-style vocabulary of placeholders: <unk> <s> </s>, the 256 byte tokens, pieces
  PALM_CHECK(V >= 3 + 256 + 1, "the vocabulary is too small for a llama.cpp vocabulary (", V, ")");
  key("tokenizer.ggml.model", kString), meta.str("llama");
  key("tokenizer.ggml.tokens", kArray), meta.u32(kString), meta.u64(V);
  std::vector<std::int32_t> types(V, 1);
  for (std::uint64_t i = 0; i < V; ++i) {
    char b[16];
    if (i == 0) meta.str("<unk>");
    else if (i == 1) meta.str("<s>");
    else if (i == 2) meta.str("</s>");
    else if (i < 3 + 256) std::snprintf(b, sizeof b, "<0x%02X>", unsigned(i - 3)), meta.str(b);
    else meta.str("\xE2\x96\x81p" + std::to_string(i));
    types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 3 + 256 ? 6 : 1;
  }
  key("tokenizer.ggml.scores", kArray), meta.u32(kF32v), meta.u64(V);
  for (std::uint64_t i = 0; i < V; ++i) meta.f32(-float(i));
  key("tokenizer.ggml.token_type", kArray), meta.u32(kI32), meta.u64(V);
  meta.raw(types.data(), types.size() * 4);
  u32("tokenizer.ggml.bos_token_id", 1);
  u32("tokenizer.ggml.eos_token_id", 2);
  u32("tokenizer.ggml.unknown_token_id", 0);
  o.u64(kv);
  o.raw(meta.bytes.data(), meta.bytes.size());

  // tensor infos, then the data (each tensor at a multiple of 32 bytes)
  std::string data;
  for (const auto& t : tensors) {
    std::uint64_t n = 1;
    for (auto d : t.dims) n *= d;
    const GgufType tt = t.norm ? GgufType::kF32 : type;
    while (data.size() % kAlign) data.push_back('\0');
    o.str(t.name);
    o.u32(std::uint32_t(t.dims.size()));
    for (auto d : t.dims) o.u64(d);
    o.u32(tt == GgufType::kF32 ? kGgmlF32 : tt == GgufType::kBF16 ? kGgmlBF16 : kGgmlQ8_0);
    o.u64(data.size());
    if (tt == GgufType::kF32) {
      data.append(reinterpret_cast<const char*>(t.data), n * 4);
    } else if (tt == GgufType::kBF16) {
      for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint16_t h = to_bf16(t.data[i]);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
    } else {
      append_q8_0(data, t.data, n);
    }
  }
  o.pad();
  o.bytes += data;
  write_text_atomic(path, o.bytes);
}

}  // namespace palm
