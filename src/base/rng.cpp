#include "base/rng.h"

#include <cmath>

namespace palm {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t hash_string(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

static double unit_from_bits(std::uint64_t bits) {
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);  // 53 bits
}

double uniform_at(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  return unit_from_bits(splitmix64(splitmix64(seed ^ splitmix64(stream)) + i));
}

double normal_at(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  const double u1 = 1.0 - uniform_at(seed, stream, 2 * i);  // (0, 1]: log is finite
  const double u2 = uniform_at(seed, stream, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

}  // namespace palm
