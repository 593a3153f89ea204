// The CUDA backend: the Backend's ops on one NVIDIA GPU. Buffers are device memory
// (host_visible() is false: host code reaches them through HostWindow's copies); every op
// is queued on the backend's own stream, and copies to the host wait for it. GEMMs run on
// cuBLAS (fp32: no TF32; bf16: bf16 operands, fp32 accumulation and output); attention is
// a fused (flash) kernel that keeps only each query row's log-sum-exp; every reduction has
// a fixed order (no atomics), so results are the same run to run on the same GPU.
//
// This header has no CUDA types: the rest of palm includes it without the toolkit's headers.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace palm {

int cuda_device_count();  // 0 where the driver or a device is missing
// The devices, or none with *why_not saying why (no driver, no device, ...).
std::vector<DeviceInfo> cuda_devices(std::string* why_not);
// The backend on device 0 (PALM_CUDA_DEVICE picks another); fails naming why when there is none.
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace palm
