#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/check.h"
#include "base/file_util.h"
#include "base/sha256.h"

namespace palm {

namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "shards are little-endian");

std::string hex_to_raw(const std::string& hex) {
  std::string raw(32, '\0');
  PALM_CHECK(hex.size() == 64, "tokenizer sha256 must be 64 hex digits");
  for (int i = 0; i < 32; ++i) raw[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return raw;
}

std::string raw_to_hex(const unsigned char* raw) {
  static const char* d = "0123456789abcdef";
  std::string hex;
  for (int i = 0; i < 32; ++i) {
    hex += d[raw[i] >> 4];
    hex += d[raw[i] & 15];
  }
  return hex;
}

}  // namespace

ShardWriter::ShardWriter(std::string path, std::uint32_t vocab_size, const std::string& sha_hex)
    : path_(std::move(path)), vocab_(vocab_size), sha_hex_(sha_hex), hasher_(new Sha256()) {
  hex_to_raw(sha_hex_);  // validates
  tmp_ = path_ + ".tmp.XXXXXX";
  fd_ = ::mkstemp(tmp_.data());
  PALM_CHECK(fd_ >= 0, path_, ": cannot create: ", std::strerror(errno));
  const std::string zeros(kShardHeaderBytes, '\0');  // the header is written by finish()
  write_all(fd_, zeros.data(), zeros.size(), path_);
}

ShardWriter::~ShardWriter() {
  delete static_cast<Sha256*>(hasher_);
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void ShardWriter::append(const std::int32_t* tokens, std::size_t n) {
  buf_.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    PALM_ASSERT(tokens[i] >= 0 && std::uint32_t(tokens[i]) < vocab_);
    buf_[i] = static_cast<std::uint32_t>(tokens[i]);
  }
  static_cast<Sha256*>(hasher_)->update(buf_.data(), n * 4);
  write_all(fd_, buf_.data(), n * 4, path_);
  count_ += n;
}

void ShardWriter::finish() {
  unsigned char header[kShardHeaderBytes] = {};
  std::memcpy(header, kShardMagic, 8);
  std::memcpy(header + 8, &kShardVersion, 4);
  std::memcpy(header + 12, &vocab_, 4);
  std::memcpy(header + 16, &count_, 8);
  const std::string raw = hex_to_raw(sha_hex_);
  std::memcpy(header + 24, raw.data(), 32);
  const std::string sum = hex_to_raw(static_cast<Sha256*>(hasher_)->hex_digest());
  write_all(fd_, sum.data(), sum.size(), path_);
  PALM_CHECK(::pwrite(fd_, header, sizeof header, 0) == ssize_t(sizeof header), path_,
             ": header write failed: ", std::strerror(errno));
  PALM_CHECK(::fsync(fd_) == 0, path_, ": fsync failed: ", std::strerror(errno));
  ::fchmod(fd_, 0644);
  PALM_CHECK(::close(fd_) == 0, path_, ": close failed: ", std::strerror(errno));
  fd_ = -1;
  PALM_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, path_, ": rename failed: ", std::strerror(errno));
}

ShardReader::ShardReader(const std::string& path, const std::string& expected_sha256) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  PALM_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  bytes_ = static_cast<std::size_t>(st.st_size);
  if (bytes_ < kShardHeaderBytes + kShardTrailerBytes) {
    ::close(fd);
    fail(str_cat(path, ": truncated token shard (", bytes_, " bytes)"));
  }
  void* m = ::mmap(nullptr, bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  PALM_CHECK(m != MAP_FAILED, path, ": mmap failed: ", std::strerror(errno));
  map_ = static_cast<const unsigned char*>(m);
  try {
    PALM_CHECK(std::memcmp(map_, kShardMagic, 8) == 0, path, ": not a palm token shard (bad magic)");
    std::uint32_t version;
    std::memcpy(&version, map_ + 8, 4);
    PALM_CHECK(version == kShardVersion, path, ": shard version ", version, " is not ", kShardVersion);
    std::memcpy(&vocab_, map_ + 12, 4);
    std::memcpy(&count_, map_ + 16, 8);
    sha_hex_ = raw_to_hex(map_ + 24);
    PALM_CHECK(count_ == (bytes_ - kShardHeaderBytes - kShardTrailerBytes) / 4 &&
                   (bytes_ - kShardHeaderBytes - kShardTrailerBytes) % 4 == 0,
               path, ": truncated or corrupted token shard (header says ", count_, " tokens, file holds ",
               (bytes_ - kShardHeaderBytes - kShardTrailerBytes) / 4.0, ")");
    PALM_CHECK(expected_sha256.empty() || expected_sha256 == sha_hex_, path,
               ": built with the tokenizer sha256 ", sha_hex_, ", not ", expected_sha256);
    tokens_ = reinterpret_cast<const std::uint32_t*>(map_ + kShardHeaderBytes);
    Sha256 h;
    h.update(tokens_, count_ * 4);
    PALM_CHECK(raw_to_hex(map_ + kShardHeaderBytes + count_ * 4) == h.hex_digest(), path,
               ": checksum mismatch: the token data is corrupted");
    for (std::uint64_t i = 0; i < count_; ++i) {
      PALM_CHECK(tokens_[i] < vocab_, path, ": token ", tokens_[i], " at ", i, " is outside the vocabulary");
    }
  } catch (...) {
    ::munmap(const_cast<unsigned char*>(map_), bytes_);
    map_ = nullptr;
    throw;
  }
}

ShardReader::~ShardReader() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), bytes_);
}

}  // namespace palm
