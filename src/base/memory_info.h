// How much memory this machine can still give: checked before a run or a buffer is
// allocated, so that a size that cannot fit is a clear error rather than the OOM killer
// halfway through. (Buffers themselves come from the Backend: kernels/device_buffer.h.)
#pragma once

namespace palm {

// MemAvailable from /proc/meminfo in bytes, or -1 where unknown.
double available_memory_bytes();

}  // namespace palm
