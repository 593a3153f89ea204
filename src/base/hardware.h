// A description of the machine a run used, for training records and model cards.
#pragma once
#include <string>

namespace palm {

struct Hardware {
  std::string cpu_model;  // /proc/cpuinfo "model name", or "unknown"
  int logical_cpus = 0;   // online logical CPUs of the machine
  int usable_cpus = 0;    // those this process may run on
  std::string hostname;
  bool native_bf16 = false;  // bf16 products in hardware (x86: AVX512_BF16 or AMX-BF16)
};

Hardware describe_hardware();

// Whether a /proc/cpuinfo "flags" line (x86) or "Features" line (aarch64) names a bf16
// product instruction set (avx512_bf16, amx_bf16; bf16). Without one, oneDNN emulates bf16 GEMMs: on an Ice Lake server 58 GFLOP/s
// against fp32's 208-255, so a --bf16 training step ran 3.2x slower than fp32
// (docs/PERFORMANCE.md, session 15).
bool flags_have_native_bf16(const std::string& flags_line);

}  // namespace palm
