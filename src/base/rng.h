// Counter-based random numbers: value i of stream s depends only on (seed, s, i), so
// initialization is deterministic whatever the thread count or visiting order.
#pragma once
#include <cstdint>
#include <string_view>

namespace palm {

std::uint64_t splitmix64(std::uint64_t x);
std::uint64_t hash_string(std::string_view s);  // FNV-1a, stable across platforms

// Standard normal number i of the stream (seed, stream), by Box-Muller on two uniforms.
double normal_at(std::uint64_t seed, std::uint64_t stream, std::uint64_t i);
// Uniform in [0, 1) number i of the stream (seed, stream).
double uniform_at(std::uint64_t seed, std::uint64_t stream, std::uint64_t i);

}  // namespace palm
