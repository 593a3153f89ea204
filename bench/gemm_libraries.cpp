// Measures 2-thread fp32 GEMM throughput of the BLAS libraries Debian offers, loaded at
// run time by path (each exports the standard cblas_sgemm), against oneDNN's sgemm, which
// palm links. Not part of the build: bench/gemm_libraries.sh compiles and runs it.
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>

#include <chrono>
#include <cstdio>
#include <vector>

using cblas_sgemm_t = void (*)(int, int, int, int, int, int, float, const float*, int,
                               const float*, int, float, float*, int);

template <typename F>
double gflops(int n, F&& gemm) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    int calls = 0;
    const auto t0 = std::chrono::steady_clock::now();
    double el;
    do {
      gemm();
      ++calls;
      el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (el < 1.0);
    best = std::max(best, 2.0 * n * n * n * calls / el / 1e9);
  }
  return best;
}

int main(int argc, char** argv) {
  for (int n : {1024, 2048, 4096}) {
    std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
    std::printf("n=%d  oneDNN %.1f GFLOP/s", n, gflops(n, [&] {
                  dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
                }));
    for (int i = 1; i + 1 < argc; i += 2) {
      void* h = dlopen(argv[i + 1], RTLD_NOW | RTLD_LOCAL);
      auto f = h ? reinterpret_cast<cblas_sgemm_t>(dlsym(h, "cblas_sgemm")) : nullptr;
      if (!f) {
        std::printf("  %s unavailable", argv[i]);
        continue;
      }
      std::printf("  %s %.1f GFLOP/s", argv[i], gflops(n, [&] {
                    f(101, 111, 111, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
                  }));
    }
    std::printf("\n");
  }
}
