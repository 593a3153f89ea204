#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "base/sha256.h"
#include "base/utf8.h"

namespace palm {

// SentencePiece maps spaces to U+2581 ("▁") inside pieces and back to spaces when
// decoding, so a literal U+2581 in the text would come back as a space. encode_append
// therefore cuts the text at every U+2581 and writes that character as its three byte
// tokens, which decode to exactly those bytes: the round trip stays lossless.
static constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::vector<std::string> id_bytes;  // id -> the exact bytes it decodes to
};

Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string model_path = (fs::path(dir) / kTokenizerModelFile).string();
  const std::string json_path = (fs::path(dir) / kTokenizerJsonFile).string();
  PALM_CHECK(fs::is_directory(dir), dir, ": not a tokenizer directory (expected ", kTokenizerModelFile,
             " and ", kTokenizerJsonFile, " inside)");
  const std::string model_bytes = read_file(model_path);
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(json_path));
  } catch (const nlohmann::json::exception& e) {
    fail(str_cat(json_path, ": not valid JSON: ", e.what()));
  }
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->impl_ = std::make_unique<Impl>();
  t->dir_ = dir;
  t->sha256_ = sha256_hex(model_bytes);
  PALM_CHECK(meta.contains("sha256") && meta["sha256"] == t->sha256_, json_path,
             ": sha256 does not match ", kTokenizerModelFile, " (the model file was changed or corrupted)");
  t->model_type_ = meta.value("model_type", std::string("unknown"));
  const auto st = t->impl_->sp.LoadFromSerializedProto(model_bytes);
  PALM_CHECK(st.ok(), model_path, ": not a SentencePiece model: ", st.ToString());
  auto& sp = t->impl_->sp;
  PALM_CHECK(sp.pad_id() == kPadId && sp.eos_id() == kEodId && sp.unk_id() == kUnkId &&
                 sp.IdToPiece(kEodId) == "<eod>",
             model_path, ": special ids differ from palm's (pad 0, <eod> 1, unk 2)");
  const int n = sp.GetPieceSize();
  t->impl_->id_bytes.resize(n);
  std::fill(std::begin(t->byte_ids_), std::end(t->byte_ids_), -1);
  for (int id = 0; id < n; ++id) {
    const std::string piece = sp.IdToPiece(id);
    std::string bytes;
    if (sp.IsByte(id)) {  // "<0xNN>"
      const int b = std::stoi(piece.substr(3, 2), nullptr, 16);
      t->byte_ids_[b] = id;
      bytes.assign(1, static_cast<char>(b));
    } else if (sp.IsControl(id) || sp.IsUnknown(id)) {
      bytes.clear();  // <pad>, <eod>, <unk> carry no text
    } else {
      for (std::size_t i = 0; i < piece.size();) {
        if (piece.compare(i, kSpaceMarker.size(), kSpaceMarker) == 0) {
          bytes += ' ';
          i += kSpaceMarker.size();
        } else {
          bytes += piece[i++];
        }
      }
    }
    t->impl_->id_bytes[id] = std::move(bytes);
  }
  for (int b = 0; b < 256; ++b) {
    PALM_CHECK(t->byte_ids_[b] >= 0, model_path, ": byte token <0x", std::hex, b,
               "> is missing (palm tokenizers are trained with byte fallback)");
  }
  t->newline_id_ = sp.PieceToId("\n");
  PALM_CHECK(t->newline_id_ > kUnkId && !sp.IsUnknown(t->newline_id_), model_path,
             ": lacks the \"\\n\" piece (palm tokenizers keep newlines as one token)");
  for (int i = 0; i < 3; ++i) t->marker_bytes_[i] = t->byte_ids_[static_cast<unsigned char>(kSpaceMarker[i])];
  return t;
}

void Tokenizer::encode_append(std::string_view text, std::vector<std::int32_t>& out) const {
  const std::size_t bad = find_invalid_utf8(text);
  PALM_CHECK(bad == std::string_view::npos, "invalid UTF-8 at byte offset ", bad, " (byte 0x",
             std::hex, int(static_cast<unsigned char>(text[bad])), ")");
  std::vector<int> ids;
  const std::int32_t nl = newline_id_;
  // One library call per line: "\n" is a token of its own, so this equals encoding the
  // whole text, and SentencePiece is ~2x faster on lines than on megabyte blocks.
  auto encode_part = [&](std::string_view part) {
    while (!part.empty()) {
      const std::size_t eol = part.find('\n');
      const std::string_view line = part.substr(0, eol);
      if (!line.empty()) {
        const auto st = impl_->sp.Encode(line, &ids);
        PALM_CHECK(st.ok(), "SentencePiece encode failed: ", st.ToString());
        out.insert(out.end(), ids.begin(), ids.end());
      }
      if (eol == std::string_view::npos) break;
      out.push_back(nl);
      part.remove_prefix(eol + 1);
    }
  };
  while (!text.empty()) {
    const std::size_t m = text.find(kSpaceMarker);
    encode_part(text.substr(0, m));
    if (m == std::string_view::npos) break;
    out.insert(out.end(), marker_bytes_, marker_bytes_ + 3);
    text.remove_prefix(m + kSpaceMarker.size());
  }
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> out;
  encode_append(text, out);
  return out;
}

std::vector<std::string> Tokenizer::encode_pieces(std::string_view text) const {
  std::vector<std::string> out;
  for (std::int32_t id : encode(text)) out.push_back(impl_->sp.IdToPiece(id));
  return out;
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string out;
  for (std::int32_t id : ids) {
    PALM_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary [0, ",
               vocab_size(), ")");
    out += impl_->id_bytes[id];
  }
  return out;
}

std::int32_t Tokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }
std::string Tokenizer::piece(std::int32_t id) const { return impl_->sp.IdToPiece(id); }
bool Tokenizer::is_byte(std::int32_t id) const { return impl_->sp.IsByte(id); }
std::int32_t Tokenizer::byte_id(unsigned char b) const { return byte_ids_[b]; }
std::int32_t Tokenizer::newline_id() const { return newline_id_; }

}  // namespace palm
