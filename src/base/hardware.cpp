#include "base/hardware.h"

#include <sched.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace palm {

bool flags_have_native_bf16(const std::string& flags_line) {
  std::istringstream words(flags_line.substr(flags_line.find(':') == std::string::npos ? 0 : flags_line.find(':') + 1));
  for (std::string w; words >> w;)
    if (w == "avx512_bf16" || w == "amx_bf16" || w == "bf16") return true;
  return false;
}

Hardware describe_hardware() {
  Hardware h;
  h.cpu_model = "unknown";
  std::ifstream in("/proc/cpuinfo");
  bool named = false, flagged = false;
  for (std::string line; !(named && flagged) && std::getline(in, line);) {
    if (!named && line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) h.cpu_model = line.substr(line.find_first_not_of(" \t", colon + 1));
      named = true;
    } else if (!flagged && (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0)) {
      h.native_bf16 = flags_have_native_bf16(line);
      flagged = true;
    }
  }
  h.logical_cpus = int(sysconf(_SC_NPROCESSORS_ONLN));
  cpu_set_t set;
  h.usable_cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : h.logical_cpus;
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) == 0) h.hostname = name;
  return h;
}

}  // namespace palm
