// `palm data build`: sources -> deduplicated, tokenized, <eod>-terminated documents in
// per-source train/val token shards, plus manifest.json and a copy of the tokenizer.
// The output depends only on the inputs, the tokenizer and the seed (not on threads).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/sources.h"

namespace palm {

struct DataBuildOptions {
  std::string tokenizer_dir;
  std::vector<SourceSpec> sources;
  std::string out;
  double val_fraction = 0.005;
  std::uint64_t seed = 0;
  int threads = 0;
  double near_dup_threshold = 0.8;
  double max_mb = 0;  // > 0: stop reading each source at its weight's share of this many MB
};

struct SourceBuildStats {
  std::int64_t files = 0, documents = 0, bytes = 0, tokens = 0, duplicates = 0, near_duplicates = 0,
               invalid_utf8 = 0, filtered = 0, malformed = 0, val_documents = 0, val_tokens = 0;
};

// Returns the manifest JSON text it wrote.
std::string build_data(const DataBuildOptions& o);

inline constexpr const char* kManifestFile = "manifest.json";

}  // namespace palm
