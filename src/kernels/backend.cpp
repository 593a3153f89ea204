#include "kernels/backend.h"

#include <map>
#include <mutex>

#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"

namespace palm {

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return make_cpu_backend();
  if (name == "cpu_guarded") return std::make_unique<GuardedCpuBackend>();
  fail(str_cat("unknown backend '", name, "' (built: cpu, cpu_guarded)"));
}

std::vector<std::string> backend_names() { return {"cpu", "cpu_guarded"}; }

Backend& process_backend(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Backend>> made;
  std::lock_guard<std::mutex> lock(mu);
  auto& be = made[name];
  if (!be) be = make_backend(name);
  return *be;
}

}  // namespace palm
