// SHA-256 (FIPS 180-4) for content hashes recorded next to token ids (tokenizer, data
// shards, checkpoints). Small and self-contained: base depends on the standard library
// only (DESIGN.md section 3), which rules out OpenSSL here.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace palm {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t bytes);
  std::string hex_digest();  // finishes the hash

 private:
  void block(const unsigned char* p);
  std::uint32_t h_[8];
  unsigned char buf_[64];
  std::size_t buf_len_ = 0;
  std::uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
std::string sha256_file(const std::string& path);

}  // namespace palm
