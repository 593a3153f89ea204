#include "kernels/backend.h"

#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"

namespace palm {

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return make_cpu_backend();
  fail(str_cat("unknown backend '", name, "' (built: cpu)"));
}

std::vector<std::string> backend_names() { return {"cpu"}; }

}  // namespace palm
