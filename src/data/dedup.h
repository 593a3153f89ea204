// Deduplication: exact (128-bit content hash) and near-duplicate (MinHash over word
// 5-gram shingles, LSH with 32 bands of 4 rows for candidates, then the estimated
// Jaccard similarity against a threshold; PaLM removed near-duplicate code files).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace palm {

struct DocHash {
  std::uint64_t a = 0, b = 0;
  bool operator==(const DocHash&) const = default;
};
struct DocHashHasher {
  std::size_t operator()(const DocHash& h) const { return h.a ^ (h.b * 0x9E3779B97F4A7C15ull); }
};
DocHash doc_hash(const std::string& doc);

inline constexpr int kMinHashes = 128, kBands = 32, kRows = 4;
using MinHashSig = std::array<std::uint32_t, kMinHashes>;

// false when the document has no 5-word shingle (too short to compare: exact dedup only)
bool minhash_signature(const std::string& doc, MinHashSig& sig);
double estimated_jaccard(const MinHashSig& x, const MinHashSig& y);

// Documents offered in order; one is a near-duplicate when an earlier kept document's
// estimated Jaccard similarity reaches the threshold. Kept signatures are indexed.
class NearDupIndex {
 public:
  explicit NearDupIndex(double threshold) : threshold_(threshold) {}
  // true: a near-duplicate (not added); false: kept and indexed
  bool check_and_add(const MinHashSig& sig);

 private:
  double threshold_;
  std::vector<MinHashSig> kept_;
  std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> buckets_[kBands];
};

}  // namespace palm
