// PaLM's lossless vocabulary on SentencePiece: whitespace kept exactly, unknown characters
// as UTF-8 byte tokens, every digit its own token (docs/formats.md, "Tokenizer").
// A tokenizer directory holds tokenizer.model (SentencePiece) and tokenizer.json.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/special_tokens.h"

namespace palm {

// Fixed special ids (SentencePiece meta pieces, base/special_tokens.h). Byte tokens
// <0x00>..<0xFF> follow.
inline constexpr const char* kTokenizerModelFile = "tokenizer.model";
inline constexpr const char* kTokenizerJsonFile = "tokenizer.json";

class Tokenizer {
 public:
  // Loads DIR/tokenizer.model and checks it against DIR/tokenizer.json (sha256, ids).
  static std::unique_ptr<Tokenizer> load(const std::string& dir);
  ~Tokenizer();

  // Throws Error naming the byte offset of the first invalid UTF-8 byte.
  std::vector<std::int32_t> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<std::int32_t>& out) const;
  std::vector<std::string> encode_pieces(std::string_view text) const;
  // Exact bytes of the ids; may end inside a multi-byte character (see decode_stream.h).
  std::string decode(const std::vector<std::int32_t>& ids) const;

  std::int32_t vocab_size() const;
  std::string piece(std::int32_t id) const;
  bool is_byte(std::int32_t id) const;
  std::int32_t byte_id(unsigned char b) const;  // the <0xNN> token
  std::int32_t newline_id() const;
  const std::string& sha256() const { return sha256_; }
  const std::string& dir() const { return dir_; }
  const std::string& model_type() const { return model_type_; }

 private:
  Tokenizer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string sha256_, dir_, model_type_;
  std::int32_t byte_ids_[256] = {};
  std::int32_t marker_bytes_[3] = {};
  std::int32_t newline_id_ = -1;  // byte tokens of U+2581 (see encode_append)
};

}  // namespace palm
