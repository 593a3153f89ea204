// palm tokenizer train | encode | decode | info
#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/progress.h"
#include "base/threads.h"
#include "base/utf8.h"
#include "common.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace palm {

namespace {

struct StreamOptions {
  std::string tokenizer;
  std::string text;
  bool text_given = false;
  bool pieces = false;
  int threads = 0;
};

// Writes the ids of one encoded block: one output line per input line (a line ends
// after its "\n" token), ids or pieces separated by spaces.
void write_tokens(const Tokenizer& tok, const std::vector<std::int32_t>& ids, bool pieces, std::string& out) {
  const std::int32_t nl = tok.newline_id();
  bool first = true;
  for (std::int32_t id : ids) {
    if (!first) out += ' ';
    first = false;
    if (pieces) {
      out += id == nl ? std::string("\\n") : tok.piece(id);
    } else {
      out += std::to_string(id);
    }
    if (id == nl) {
      out += '\n';
      first = true;
    }
  }
}

// Encodes stdin in blocks of whole lines; each block is split at line boundaries into
// one part per thread and encoded in parallel ("\n" is its own token, so no piece crosses
// a line boundary and the result equals encoding the whole text at once).
void run_encode(const StreamOptions& o) {
  set_threads(o.threads);
  const auto tok = Tokenizer::load(o.tokenizer);
  if (o.text_given) {
    std::string out;
    write_tokens(*tok, tok->encode(o.text), o.pieces, out);
    fmt::print("{}\n", out);
    return;
  }
  constexpr std::size_t kBlock = 8 << 20;
  std::string carry, block;
  std::vector<char> buf(kBlock);
  std::int64_t offset = 0, total_bytes = 0;  // byte offset of `block` in the input (for errors)
  const auto t0 = std::chrono::steady_clock::now();
  const int threads = current_threads();
  bool eof = false;
  while (!eof) {
    const std::size_t n = std::fread(buf.data(), 1, buf.size(), stdin);
    eof = n < buf.size();
    block = carry;
    block.append(buf.data(), n);
    std::size_t cut = eof ? block.size() : block.rfind('\n');
    cut = cut == std::string::npos ? (eof ? block.size() : 0) : (eof ? cut : cut + 1);
    carry = block.substr(cut);
    block.resize(cut);
    if (block.empty()) continue;
    // part boundaries just after a newline
    std::vector<std::size_t> bounds{0};
    for (int p = 1; p < threads; ++p) {
      const std::size_t want = block.size() * p / threads;
      const std::size_t nl = block.find('\n', std::max(want, bounds.back()));
      bounds.push_back(nl == std::string::npos ? block.size() : nl + 1);
    }
    bounds.push_back(block.size());
    std::vector<std::vector<std::int32_t>> ids(threads);
    std::vector<std::string> text(threads), errors(threads);
#pragma omp parallel for schedule(static, 1)
    for (int p = 0; p < threads; ++p) {
      try {
        const std::string_view part(block.data() + bounds[p], bounds[p + 1] - bounds[p]);
        const std::size_t bad = find_invalid_utf8(part);
        if (bad != std::string_view::npos) {
          errors[p] = str_cat("stdin: invalid UTF-8 at byte offset ", offset + std::int64_t(bounds[p] + bad));
          continue;
        }
        tok->encode_append(part, ids[p]);
        write_tokens(*tok, ids[p], o.pieces, text[p]);
      } catch (const std::exception& e) {
        errors[p] = e.what();
      }
    }
    for (int p = 0; p < threads; ++p) {
      PALM_CHECK(errors[p].empty(), errors[p]);
      std::fwrite(text[p].data(), 1, text[p].size(), stdout);
    }
    offset += static_cast<std::int64_t>(block.size());
    total_bytes += static_cast<std::int64_t>(block.size());
  }
  std::fputc('\n', stdout);
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "encoded {:.1f} MB in {:.2f} s: {:.1f} MB/s ({} threads)\n", total_bytes / 1e6, el,
             total_bytes / 1e6 / std::max(el, 1e-9), threads);
}

// Streams ids (whitespace separated) to text; a character split over byte tokens is
// held back until it is complete, so every write is valid UTF-8.
void run_decode(const StreamOptions& o) {
  const auto tok = Tokenizer::load(o.tokenizer);
  std::string pending, word;
  std::vector<std::int32_t> one(1);
  std::int64_t index = 0;
  auto emit = [&](bool final) {
    const std::size_t n = final ? pending.size() : utf8_complete_prefix(pending);
    std::fwrite(pending.data(), 1, n, stdout);
    pending.erase(0, n);
  };
  int c;
  auto flush_word = [&] {
    if (word.empty()) return;
    std::size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    PALM_CHECK(used == word.size(), "stdin: '", word, "' (token ", index, ") is not a token id");
    PALM_CHECK(v >= 0 && v < tok->vocab_size(), "stdin: token id ", v, " (token ", index,
               ") is outside the vocabulary [0, ", tok->vocab_size(), ")");
    one[0] = static_cast<std::int32_t>(v);
    pending += tok->decode(one);
    ++index;
    word.clear();
    if (pending.size() > (1 << 16)) emit(false);
  };
  while ((c = std::getchar()) != EOF) {
    if (std::isspace(c)) {
      flush_word();
    } else {
      word += static_cast<char>(c);
    }
  }
  flush_word();
  const bool complete = utf8_complete_prefix(pending) == pending.size();
  emit(true);
  std::fflush(stdout);
  PALM_CHECK(complete, "stdin: the ids end inside a multi-byte character");
}

