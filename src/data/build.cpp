#include "data/build.h"

#include <omp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "base/progress.h"
#include "base/rng.h"
#include "base/threads.h"
#include "data/dedup.h"
#include "data/shard.h"
#include "tokenizer/tokenizer.h"

namespace palm {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t kBatchBytes = 16 << 20;  // documents handled per parallel batch

struct Doc {
  std::string text;
  DocHash hash;
  MinHashSig sig;
  std::string folded;  // code: whitespace folded, for the edit-distance check
  bool has_sig = false;
  bool keep = false, val = false;
  std::vector<std::int32_t> tokens;
};

std::int64_t input_bytes(const SourceSpec& s) {
  std::int64_t n = 0;
  for (const auto& f : expand_inputs(s.paths)) n += static_cast<std::int64_t>(fs::file_size(f));
  return n;
}

// One source: batches of documents; hashing, signatures and tokenization in parallel,
// every keep/drop/split decision sequential in document order (hence thread-invariant).
SourceBuildStats build_source(const SourceSpec& s, const Tokenizer& tok, const DataBuildOptions& o,
                              std::unordered_set<DocHash, DocHashHasher>& seen, const fs::path& dir,
                              double byte_budget, Progress& progress, std::int64_t& progress_bytes) {
  SourceBuildStats st;
  fs::create_directories(dir / s.name);
  ShardWriter train((dir / s.name / "train.bin").string(), std::uint32_t(tok.vocab_size()), tok.sha256());
  ShardWriter val((dir / s.name / "val.bin").string(), std::uint32_t(tok.vocab_size()), tok.sha256());
  const bool code = s.kind == "code";
  NearDupIndex near(o.near_dup_threshold, code);
  std::vector<Doc> batch;
  std::size_t batch_bytes = 0;
  std::int64_t read_bytes = 0;

  auto flush = [&] {
    const std::int64_t n = std::int64_t(batch.size());
#pragma omp parallel for schedule(dynamic, 16)
    for (std::int64_t i = 0; i < n; ++i) {
      batch[i].hash = doc_hash(batch[i].text);
      if (s.near_dedup && code) {
        batch[i].folded = fold_whitespace(batch[i].text);
        batch[i].has_sig = minhash_signature_code(batch[i].folded, batch[i].sig);
      } else if (s.near_dedup) {
        batch[i].has_sig = minhash_signature(batch[i].text, batch[i].sig);
      }
    }
    for (auto& d : batch) {
      if (!seen.insert(d.hash).second) {
        ++st.duplicates;
        continue;
      }
      if (d.has_sig && near.check_and_add(d.sig, std::move(d.folded))) {
        ++st.near_duplicates;
        continue;
      }
      d.keep = true;
      d.val = uniform_at(o.seed, 0x7661'6c69'64ull /* "valid" */, d.hash.a ^ d.hash.b) < o.val_fraction;
    }
    std::vector<std::string> errors(batch.size());
#pragma omp parallel for schedule(dynamic, 16)
    for (std::int64_t i = 0; i < n; ++i) {
      if (!batch[i].keep) continue;
      try {
        tok.encode_append(batch[i].text, batch[i].tokens);
        batch[i].tokens.push_back(kEodId);  // PaLM: every document ends with <eod>
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      PALM_CHECK(errors[i].empty(), "source ", s.name, ": ", errors[i]);
      const Doc& d = batch[i];
      if (!d.keep) continue;
      ShardWriter& w = d.val ? val : train;
      w.append(d.tokens.data(), d.tokens.size());
      ++st.documents;
      if (d.val) {
        ++st.val_documents;
        st.val_tokens += std::int64_t(d.tokens.size());
      }
    }
    progress_bytes += std::int64_t(batch_bytes);
    progress.update(progress_bytes >> 20, str_cat(s.name, ": ", st.documents, " docs"));
    batch.clear();
    batch_bytes = 0;
  };

  SourceReadStats rs;
  read_documents(s, rs, [&](std::string&& text) {
    read_bytes += std::int64_t(text.size());
    batch_bytes += text.size();
    batch.push_back(Doc{std::move(text)});
    if (batch_bytes >= kBatchBytes) flush();
    return byte_budget <= 0 || double(read_bytes) < byte_budget;
  });
  flush();
  st.files = rs.files;
  st.bytes = rs.bytes;
  st.invalid_utf8 = rs.invalid_utf8;
  st.filtered = rs.filtered;
  st.malformed = rs.malformed;
  st.tokens = std::int64_t(train.tokens());
  PALM_CHECK(st.documents > 0, "source ", s.name, ": no documents left (", rs.files, " files, ", st.duplicates,
             " duplicates, ", rs.invalid_utf8, " invalid UTF-8, ", rs.filtered, " outside min/max_chars)");
  train.finish();
  val.finish();
  return st;
}

}  // namespace

std::string build_data(const DataBuildOptions& o) {
  PALM_CHECK(!o.sources.empty(), "give at least one --source (or --default)");
  PALM_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "--val-fraction must be in [0, 1)");
  PALM_CHECK(o.near_dup_threshold > 0 && o.near_dup_threshold <= 1, "--near-dup-threshold must be in (0, 1]");
  for (std::size_t i = 0; i < o.sources.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      PALM_CHECK(o.sources[i].name != o.sources[j].name, "source name '", o.sources[i].name, "' is used twice");
  std::error_code ec;
  if (fs::exists(o.out, ec)) {
    PALM_CHECK(fs::is_directory(o.out, ec) && fs::is_empty(o.out, ec), o.out,
               ": already exists; remove it or choose another --out");
  }
  const auto tok = Tokenizer::load(o.tokenizer_dir);
  set_threads(o.threads);

  // Everything is built in a temporary sibling and renamed at the end: an interrupted
  // build never leaves a directory that looks complete.
  const fs::path out(o.out);
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::string tmpl = (parent / ("." + out.filename().string() + ".tmp.XXXXXX")).string();
  PALM_CHECK(::mkdtemp(tmpl.data()) != nullptr, o.out, ": cannot create a temporary directory: ", std::strerror(errno));
  const fs::path tmp(tmpl);
  try {
    fs::create_directories(tmp / "tokenizer");
    fs::copy_file(fs::path(o.tokenizer_dir) / kTokenizerModelFile, tmp / "tokenizer" / kTokenizerModelFile);
    fs::copy_file(fs::path(o.tokenizer_dir) / kTokenizerJsonFile, tmp / "tokenizer" / kTokenizerJsonFile);

    double weight_sum = 0;
    std::int64_t total_in = 0;
    for (const auto& s : o.sources) {
      weight_sum += s.weight;
      total_in += input_bytes(s);
    }
    if (o.max_mb > 0) total_in = std::min<std::int64_t>(total_in, std::int64_t(o.max_mb * 1e6));
    Progress progress("data build", total_in >> 20, "MiB");
    std::int64_t progress_bytes = 0;
    std::unordered_set<DocHash, DocHashHasher> seen;  // exact dedup within and across sources
    nlohmann::ordered_json sources = nlohmann::json::array();
    std::int64_t total_tokens = 0, total_docs = 0;
    for (const auto& s : o.sources) {
      const double budget = o.max_mb > 0 ? o.max_mb * 1e6 * s.weight / weight_sum : 0;
      const SourceBuildStats st = build_source(s, *tok, o, seen, tmp, budget, progress, progress_bytes);
      nlohmann::ordered_json j;
      j["name"] = s.name;
      j["kind"] = s.kind;
      j["format"] = s.format;
      if (s.origin.empty()) {
        j["paths"] = s.paths;
      } else {
        j["origin"] = s.origin;
      }
      j["weight"] = s.weight / weight_sum;
      j["files"] = st.files;
      j["documents"] = st.documents;
      j["bytes"] = st.bytes;
      j["tokens"] = st.tokens;
      j["duplicates"] = st.duplicates;
      j["near_duplicates"] = st.near_duplicates;
      j["near_dedup"] = s.near_dedup;
      j["invalid_utf8_documents"] = st.invalid_utf8;
      j["filtered_documents"] = st.filtered;
      j["malformed_lines"] = st.malformed;
      j["val_documents"] = st.val_documents;
      j["val_tokens"] = st.val_tokens;
      j["shards"] = {{"train", {s.name + "/train.bin"}}, {"val", {s.name + "/val.bin"}}};
      sources.push_back(j);
      total_tokens += st.tokens;
      total_docs += st.documents;
    }
    progress.finish(str_cat(total_docs, " documents, ", total_tokens, " train tokens"));
    nlohmann::ordered_json m;
    m["format"] = "palm-data";
    m["version"] = 1;
    m["seed"] = o.seed;
    m["val_fraction"] = o.val_fraction;
    m["near_dup_threshold"] = o.near_dup_threshold;
    m["max_mb"] = o.max_mb;
    m["tokenizer"] = {{"sha256", tok->sha256()}, {"vocab_size", tok->vocab_size()}, {"dir", "tokenizer"}};
    m["sources"] = sources;
    m["train_tokens"] = total_tokens;
    m["documents"] = total_docs;
    const std::string text = m.dump(2) + "\n";
    write_text_atomic((tmp / kManifestFile).string(), text);
    for (const auto& e : fs::recursive_directory_iterator(tmp)) {
      ::chmod(e.path().c_str(), e.is_directory() ? 0755 : 0644);
    }
    ::chmod(tmp.c_str(), 0755);
    if (fs::exists(out, ec)) fs::remove(out, ec);  // the empty directory checked above
    fs::rename(tmp, out);
    return text;
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace palm
