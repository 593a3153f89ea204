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

std::string fold_whitespace(const std::string& doc) {
  std::string out;
  out.reserve(doc.size());
  bool space = false;
  for (char c : doc) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
      space = !out.empty();
    } else {
      if (space) out += ' ';
      space = false;
      out += c;
    }
  }
  return out;
}

bool minhash_signature_code(const std::string& folded, MinHashSig& sig) {
  if (folded.size() < 5) return false;
  // multiply-shift hashes of each shingle: cheap per shingle (there is one per byte)
  static const auto params = [] {
    std::array<std::pair<std::uint64_t, std::uint64_t>, kMinHashes> p{};
    for (int i = 0; i < kMinHashes; ++i) p[i] = {splitmix64(2 * i + 1) | 1, splitmix64(2 * i + 2)};
    return p;
  }();
  sig.fill(0xFFFFFFFFu);
  for (std::size_t i = 0; i + 5 <= folded.size(); ++i) {
    std::uint64_t x = 0;
    for (int k = 0; k < 5; ++k) x = (x << 8) | static_cast<unsigned char>(folded[i + k]);
    x = splitmix64(x);
    for (int p = 0; p < kMinHashes; ++p)
      sig[p] = std::min(sig[p], static_cast<std::uint32_t>((params[p].first * x + params[p].second) >> 32));
  }
  return true;
}

double edit_similarity(const std::string& a, const std::string& b, double min_similarity) {
  const std::size_t n = a.size(), m = b.size(), longest = std::max(n, m);
  if (longest == 0) return 1.0;
  // distances above `band` cannot reach min_similarity: only cells within it matter
  const auto band = static_cast<std::ptrdiff_t>((1.0 - min_similarity) * double(longest) + 1e-9);  // 0.2 * 5 is 0.99999...
  const auto diff = static_cast<std::ptrdiff_t>(n > m ? n - m : m - n);
  if (diff > band) return min_similarity - 1.0;
  const std::ptrdiff_t inf = static_cast<std::ptrdiff_t>(longest) + 1;
  std::vector<std::ptrdiff_t> prev(m + 1, inf), cur(m + 1, inf);
  for (std::size_t j = 0; j <= m && std::ptrdiff_t(j) <= band; ++j) prev[j] = std::ptrdiff_t(j);
  for (std::size_t i = 1; i <= n; ++i) {
    const std::size_t lo = std::ptrdiff_t(i) - band > 1 ? std::size_t(std::ptrdiff_t(i) - band) : 1;
    const std::size_t hi = std::min<std::size_t>(m, i + std::size_t(band));
    // only the band's cells are written; the row before it read only these and prev's band
    cur[lo - 1] = lo == 1 && std::ptrdiff_t(i) <= band ? std::ptrdiff_t(i) : inf;
    std::ptrdiff_t row_min = cur[lo - 1];
    for (std::size_t j = lo; j <= hi; ++j) {
      const std::ptrdiff_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({sub, prev[j] + 1, cur[j - 1] + 1});
      row_min = std::min(row_min, cur[j]);
    }
    if (hi < m) cur[hi + 1] = inf;
    if (row_min > band) return min_similarity - 1.0;  // every path is already too far
    std::swap(prev, cur);
  }
  if (prev[m] > band) return min_similarity - 1.0;
  return 1.0 - double(prev[m]) / double(longest);
}

bool NearDupIndex::similar(const MinHashSig& sig, const std::string& folded, std::uint32_t other) const {
  if (!code_) return estimated_jaccard(sig, kept_[other]) >= threshold_;
  const double jaccard = estimated_jaccard(sig, kept_[other]);
  if (jaccard >= threshold_) return true;  // as for text: most shingles are shared
  // short files: a few small edits break many of their few shingles, so the edit
  // distance decides, unless the shingles say the files are far apart (the costly
  // check skipped)
  const std::string& kept = kept_text_[other];
  return !kept.empty() && folded.size() <= kEditVerifyBytes && jaccard >= kCodeJaccardFloor &&
         edit_similarity(folded, kept, threshold_) >= threshold_;
}

bool NearDupIndex::check_and_add(const MinHashSig& sig, std::string folded) {
  std::uint64_t keys[kBands];
  for (int band = 0; band < kBands; ++band) {
    std::uint64_t k = 0;
    for (int r = 0; r < kRows; ++r) k = splitmix64(k ^ sig[band * kRows + r]);
    keys[band] = k;
    const auto it = buckets_[band].find(k);
    if (it == buckets_[band].end()) continue;
    for (std::uint32_t other : it->second) {
      if (similar(sig, folded, other)) return true;
    }
  }
  const auto id = static_cast<std::uint32_t>(kept_.size());
  kept_.push_back(sig);
  if (code_) kept_text_.push_back(folded.size() <= kEditVerifyBytes ? std::move(folded) : std::string());
  for (int band = 0; band < kBands; ++band) buckets_[band][keys[band]].push_back(id);
  return false;
}

}  // namespace palm