struct InfoOpts {
  std::string tokenizer;
  bool json = false;
};

void run_tok_info(const InfoOpts& o) {
  const auto tok = Tokenizer::load(o.tokenizer);
  int bytes = 0;
  for (int b = 0; b < 256; ++b) bytes += tok->byte_id(static_cast<unsigned char>(b)) >= 0;
  const std::vector<std::string> samples = {"Hello, world!", "    return x  # 2024\n",
                                            "PaLM 540B: 123.5", "über 東京 🙂"};
  if (o.json) {
    nlohmann::ordered_json j;
    j["vocab_size"] = tok->vocab_size();
    j["special"] = {{"pad", kPadId}, {"eod", kEodId}, {"unk", kUnkId}};
    j["newline_id"] = tok->newline_id();
    j["byte_tokens"] = bytes;
    j["byte_token_ids"] = {tok->byte_id(0), tok->byte_id(255)};
    j["model_type"] = tok->model_type();
    j["sha256"] = tok->sha256();
    nlohmann::ordered_json s = nlohmann::json::array();
    for (const auto& t : samples) s.push_back({{"text", t}, {"ids", tok->encode(t)}, {"pieces", tok->encode_pieces(t)}});
    j["samples"] = s;
    fmt::print("{}\n", j.dump());
    return;
  }
  fmt::print("tokenizer   {} ({})\n", o.tokenizer, tok->model_type());
  fmt::print("vocab_size  {}\n", tok->vocab_size());
  fmt::print("special     <pad> {}  <eod> {}  <unk> {}  \"\\n\" {}\n", kPadId, kEodId, kUnkId, tok->newline_id());
  fmt::print("byte tokens {} (<0x00> = {} ... <0xFF> = {})\n", bytes, tok->byte_id(0), tok->byte_id(255));
  fmt::print("sha256      {}\n", tok->sha256());
  for (const auto& t : samples) {
    std::string shown;
    for (const auto& p : tok->encode_pieces(t)) shown += (shown.empty() ? "" : " | ") + (p == "\n" ? "\\n" : p);
    fmt::print("  {:?} -> {}\n", t, shown);
  }
}

}  // namespace

void register_tokenizer(CLI::App& app) {
  auto* tok = app.add_subcommand("tokenizer", "Train and use PaLM's lossless SentencePiece vocabulary");
  tok->require_subcommand(1);

  auto t = std::make_shared<TokenizerTrainOptions>();
  auto* train = tok->add_subcommand("train", "Train a vocabulary (byte fallback, split digits, whitespace kept)");
  train->add_option("--input", t->inputs, "Files, directories or globs (** for any depth)")->required();
  train->add_option("--vocab-size", t->vocab_size, "Vocabulary size")->capture_default_str();
  train->add_option("--out", t->out, "Output directory (must not exist)")->required();
  train->add_option("--model-type", t->model_type, "unigram or bpe")->capture_default_str();
  train->add_option("--max-sentences", t->max_sentences, "Lines sampled (seeded reservoir) for training")
      ->capture_default_str();
  train->add_option("--seed", t->seed, "Sampling seed")->capture_default_str();
  train->add_option("--threads", t->threads, "Threads (default: all cores)");
  train->add_option("--character-coverage", t->character_coverage,
                    "Share of characters kept as pieces; the rest become byte tokens")->capture_default_str();
  train->add_flag("--verbose", t->verbose, "Show SentencePiece's training log");
  train->callback([t] {
    const TokenizerTrainReport r = train_tokenizer(*t);
    fmt::print("wrote {} (vocab {}, {} files, {:.1f} MB, {} lines, {} sampled, sha256 {})\n", t->out,
               t->vocab_size, r.files, r.bytes / 1e6, r.lines, r.sampled, r.sha256);
  });

  auto e = std::make_shared<StreamOptions>();
  auto* enc = tok->add_subcommand("encode", "stdin (or --text) -> token ids, one output line per input line");
  enc->add_option("--tokenizer", e->tokenizer, "Tokenizer directory")->required();
  enc->add_option("--text", e->text, "Encode this text instead of stdin")->each([e](const std::string&) { e->text_given = true; });
  enc->add_flag("--pieces", e->pieces, "Print pieces instead of ids");
  enc->add_option("--threads", e->threads, "Threads (default: all cores)");
  enc->callback([e] { run_encode(*e); });

  auto d = std::make_shared<StreamOptions>();
  auto* dec = tok->add_subcommand("decode", "stdin token ids (whitespace separated) -> text");
  dec->add_option("--tokenizer", d->tokenizer, "Tokenizer directory")->required();
  dec->callback([d] { run_decode(*d); });

  auto i = std::make_shared<InfoOpts>();
  auto* info = tok->add_subcommand("info", "Vocabulary size, special tokens, byte tokens, sample encodings");
  info->add_option("--tokenizer", i->tokenizer, "Tokenizer directory")->required();
  info->add_flag("--json", i->json, "Print one JSON object");
  info->callback([i] { run_tok_info(*i); });
}

}  // namespace palm
