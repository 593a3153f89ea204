// palm data build | info
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "common.h"
#include "data/build.h"
#include "data/default_corpus.h"
#include "data/loader.h"
#include "tokenizer/trainer.h"

namespace palm {

namespace {

namespace fs = std::filesystem;

struct BuildCli {
  DataBuildOptions o;
  std::vector<std::string> sources;
  bool use_default = false;
  std::int64_t default_vocab = 8000;
};

void run_build(BuildCli& b) {
  PALM_CHECK(!b.o.out.empty(), "--out is required");
  PALM_CHECK(b.use_default || !b.sources.empty(), "give --source NAME=PATH... (repeatable) or --default");
  PALM_CHECK(!b.use_default || b.sources.empty(), "--default and --source exclude each other");
  std::string tmp_raw;
  if (b.use_default) {
    // the default corpus, dumped where needed, and (without --tokenizer) its own vocabulary
    tmp_raw = (fs::path(b.o.out).parent_path().empty() ? fs::path(".") : fs::path(b.o.out).parent_path()).string() +
              "/." + fs::path(b.o.out).filename().string() + ".raw";
    fs::create_directories(tmp_raw);
    b.o.sources = default_corpus_sources(tmp_raw);
  } else {
    for (const auto& s : b.sources) b.o.sources.push_back(parse_source(s));
  }
  try {
    if (b.o.tokenizer_dir.empty()) {
      PALM_CHECK(b.use_default, "--tokenizer DIR is required (palm tokenizer train makes one)");
      TokenizerTrainOptions t;
      for (const auto& s : b.o.sources) t.inputs.insert(t.inputs.end(), s.paths.begin(), s.paths.end());
      t.vocab_size = b.default_vocab;
      t.max_sentences = 300000;
      t.seed = b.o.seed;
      t.threads = b.o.threads;
      t.out = tmp_raw + "/tokenizer";
      if (!fs::exists(t.out)) train_tokenizer(t);
      b.o.tokenizer_dir = t.out;
    }
    const std::string manifest = build_data(b.o);
    const auto m = nlohmann::json::parse(manifest);
    fmt::print("wrote {}: {} sources, {} documents, {} train tokens\n", b.o.out, m["sources"].size(),
               m["documents"].get<std::int64_t>(), m["train_tokens"].get<std::int64_t>());
  } catch (...) {
    if (!tmp_raw.empty()) fs::remove_all(tmp_raw);
    throw;
  }
  if (!tmp_raw.empty()) fs::remove_all(tmp_raw);
}

struct InfoCli {
  std::string dir;
  double tokens = 0;
  bool json = false;
};

void run_data_info(const InfoCli& o) {
  const std::string path = (fs::path(o.dir) / kManifestFile).string();
  PALM_CHECK(fs::exists(path), o.dir, ": not a data directory (no ", kManifestFile, ")");
  nlohmann::ordered_json m;
  try {
    m = nlohmann::ordered_json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(str_cat(path, ": malformed manifest: ", e.what()));
  }
  // every shard opened as training would: header, checksum, token ids, counts
  const DataLoader verified(o.dir, 1, 0);
  if (o.tokens > 0) {
    for (auto& s : m["sources"]) {
      const double t = s["tokens"].get<double>();
      s["epochs"] = t > 0 ? o.tokens * s["weight"].get<double>() / t : 0.0;
    }
  }
  if (o.json) {
    fmt::print("{}\n", m.dump());
    return;
  }
  fmt::print("data {}  tokenizer {} (vocab {})  seed {}  val fraction {}\n", o.dir,
             m["tokenizer"]["sha256"].get<std::string>().substr(0, 12), m["tokenizer"]["vocab_size"].get<int>(),
             m["seed"].get<std::uint64_t>(), m["val_fraction"].get<double>());
  fmt::print("{:<12} {:>6} {:>6} {:>9} {:>10} {:>12} {:>6} {:>6} {:>9}{}\n", "source", "kind", "weight", "docs", "MB",
             "tokens", "dups", "near", "val tok", o.tokens > 0 ? fmt::format(" {:>9}", "epochs") : "");
  for (const auto& s : m["sources"]) {
    fmt::print("{:<12} {:>6} {:>6.3f} {:>9} {:>10.2f} {:>12} {:>6} {:>6} {:>9}{}\n", s["name"].get<std::string>(),
               s["kind"].get<std::string>(), s["weight"].get<double>(), s["documents"].get<std::int64_t>(),
               s["bytes"].get<double>() / 1e6, s["tokens"].get<std::int64_t>(), s["duplicates"].get<std::int64_t>(),
               s["near_duplicates"].get<std::int64_t>(), s["val_tokens"].get<std::int64_t>(),
               o.tokens > 0 ? fmt::format(" {:>9.3f}", s["epochs"].get<double>()) : "");
  }
  fmt::print("total: {} documents, {} train tokens{}\n", m["documents"].get<std::int64_t>(),
             m["train_tokens"].get<std::int64_t>(),
             o.tokens > 0 ? fmt::format("; epochs implied by {:.3g} training tokens", o.tokens) : "");
}

}  // namespace

void register_data(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Build and inspect training data (mixture, dedup, packed shards)");
  data->require_subcommand(1);
  auto b = std::make_shared<BuildCli>();
  auto* build = data->add_subcommand("build", "Sources -> deduplicated token shards + manifest.json");
  build->add_option("--tokenizer", b->o.tokenizer_dir, "Tokenizer directory (with --default: trained when absent)");
  build->add_option("--source", b->sources,
                    "NAME=PATH_OR_GLOB[:key=value...]; keys: format=text|lines|jsonl, field=, sep=, weight=, "
                    "kind=text|code, ext=py,c, exclude=a,b, min_chars=, max_chars=, near_dedup=on|off");
  build->add_flag("--default", b->use_default, "The default corpus from Debian packages (docs/data.md)");
  build->add_option("--max-mb", b->o.max_mb, "Cap the input at this many MB (split by weight)");
  build->add_option("--out", b->o.out, "Output directory (must not exist)")->required();
  build->add_option("--val-fraction", b->o.val_fraction, "Share of documents held out")->capture_default_str();
  build->add_option("--near-dup-threshold", b->o.near_dup_threshold, "MinHash Jaccard threshold")->capture_default_str();
  build->add_option("--seed", b->o.seed, "Seed (validation split, tokenizer sampling)")->capture_default_str();
  build->add_option("--threads", b->o.threads, "Threads (default: all cores)");
  build->add_option("--default-vocab", b->default_vocab, "Vocabulary size of the tokenizer --default trains")
      ->capture_default_str();
  build->callback([b] { run_build(*b); });

  auto i = std::make_shared<InfoCli>();
  auto* info = data->add_subcommand("info", "The manifest as a table");
  info->add_option("dir", i->dir, "Data directory")->required();
  info->add_option("--tokens", i->tokens, "Training tokens: show the epochs of each source they imply");
  info->add_flag("--json", i->json, "Print the manifest JSON");
  info->callback([i] { run_data_info(*i); });
}

}  // namespace palm
