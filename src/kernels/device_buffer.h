// Arrays in a Backend's memory, owned: allocated (zero-filled) and freed through the
// backend that made them (which must outlive them). The ops take the raw pointer.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

#include "kernels/backend.h"

namespace palm {

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(Backend& be, std::size_t count)
      : be_(&be), data_(static_cast<T*>(be.allocate(count * sizeof(T)))), count_(count) {}
  ~DeviceArray() { release(); }
  DeviceArray(DeviceArray&& o) noexcept { *this = std::move(o); }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      release();
      be_ = std::exchange(o.be_, nullptr);
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }
  Backend& backend() const { return *be_; }  // the one whose memory this is
  void zero() {
    if (be_) be_->memset_on_device(data_, 0, count_ * sizeof(T));
  }

 private:
  void release() {
    if (be_) be_->deallocate(data_, count_ * sizeof(T));
    be_ = nullptr;
    data_ = nullptr;
    count_ = 0;
  }
  Backend* be_ = nullptr;
  T* data_ = nullptr;
  std::size_t count_ = 0;
};
using DeviceFloats = DeviceArray<float>;

// Host code's explicit window onto backend memory (saving, loading, reporting, sampling
// inputs): the memory itself where the backend's is host-visible (the CPU's: no copy, no
// second resident copy of a model), else a host copy. Reading: construct, read data().
// Writing: construct with `load` false, fill data(), then commit().
class HostWindow {
 public:
  HostWindow(Backend& be, const float* device, std::size_t count, bool load = true)
      : be_(be), device_(const_cast<float*>(device)), count_(count) {
    if (be.host_visible()) {
      host_ = device_;
    } else {
      copy_.resize(count);
      if (load) be.copy_to_host(copy_.data(), device, count * sizeof(float));
      host_ = copy_.data();
    }
  }
  float* data() { return host_; }
  const float* data() const { return host_; }
  std::size_t size() const { return count_; }
  // Host-side writes reach the backend's memory.
  void commit() {
    if (!copy_.empty()) be_.copy_to_device(device_, copy_.data(), count_ * sizeof(float));
  }

 private:
  Backend& be_;
  float* device_;
  std::size_t count_;
  float* host_ = nullptr;
  std::vector<float> copy_;
};

}  // namespace palm
