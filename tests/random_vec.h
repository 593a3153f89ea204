// Normal random vectors for the kernel tests, reproducible from a seed.
#pragma once
#include <random>
#include <vector>

namespace palm::testing_util {

inline std::vector<float> rand_vec(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace palm::testing_util
