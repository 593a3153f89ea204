#include "base/memory_info.h"

#include <fstream>
#include <string>

namespace palm {

double available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024.0;
  }
  return -1;
}

}  // namespace palm
