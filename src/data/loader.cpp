#include "data/loader.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "base/rng.h"
#include "data/build.h"

namespace palm {

DataLoader::DataLoader(const std::string& dir, std::int64_t seq_len, std::uint64_t seed,
                       const std::string& expected_sha)
    : dir_(dir), T_(seq_len), seed_(seed) {
  namespace fs = std::filesystem;
  PALM_CHECK(seq_len > 0, "sequence length must be positive");
  const std::string mpath = (fs::path(dir) / kManifestFile).string();
  PALM_CHECK(fs::exists(mpath), dir, ": not a data directory (no ", kManifestFile, "; build one with palm data build)");
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_file(mpath));
    sha_ = m.at("tokenizer").at("sha256").get<std::string>();
    vocab_ = m.at("tokenizer").at("vocab_size").get<std::int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail(str_cat(mpath, ": malformed manifest: ", e.what()));
  }
  PALM_CHECK(expected_sha.empty() || expected_sha == sha_, dir, ": built with the tokenizer sha256 ", sha_,
             ", not the expected ", expected_sha);
  double weight_sum = 0;
  for (const auto& s : m.at("sources")) {
    LoaderSource src;
    src.name = s.at("name").get<std::string>();
    src.weight = s.at("weight").get<double>();
    src.train = std::make_unique<ShardReader>((fs::path(dir) / s.at("shards").at("train")[0].get<std::string>()).string(), sha_);
    src.val = std::make_unique<ShardReader>((fs::path(dir) / s.at("shards").at("val")[0].get<std::string>()).string(), sha_);
    // ShardReader checked every id against its shard's vocabulary when it opened the
    // shard; the model's vocabulary is the manifest's, so the two must agree (a manifest
    // saying 100 over 4000-token shards had the embedding indexed out of bounds)
    for (const ShardReader* r : {src.train.get(), src.val.get()})
      PALM_CHECK(std::int64_t(r->vocab_size()) == vocab_, dir, ": source ", src.name, ": a shard was written for a ",
                 r->vocab_size(), "-token vocabulary but the manifest says ", vocab_, " (a mismatched manifest)");
    PALM_CHECK(std::int64_t(src.train->size()) == s.at("tokens").get<std::int64_t>(), dir, ": source ", src.name,
               ": shard holds ", src.train->size(), " tokens but the manifest says ", s.at("tokens").get<std::int64_t>());
    if (std::int64_t(src.train->size()) >= T_ + 1) {
      usable_.push_back(sources_.size());
      weight_sum += src.weight;
    } else {
      std::fprintf(stderr, "warning: source %s has %llu train tokens, fewer than one window of %lld: not sampled\n",
                   src.name.c_str(), (unsigned long long)src.train->size(), (long long)(T_ + 1));
    }
    sources_.push_back(std::move(src));
  }
  PALM_CHECK(!usable_.empty(), dir, ": no source holds a full window of ", T_ + 1, " tokens");
  double acc = 0;
  for (std::size_t u : usable_) {
    acc += sources_[u].weight / weight_sum;
    cumulative_.push_back(acc);
  }
  cumulative_.back() = 1.0;
}

std::size_t DataLoader::source_of_sample(std::int64_t i) const {
  const double u = uniform_at(seed_, 1, std::uint64_t(i));
  std::size_t k = 0;
  while (k + 1 < cumulative_.size() && u >= cumulative_[k]) ++k;
  return usable_[k];
}

void DataLoader::train_batch(std::int64_t step, int rank, int ranks, std::int64_t B, std::int32_t* out) const {
  PALM_CHECK(ranks > 0 && rank >= 0 && rank < ranks, "rank ", rank, " of ", ranks, " is invalid");
  PALM_CHECK(B > 0 && B % ranks == 0, "global batch ", B, " is not divisible by ", ranks, " data-parallel ranks");
  PALM_CHECK(step >= 0, "step must be non-negative");
  const std::int64_t rows = B / ranks;
  samples(step * B + rank * rows, rows, out);
}

void DataLoader::samples(std::int64_t first, std::int64_t count, std::int32_t* out) const {
  for (std::int64_t j = 0; j < count; ++j) {
    const std::int64_t i = first + j;  // global sample index
    const LoaderSource& s = sources_[source_of_sample(i)];
    const std::uint64_t starts = s.train->size() - std::uint64_t(T_);  // window starts 0..n-T-1
    const std::uint64_t start = splitmix64(splitmix64(seed_ ^ 0x77696e646f77ull) + std::uint64_t(i)) % starts;
    const std::uint32_t* src = s.train->tokens() + start;
    for (std::int64_t t = 0; t <= T_; ++t) out[j * (T_ + 1) + t] = std::int32_t(src[t]);
  }
}

std::int64_t DataLoader::val_windows() const {
  std::int64_t n = 0;
  for (const auto& s : sources_) n += std::int64_t(s.val->size()) / (T_ + 1);
  return n;
}

void DataLoader::val_window(std::int64_t index, std::int32_t* out) const {
  for (const auto& s : sources_) {
    const std::int64_t w = std::int64_t(s.val->size()) / (T_ + 1);
    if (index < w) {
      const std::uint32_t* src = s.val->tokens() + index * (T_ + 1);
      for (std::int64_t t = 0; t <= T_; ++t) out[t] = std::int32_t(src[t]);
      return;
    }
    index -= w;
  }
  fail("validation window index out of range");
}

}  // namespace palm
