#include "base/threads.h"

#include <omp.h>
#include <sched.h>

namespace palm {

int default_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return omp_get_num_procs();
}

void set_threads(int threads) { omp_set_num_threads(threads > 0 ? threads : default_threads()); }

int current_threads() { return omp_get_max_threads(); }

}  // namespace palm
