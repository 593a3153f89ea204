// Token shards (docs/formats.md, "Token shards"): a 64-byte header (magic, version, vocab
// size, token count, tokenizer sha256), uint32 little-endian tokens, and a 32-byte
// trailer holding the sha256 of the token bytes. Read memory-mapped; the checksum is
// verified when a shard is opened.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace palm {

inline constexpr char kShardMagic[8] = {'P', 'A', 'L', 'M', 'T', 'O', 'K', 'S'};
inline constexpr std::uint32_t kShardVersion = 1;
inline constexpr std::size_t kShardHeaderBytes = 64;
inline constexpr std::size_t kShardTrailerBytes = 32;

// Streams tokens into `path` through a temporary file; finish() writes the header and
// trailer, fsyncs and renames. Destroyed without finish(): the temporary is removed.
class ShardWriter {
 public:
  ShardWriter(std::string path, std::uint32_t vocab_size, const std::string& tokenizer_sha256_hex);
  ~ShardWriter();
  void append(const std::int32_t* tokens, std::size_t n);
  std::uint64_t tokens() const { return count_; }
  void finish();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  std::uint32_t vocab_;
  std::string sha_hex_;
  std::uint64_t count_ = 0;
  void* hasher_;  // Sha256 of the token bytes
  std::vector<std::uint32_t> buf_;
};

class ShardReader {
 public:
  // Validates the header, the size, the tokenizer hash (when expected_sha256 is given)
  // and the checksum; throws Error naming the file and the problem.
  explicit ShardReader(const std::string& path, const std::string& expected_sha256 = "");
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::uint32_t* tokens() const { return tokens_; }
  std::uint64_t size() const { return count_; }
  std::uint32_t vocab_size() const { return vocab_; }
  const std::string& tokenizer_sha256() const { return sha_hex_; }

 private:
  const unsigned char* map_ = nullptr;
  std::size_t bytes_ = 0;
  const std::uint32_t* tokens_ = nullptr;
  std::uint64_t count_ = 0;
  std::uint32_t vocab_ = 0;
  std::string sha_hex_;
};

}  // namespace palm
