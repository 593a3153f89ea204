#include "tokenizer/trainer.h"

#include <sentencepiece_trainer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "base/progress.h"
#include "base/rng.h"
#include "base/sha256.h"
#include "base/threads.h"
#include "base/utf8.h"
#include "tokenizer/tokenizer.h"

// Exported by libsentencepiece (its common.h) but not declared in the public headers:
// the level below which its LOG(INFO) lines (a full trainer-spec dump and one line per
// EM iteration) are dropped.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}

namespace palm {

namespace {

namespace fs = std::filesystem;

// Feeds the sampled lines to SentencePiece without writing them to disk.
class VectorIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  std::size_t i_ = 0;
};

// Seeded reservoir sampling over every non-empty line of the inputs, in file order:
// the sample depends only on the inputs and the seed, and memory on max_sentences.
std::vector<std::string> sample_lines(const std::vector<std::string>& files, const TokenizerTrainOptions& o,
                                      TokenizerTrainReport& r) {
  std::int64_t total_bytes = 0;
  for (const auto& f : files) total_bytes += static_cast<std::int64_t>(fs::file_size(f));
  Progress progress("reading", total_bytes >> 20, "MiB");
  std::vector<std::string> reservoir;
  reservoir.reserve(static_cast<std::size_t>(std::min<std::int64_t>(o.max_sentences, 1 << 20)));
  std::uint64_t seen = 0;
  std::string line;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    PALM_CHECK(in.good(), f, ": cannot open");
    std::int64_t invalid_here = 0;
    while (std::getline(in, line)) {
      r.bytes += static_cast<std::int64_t>(line.size()) + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      if (find_invalid_utf8(line) != std::string::npos) {
        ++invalid_here;
        continue;
      }
      ++r.lines;
      if (std::int64_t(reservoir.size()) < o.max_sentences) {
        reservoir.push_back(line);
      } else {
        const std::uint64_t j = splitmix64(o.seed ^ splitmix64(seen)) % (seen + 1);
        if (j < std::uint64_t(o.max_sentences)) reservoir[j] = line;
      }
      ++seen;
      if ((seen & 0xFFFF) == 0) progress.update(r.bytes >> 20, str_cat(r.lines, " lines"));
    }
    if (invalid_here) {
      std::fprintf(stderr, "warning: %s: skipped %lld lines that are not valid UTF-8\n", f.c_str(),
                   (long long)invalid_here);
      r.invalid_lines += invalid_here;
    }
  }
  progress.finish(str_cat(r.lines, " lines, ", reservoir.size(), " sampled"));
  r.sampled = static_cast<std::int64_t>(reservoir.size());
  return reservoir;
}

}  // namespace

TokenizerTrainReport train_tokenizer(const TokenizerTrainOptions& o) {
  PALM_CHECK(o.model_type == "unigram" || o.model_type == "bpe", "--model-type must be unigram or bpe, got '",
             o.model_type, "'");
  // 3 specials + "\n" + 256 bytes come first; a vocabulary needs room for real pieces.
  PALM_CHECK(o.vocab_size >= 300 && o.vocab_size <= 1000000, "--vocab-size must be in [300, 1000000], got ",
             o.vocab_size);
  PALM_CHECK(o.max_sentences > 0, "--max-sentences must be positive");
  PALM_CHECK(!o.out.empty(), "--out is required");
  std::error_code ec;
  if (fs::exists(o.out, ec)) {
    PALM_CHECK(fs::is_directory(o.out, ec) && fs::is_empty(o.out, ec), o.out,
               ": already exists; remove it or choose another --out (a tokenizer is never overwritten: "
               "data built with it would silently change meaning)");
  }
  TokenizerTrainReport r;
  const std::vector<std::string> files = expand_inputs(o.inputs);
  r.files = static_cast<std::int64_t>(files.size());
  const std::vector<std::string> lines = sample_lines(files, o, r);
  PALM_CHECK(!lines.empty(), "the inputs hold no non-empty valid UTF-8 lines");

  const int threads = o.threads > 0 ? o.threads : default_threads();
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"add_dummy_prefix", "false"},
      {"character_coverage", std::to_string(o.character_coverage)},
      {"pad_id", std::to_string(kPadId)},
      {"eos_id", std::to_string(kEodId)},
      {"eos_piece", "<eod>"},
      {"unk_id", std::to_string(kUnkId)},
      {"bos_id", "-1"},
      {"user_defined_symbols", "\n"},
      {"max_sentence_length", "16384"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"num_threads", std::to_string(threads)},
  };
  std::fprintf(stderr, "training a %s vocabulary of %lld pieces on %lld lines (%d threads)...\n",
               o.model_type.c_str(), (long long)o.vocab_size, (long long)lines.size(), threads);
  VectorIterator it(lines);
  std::string proto;
  sentencepiece::logging::SetMinLogLevel(o.verbose ? 0 : 1);
  const auto t0 = std::chrono::steady_clock::now();
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  std::fprintf(stderr, "trained in %s\n",
               format_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()).c_str());
  PALM_CHECK(st.ok(), "SentencePiece training failed: ", st.ToString());

  r.sha256 = sha256_hex(proto);
  nlohmann::ordered_json meta;
  meta["vocab_size"] = o.vocab_size;
  meta["special"] = {{"pad", kPadId}, {"eod", kEodId}, {"unk", kUnkId}};
  meta["model_type"] = o.model_type;
  meta["sha256"] = r.sha256;
  meta["settings"] = args;
  meta["settings"].erase("num_threads");
  meta["training"] = {{"files", r.files}, {"bytes", r.bytes}, {"lines", r.lines},
                      {"sampled_lines", r.sampled}, {"invalid_lines_skipped", r.invalid_lines},
                      {"seed", o.seed}, {"max_sentences", o.max_sentences}};

  // Written into a temporary sibling directory, then renamed: DIR appears complete or not at all.
  const fs::path out(o.out);
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::string tmpl = (parent / ("." + out.filename().string() + ".tmp.XXXXXX")).string();
  PALM_CHECK(::mkdtemp(tmpl.data()) != nullptr, o.out, ": cannot create a temporary directory in ",
             parent.string(), ": ", std::strerror(errno));
  try {
    write_text_atomic((fs::path(tmpl) / kTokenizerModelFile).string(), proto);
    write_text_atomic((fs::path(tmpl) / kTokenizerJsonFile).string(), meta.dump(2) + "\n");
    ::chmod(tmpl.c_str(), 0755);
    if (fs::exists(o.out, ec)) fs::remove(o.out, ec);  // the empty directory checked above
    fs::rename(tmpl, o.out);
  } catch (const std::exception& e) {
    fs::remove_all(tmpl, ec);
    fail(str_cat(o.out, ": cannot write the tokenizer: ", e.what()));
  }
  return r;
}

}  // namespace palm
