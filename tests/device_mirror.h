// Host vectors mirrored into a Backend's memory for op tests: the ops read and write
// backend buffers (device memory on an accelerator), the test's checks read host vectors.
//   Mirror d(be);
//   be.op(d.in(x), d.out(y)); d.back();   // y now holds what the op wrote
// in() copies a host vector to a new buffer; out() does too (the op may accumulate into
// it) and remembers to copy it back; back() copies every out() buffer to its vector.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/device_buffer.h"

namespace palm::testing_util {

class Mirror {
 public:
  explicit Mirror(Backend& be) : be_(be) {}
  template <typename T>
  T* in(const std::vector<T>& host) {
    auto buf = std::make_shared<DeviceArray<T>>(be_, host.empty() ? 1 : host.size());
    if (!host.empty()) be_.copy_to_device(buf->data(), host.data(), host.size() * sizeof(T));
    keep_.push_back(buf);
    return buf->data();
  }
  template <typename T>
  T* out(std::vector<T>& host) {
    T* d = in(host);
    backs_.push_back([this, d, &host] { be_.copy_to_host(host.data(), d, host.size() * sizeof(T)); });
    return d;
  }
  void back() {
    for (auto& f : backs_) f();
  }

 private:
  Backend& be_;
  std::vector<std::shared_ptr<void>> keep_;
  std::vector<std::function<void()>> backs_;
};

// The backends compiled into this build that can run here: the op and model tests are
// instantiated for these only, so a CUDA build on a machine without a GPU runs (and
// reports) its CPU cases and has no CUDA cases at all, never skipped ones. Where a
// device is present the CUDA cases exist and run (scripts/gpu-check.sh runs them).
inline std::vector<std::string> usable_backend_names() {
  std::vector<std::string> names;
  for (const auto& name : backend_names()) {
    bool usable = true;
    for (const auto& b : backend_inventory())
      if (b.name == name) usable = b.usable;
    if (usable) names.push_back(name);
  }
  return names;
}

}  // namespace palm::testing_util
