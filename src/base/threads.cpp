#include "base/threads.h"

#include <omp.h>
#include <sched.h>

#include <atomic>

#include "base/check.h"

namespace palm {

int default_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return omp_get_num_procs();
}

namespace {
// The process's choice, for threads started later (0: none made; they keep OpenMP's default).
std::atomic<int> g_process_threads{0};
}  // namespace

void set_threads(int threads) {
  // OpenMP would try to start them all (100000 crashed libgomp)
  PALM_CHECK(threads >= 0 && threads <= kMaxThreads, "--threads must be in [0, ", kMaxThreads, "] (0: all cores), got ", threads);
  const int n = threads > 0 ? threads : default_threads();
  g_process_threads = n;
  omp_set_num_threads(n);
}

void adopt_process_threads() {
  if (const int n = g_process_threads.load(); n > 0) omp_set_num_threads(n);
}

int current_threads() { return omp_get_max_threads(); }

}  // namespace palm
