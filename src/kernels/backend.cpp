#include "kernels/backend.h"

#include <map>
#include <mutex>

#include "base/check.h"
#include "base/hardware.h"
#include "base/memory_info.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef PALM_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace palm {
namespace {

std::mutex default_mu;
std::string chosen_default;  // empty: automatic

std::string names_built() {
  std::string r;
  for (const auto& n : backend_names()) r += (r.empty() ? "" : ", ") + n;
  return r;
}

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& requested) {
  const std::string name = requested.empty() ? default_backend() : requested;
  if (name == "cpu") return make_cpu_backend();
  if (name == "cpu_guarded") return std::make_unique<GuardedCpuBackend>();
#ifdef PALM_WITH_CUDA
  if (name == "cuda") return make_cuda_backend();
#else
  if (name == "cuda")
    fail("backend 'cuda': this palm was built without CUDA (build with make build-cuda, or cmake -DPALM_CUDA=ON)");
#endif
  fail(str_cat("unknown backend '", name, "' (built: ", names_built(), ")"));
}

std::vector<std::string> backend_names() {
#ifdef PALM_WITH_CUDA
  return {"cpu", "cpu_guarded", "cuda"};
#else
  return {"cpu", "cpu_guarded"};
#endif
}

void set_default_backend(const std::string& name) {
  if (name != "cpu" && name != "cpu_guarded") make_backend(name);  // fails here, with its reason, if unusable
  std::lock_guard<std::mutex> lock(default_mu);
  chosen_default = name;
}

std::string default_backend() {
  {
    std::lock_guard<std::mutex> lock(default_mu);
    if (!chosen_default.empty()) return chosen_default;
  }
#ifdef PALM_WITH_CUDA
  if (cuda_device_count() > 0) return "cuda";
#endif
  return "cpu";
}

std::vector<BackendInfo> backend_inventory() {
  std::vector<BackendInfo> all;
  BackendInfo cpu{"cpu", true, "", {}};
  const Hardware hw = describe_hardware();
  cpu.devices.push_back({hw.cpu_model, std::int64_t(available_memory_bytes()),
                         str_cat(hw.usable_cpus, " of ", hw.logical_cpus, " logical CPUs usable; memory: available now")});
  all.push_back(cpu);
  BackendInfo cuda{"cuda", false, "", {}};
#ifdef PALM_WITH_CUDA
  cuda.devices = cuda_devices(&cuda.why_not);
  cuda.usable = !cuda.devices.empty();
#else
  cuda.why_not = "not built (make build-cuda)";
#endif
  all.push_back(cuda);
  return all;
}

Backend& process_backend(const std::string& requested) {
  const std::string name = requested.empty() ? default_backend() : requested;
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Backend>> made;
  std::lock_guard<std::mutex> lock(mu);
  auto& be = made[name];
  if (!be) be = make_backend(name);
  return *be;
}

}  // namespace palm
