// Deduplication: exact (128-bit content hash) and near-duplicate (MinHash signatures,
// LSH with 32 bands of 4 rows for candidates, each candidate then verified).
// Text: word 5-gram shingles, verified by the estimated Jaccard similarity.
// Code (PaLM de-duplicated code by edit distance): character 5-grams of the text with
// whitespace runs folded; a candidate is a near-duplicate when the estimated Jaccard
// reaches the threshold or, for short files (up to kEditVerifyBytes) where a few edits
// break most of the few shingles, when the normalized edit distance does.
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

// Code: whitespace runs folded to one space, ends trimmed (what the code signature and
// the edit distance see).
std::string fold_whitespace(const std::string& doc);
// Over character 5-grams of the folded text; false when it is shorter than 5 bytes.
bool minhash_signature_code(const std::string& folded, MinHashSig& sig);
// 1 - Levenshtein(a, b) / max(|a|, |b|) when that reaches min_similarity; otherwise some
// value below min_similarity (a banded computation: O(max(|a|, |b|) * band)).
double edit_similarity(const std::string& a, const std::string& b, double min_similarity);

inline constexpr std::size_t kEditVerifyBytes = 4096;
// Below this estimated character-5-gram Jaccard two code files are not edit-compared
// (planted near-copies at edit similarity >= 0.8 measured >= 0.45; tests/test_data.cpp).
inline constexpr double kCodeJaccardFloor = 0.3;

// Documents offered in order; one is a near-duplicate when an earlier kept document that
// shares an LSH band with it passes verification. Kept signatures are indexed.
class NearDupIndex {
 public:
  explicit NearDupIndex(double threshold, bool code = false) : threshold_(threshold), code_(code) {}
  // true: a near-duplicate (not added); false: kept and indexed. Code documents pass
  // their folded text (fold_whitespace) for the edit-distance check.
  bool check_and_add(const MinHashSig& sig, std::string folded = {});

 private:
  bool similar(const MinHashSig& sig, const std::string& folded, std::uint32_t other) const;
  double threshold_;
  bool code_;
  std::vector<MinHashSig> kept_;
  std::vector<std::string> kept_text_;  // code: folded texts up to kEditVerifyBytes
  std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> buckets_[kBands];
};

}  // namespace palm
