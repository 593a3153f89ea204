// The safetensors container (docs/formats.md): u64 little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, raw
// little-endian tensor data. Reading validates everything before any value is used.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace palm {

enum class DType { kF32, kBF16 };

struct TensorRecord {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::int64_t begin = 0, end = 0;  // byte offsets in the data section
  std::int64_t numel() const;
};

// A validated, memory-mapped safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // throws Error with one line
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, TensorRecord>& tensors() const { return tensors_; }
  // Converts the tensor's values to float into out[numel].
  void read_f32(const TensorRecord& t, float* out) const;

 private:
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorRecord> tensors_;
  const unsigned char* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  std::int64_t data_start_ = 0;
};

struct TensorToWrite {
  std::string name;
  std::vector<std::int64_t> shape;
  const float* data;  // F32
};

// Writes F32 tensors atomically (temp file, fsync, rename).
void write_safetensors(const std::string& path, const std::map<std::string, std::string>& metadata,
                       const std::vector<TensorToWrite>& tensors);

}  // namespace palm
