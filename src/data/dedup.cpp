#include "data/dedup.h"

#include <algorithm>

#include "base/rng.h"

namespace palm {

DocHash doc_hash(const std::string& doc) {
  // two independent 64-bit FNV-1a streams
  std::uint64_t a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
  for (unsigned char c : doc) {
    a = (a ^ c) * 0x100000001b3ull;
    b = (b ^ c) * 0x100000001b3ull + 0x9E37;
  }
  return {splitmix64(a ^ doc.size()), splitmix64(b)};
}

bool minhash_signature(const std::string& doc, MinHashSig& sig) {
  std::vector<std::uint64_t> words;
  std::uint64_t h = 0xcbf29ce484222325ull;
  bool in_word = false;
  for (unsigned char c : doc) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (space) {
      if (in_word) words.push_back(h);
      h = 0xcbf29ce484222325ull;
      in_word = false;
    } else {
      h = (h ^ c) * 0x100000001b3ull;
      in_word = true;
    }
  }
  if (in_word) words.push_back(h);
  if (words.size() < 5) return false;
  sig.fill(0xFFFFFFFFu);
  for (std::size_t i = 0; i + 5 <= words.size(); ++i) {
    std::uint64_t shingle = 0;
    for (int k = 0; k < 5; ++k) shingle = splitmix64(shingle ^ words[i + k]);
    for (int p = 0; p < kMinHashes; ++p) {
      const auto v = static_cast<std::uint32_t>(splitmix64(shingle + 0x9E3779B97F4A7C15ull * (p + 1)) >> 32);
      sig[p] = std::min(sig[p], v);
    }
  }
  return true;
}

double estimated_jaccard(const MinHashSig& x, const MinHashSig& y) {
  int eq = 0;
  for (int p = 0; p < kMinHashes; ++p) eq += x[p] == y[p];
  return double(eq) / kMinHashes;
}

bool NearDupIndex::check_and_add(const MinHashSig& sig) {
  std::uint64_t keys[kBands];
  for (int band = 0; band < kBands; ++band) {
    std::uint64_t k = 0;
    for (int r = 0; r < kRows; ++r) k = splitmix64(k ^ sig[band * kRows + r]);
    keys[band] = k;
    const auto it = buckets_[band].find(k);
    if (it == buckets_[band].end()) continue;
    for (std::uint32_t other : it->second) {
      if (estimated_jaccard(sig, kept_[other]) >= threshold_) return true;
    }
  }
  const auto id = static_cast<std::uint32_t>(kept_.size());
  kept_.push_back(sig);
  for (int band = 0; band < kBands; ++band) buckets_[band][keys[band]].push_back(id);
  return false;
}

}  // namespace palm
