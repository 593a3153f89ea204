// The step-addressable loader. Sequences are windows of T+1 consecutive tokens of one
// source's packed token stream (documents joined by <eod>, no padding). Global sample i
// picks its source by weight and a uniformly random window start, both from
// hash(seed, i): the batch at step k is samples [k*B, (k+1)*B), and data-parallel rank
// r of R takes rows [r*B/R, (r+1)*B/R). So every batch is a pure function of
// (seed, k, r, R, B, T): resuming needs no loader state and the global batch does not
// depend on R. Shards are memory-mapped, never loaded into RAM.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/shard.h"

namespace palm {

struct LoaderSource {
  std::string name;
  double weight = 0;  // normalized over usable sources
  std::unique_ptr<ShardReader> train, val;
};

class DataLoader {
 public:
  // expected_tokenizer_sha256 empty: whatever the manifest says (shards are checked
  // against the manifest either way).
  DataLoader(const std::string& dir, std::int64_t seq_len, std::uint64_t seed,
             const std::string& expected_tokenizer_sha256 = "");

  // out: [B/R, T+1] tokens (inputs are columns 0..T-1, targets 1..T).
  void train_batch(std::int64_t step, int rank, int ranks, std::int64_t global_batch, std::int32_t* out) const;
  // Global samples [first, first + count) as rows of T+1 tokens (what train_batch uses;
  // a batch-size ramp addresses samples directly).
  void samples(std::int64_t first, std::int64_t count, std::int32_t* out) const;
  // Validation: consecutive non-overlapping windows of all val shards in source order.
  std::int64_t val_windows() const;
  void val_window(std::int64_t index, std::int32_t* out) const;

  const std::vector<LoaderSource>& sources() const { return sources_; }
  std::int64_t vocab_size() const { return vocab_; }
  const std::string& tokenizer_sha256() const { return sha_; }
  const std::string& dir() const { return dir_; }
  // the source sample i is drawn from (for mixture tests and accounting)
  std::size_t source_of_sample(std::int64_t i) const;

 private:
  std::string dir_, sha_;
  std::int64_t T_;
  std::uint64_t seed_;
  std::int64_t vocab_ = 0;
  std::vector<LoaderSource> sources_;
  std::vector<double> cumulative_;  // over sources with at least one window
  std::vector<std::size_t> usable_;
};

}  // namespace palm
