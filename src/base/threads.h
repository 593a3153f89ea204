// Thread count for every parallel loop and the GEMM library (both use OpenMP, so one
// pool serves both and they never oversubscribe the cores).
#pragma once

namespace palm {

int default_threads();          // the number of cores this process may use
void set_threads(int threads);  // <= 0 means default_threads()
int current_threads();

}  // namespace palm
