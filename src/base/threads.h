// Thread count for every parallel loop and the GEMM library (both use OpenMP, so one
// pool serves both and they never oversubscribe the cores).
#pragma once

namespace palm {

inline constexpr int kMaxThreads = 1024;
int default_threads();          // the number of cores this process may use
void set_threads(int threads);  // 0 means default_threads(); throws Error outside [0, kMaxThreads]
int current_threads();
// OpenMP's thread count is a per-thread setting that a new std::thread does not inherit:
// every thread that computes (the serving engine, the gradient-overlap thread) calls this
// first, so it uses the count set_threads chose for the process.
void adopt_process_threads();

}  // namespace palm
