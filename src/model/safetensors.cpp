#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"

namespace palm {

namespace {

constexpr std::int64_t kMaxHeaderBytes = 100 << 20;

std::int64_t dtype_bytes(DType d) { return d == DType::kF32 ? 4 : 2; }

}  // namespace

std::int64_t TensorRecord::numel() const {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  PALM_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(str_cat(path, ": not a regular file"));
  }
  map_bytes_ = static_cast<std::size_t>(st.st_size);
  if (map_bytes_ < 8) {
    ::close(fd);
    fail(str_cat(path, ": not a safetensors file (", map_bytes_, " bytes, shorter than the 8-byte header length)"));
  }
  void* m = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  PALM_CHECK(m != MAP_FAILED, path, ": mmap failed: ", std::strerror(errno));
  map_ = static_cast<const unsigned char*>(m);
  try {
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map_[i];
    PALM_CHECK(header_len <= std::uint64_t(kMaxHeaderBytes) && header_len <= map_bytes_ - 8,
               path, ": corrupt safetensors: header length ", header_len,
               " does not fit in the file (", map_bytes_, " bytes)");
    data_start_ = 8 + static_cast<std::int64_t>(header_len);
    const std::int64_t data_bytes = static_cast<std::int64_t>(map_bytes_) - data_start_;
    nlohmann::json h;
    try {
      h = nlohmann::json::parse(map_ + 8, map_ + 8 + header_len);
    } catch (const nlohmann::json::exception& e) {
      fail(str_cat(path, ": corrupt safetensors: header is not valid JSON (", e.what(), ")"));
    }
    PALM_CHECK(h.is_object(), path, ": corrupt safetensors: header is not a JSON object");
    for (auto it = h.begin(); it != h.end(); ++it) {
      const std::string& name = it.key();
      const auto& v = it.value();
      if (name == "__metadata__") {
        PALM_CHECK(v.is_object(), path, ": __metadata__ must be an object");
        for (auto m2 = v.begin(); m2 != v.end(); ++m2) {
          PALM_CHECK(m2.value().is_string(), path, ": __metadata__ value '", m2.key(),
                     "' must be a string");
          metadata_[m2.key()] = m2.value().get<std::string>();
        }
        continue;
      }
      const std::string where = str_cat(path, ": tensor '", name, "': ");
      PALM_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") &&
                     v.contains("data_offsets"),
                 where, "needs dtype, shape and data_offsets");
      TensorRecord t;
      t.name = name;
      PALM_CHECK(v["dtype"].is_string(), where, "dtype must be a string");
      const std::string dt = v["dtype"].get<std::string>();
      if (dt == "F32") {
        t.dtype = DType::kF32;
      } else if (dt == "BF16") {
        t.dtype = DType::kBF16;
      } else {
        fail(str_cat(where, "unsupported dtype ", dt, " (readable: F32, BF16)"));
      }
      PALM_CHECK(v["shape"].is_array(), where, "shape must be an array");
      std::int64_t numel = 1;
      for (const auto& d : v["shape"]) {
        PALM_CHECK(d.is_number_unsigned(), where, "shape entries must be non-negative integers");
        const std::int64_t s = d.get<std::int64_t>();
        PALM_CHECK(s <= data_bytes && (s == 0 || numel <= data_bytes / s), where,
                   "shape is larger than the file");
        numel *= s;
        t.shape.push_back(s);
      }
      const auto& off = v["data_offsets"];
      PALM_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                     off[1].is_number_unsigned(),
                 where, "data_offsets must be two non-negative integers");
      t.begin = off[0].get<std::int64_t>();
      t.end = off[1].get<std::int64_t>();
      PALM_CHECK(t.begin <= t.end && t.end <= data_bytes, where, "data_offsets [", t.begin,
                 ", ", t.end, "] fall outside the data section (", data_bytes, " bytes)");
      PALM_CHECK(t.end - t.begin == numel * dtype_bytes(t.dtype), where, "data_offsets span ",
                 t.end - t.begin, " bytes but the shape and dtype need ",
                 numel * dtype_bytes(t.dtype));
      tensors_[name] = t;
    }
    std::vector<const TensorRecord*> order;
    for (const auto& [n, t] : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(),
              [](auto* a, auto* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < order.size(); ++i) {
      PALM_CHECK(order[i]->begin >= order[i - 1]->end, path, ": corrupt safetensors: tensors '",
                 order[i - 1]->name, "' and '", order[i]->name, "' overlap");
    }
  } catch (...) {
    ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
}

void SafetensorsFile::read_f32(const TensorRecord& t, float* out) const {
  const unsigned char* src = map_ + data_start_ + t.begin;
  const std::int64_t n = t.numel();
  if (t.dtype == DType::kF32) {
    std::memcpy(out, src, static_cast<std::size_t>(n) * 4);
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) {  // bf16 is the top half of an f32
    const std::uint32_t bits = std::uint32_t(src[2 * i]) << 16 | std::uint32_t(src[2 * i + 1]) << 24;
    std::memcpy(out + i, &bits, 4);
  }
}

void write_safetensors(const std::string& path, const std::map<std::string, std::string>& metadata,
                       const std::vector<TensorToWrite>& tensors) {
  nlohmann::ordered_json h;
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::int64_t offset = 0;
  for (const auto& t : tensors) {
    std::int64_t n = 1;
    for (auto s : t.shape) n *= s;
    h[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 4 * n}}};
    offset += 4 * n;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(std::uint64_t(header.size()) >> (8 * i));
  write_file_atomic(path, [&](int fd) {
    write_all(fd, len, 8, path);
    write_all(fd, header.data(), header.size(), path);
    for (const auto& t : tensors) {
      std::int64_t n = 1;
      for (auto s : t.shape) n *= s;
      write_all(fd, t.data, static_cast<std::size_t>(n) * 4, path);
    }
  });
}

}  // namespace palm
