#include <sys/mman.h>
#include "base/arena.h"

#include <cstdlib>
#include <cstring>

#include <fstream>
#include <string>

#include "base/check.h"

namespace palm {

// MemAvailable from /proc/meminfo in bytes, or -1 where unknown.
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

void FloatArena::Free::operator()(float* p) const {
  if (p) ::munmap(p, bytes);
}

FloatArena::FloatArena(std::size_t count) : count_(count) {
  const std::size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
  // Refuse up front rather than be killed by the OOM killer halfway through.
  const double avail = available_memory_bytes();
  PALM_CHECK(avail < 0 || double(bytes) <= avail, "out of memory: need ",
             double(bytes) / (1 << 30), " GiB but only ", avail / (1 << 30),
             " GiB are available");
  // An anonymous mapping: page-aligned, and zero without being touched, so memory that is
  // never written (another rank's shard under --shard full) never becomes resident.
  void* p = nullptr;
  if (bytes) {
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    PALM_CHECK(p != MAP_FAILED, "out of memory: cannot allocate ", static_cast<double>(bytes) / (1 << 20), " MiB");
  }
  data_ = std::unique_ptr<float, Free>(static_cast<float*>(p), Free{bytes});
}

void FloatArena::zero() {
  if (count_) std::memset(data_.get(), 0, count_ * sizeof(float));
}

}  // namespace palm
