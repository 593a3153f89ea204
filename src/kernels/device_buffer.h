// Floats in a Backend's memory, owned: allocated (zero-filled) and freed through the
// backend that made them (which must outlive them). The ops take the raw pointer.
#pragma once
#include <cstddef>
#include <utility>

#include "kernels/backend.h"

namespace palm {

class DeviceFloats {
 public:
  DeviceFloats() = default;
  DeviceFloats(Backend& be, std::size_t count)
      : be_(&be), data_(static_cast<float*>(be.allocate(count * sizeof(float)))), count_(count) {}
  ~DeviceFloats() { release(); }
  DeviceFloats(DeviceFloats&& o) noexcept { *this = std::move(o); }
  DeviceFloats& operator=(DeviceFloats&& o) noexcept {
    if (this != &o) {
      release();
      be_ = std::exchange(o.be_, nullptr);
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  std::size_t size() const { return count_; }
  void zero() {
    if (be_) be_->memset_on_device(data_, 0, count_ * sizeof(float));
  }

 private:
  void release() {
    if (be_) be_->deallocate(data_, count_ * sizeof(float));
    be_ = nullptr;
    data_ = nullptr;
    count_ = 0;
  }
  Backend* be_ = nullptr;
  float* data_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace palm
