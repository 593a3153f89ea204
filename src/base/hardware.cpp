#include "base/hardware.h"

#include <sched.h>
#include <unistd.h>

#include <fstream>

namespace palm {

Hardware describe_hardware() {
  Hardware h;
  h.cpu_model = "unknown";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) h.cpu_model = line.substr(line.find_first_not_of(" \t", colon + 1));
      break;
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
