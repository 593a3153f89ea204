// A float arena: one 64-byte-aligned allocation carved into named views once, at
// construction. Parameters, gradients and activations each live in one, so a gradient
// all-reduce or a checkpoint is a single contiguous block.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace palm {

// MemAvailable from /proc/meminfo in bytes, or -1 where unknown.
double available_memory_bytes();

class FloatArena {
 public:
  FloatArena() = default;
  explicit FloatArena(std::size_t count);  // zero-filled; throws Error when out of memory
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  std::size_t size() const { return count_; }
  void zero();

 private:
  struct Free {
    std::size_t bytes;  // the mapping's length (value-initialized: 0)
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> data_;
  std::size_t count_ = 0;
};

}  // namespace palm
