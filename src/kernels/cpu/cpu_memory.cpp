// The CPU backend's buffers: anonymous mappings (page-aligned, and zero without being
// touched, so memory never written, such as another rank's shard under --shard full,
// never becomes resident), refused up front when larger than the memory available
// rather than killed by the OOM killer halfway through a run.
//
// A freed buffer of kKeepMin bytes or more is kept (up to kKeepMax in all) and handed out
// again, zeroed, for the next allocation of exactly its size: each prefill allocates the
// same ~60 MB of activations for a prompt of a given length, and touching fresh mappings
// cost ~15,700 page faults per 512-token bench-medium prompt (docs/PERFORMANCE.md). Zeroing
// a kept buffer writes it once; a fresh one's pages are zeroed by the kernel one fault at a
// time.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "base/memory_info.h"
#include "base/check.h"
#include "kernels/cpu/cpu_backend.h"

namespace palm {

double CpuBackend::memory_available() const { return available_memory_bytes(); }

namespace {
constexpr std::size_t kKeepMin = std::size_t(1) << 20, kKeepMax = std::size_t(1) << 29;
constexpr std::size_t kHugePage = std::size_t(1) << 21;  // x86-64's transparent huge page
}  // namespace

CpuBackend::~CpuBackend() { release_kept(); }

void CpuBackend::release_kept() {
  std::lock_guard<std::mutex> lock(kept_mu_);
  for (const auto& [bytes, p] : kept_) ::munmap(p, bytes);
  kept_.clear();
  kept_bytes_ = 0;
}

void* CpuBackend::allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* kept = nullptr;
  std::size_t kept_now = 0;
  {
    std::lock_guard<std::mutex> lock(kept_mu_);
    const auto it = kept_.find(bytes);
    if (it != kept_.end()) {
      kept = it->second;
      kept_.erase(it);
      kept_bytes_ -= bytes;
    }
    kept_now = kept_bytes_;
  }
  if (kept) {
    std::memset(kept, 0, bytes);
    return kept;
  }
  if (kept_now > 0) {  // kept buffers count as used: give them back before judging the size
    const double avail = available_memory_bytes();
    if (avail >= 0 && double(bytes) > avail) release_kept();
  }
  return map_zeroed(bytes);
}

void* CpuBackend::map_zeroed(std::size_t bytes) {
  const double avail = available_memory_bytes();
  PALM_CHECK(avail < 0 || double(bytes) <= avail, "out of memory: need ", double(bytes) / (1 << 30), " GiB but only ",
             avail / (1 << 30), " GiB are available");
  // Mappings of kHugePage or more start on a huge-page boundary and ask for transparent huge
  // pages (where the system leaves that to madvise, as Debian's default does): a decode step
  // streams every weight once, and with 4 KB pages each 4 KB of it costs a TLB miss. On a
  // Zen 4 VM a step's products read 1.03-1.06x as fast from huge pages at ~37 GB/s and
  // 1.08-1.13x at ~65 (docs/PERFORMANCE.md, session 24). Where the kernel has no THP, madvise fails and the pages stay 4 KB.
  const std::size_t extra = bytes >= kHugePage ? kHugePage : 0;
  auto* raw = static_cast<char*>(::mmap(nullptr, bytes + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  PALM_CHECK(raw != MAP_FAILED, "out of memory: cannot allocate ", static_cast<double>(bytes) / (1 << 20), " MiB");
  if (extra == 0) return raw;
  // keep [p, p + bytes rounded to pages) of the larger mapping, p aligned; unmap both ends
  const std::size_t page = std::size_t(::sysconf(_SC_PAGESIZE)), kept = (bytes + page - 1) / page * page;
  char* p = reinterpret_cast<char*>((std::uintptr_t(raw) + kHugePage - 1) / kHugePage * kHugePage);
  if (p > raw) ::munmap(raw, std::size_t(p - raw));
  char* end = raw + kept + extra;  // the mapping's end (extra is whole pages)
  if (end > p + kept) ::munmap(p + kept, std::size_t(end - (p + kept)));
  ::madvise(p, kept, MADV_HUGEPAGE);
  return p;
}

void CpuBackend::deallocate(void* p, std::size_t bytes) {
  if (!p) return;
  if (bytes >= kKeepMin) {
    std::lock_guard<std::mutex> lock(kept_mu_);
    if (kept_bytes_ + bytes <= kKeepMax) {
      kept_.emplace(bytes, p);
      kept_bytes_ += bytes;
      return;
    }
  }
  ::munmap(p, bytes);
}

void CpuBackend::copy_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void CpuBackend::copy_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void CpuBackend::copy_on_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void CpuBackend::memset_on_device(void* dst, int byte, std::size_t bytes) {
  if (bytes) std::memset(dst, byte, bytes);
}

void CpuBackend::discard(void* p, std::size_t bytes) {
  auto* begin = static_cast<char*>(p);
  char* end = begin + bytes;
  const std::uintptr_t page = std::uintptr_t(::sysconf(_SC_PAGESIZE));
  const std::uintptr_t lo = (std::uintptr_t(begin) + page - 1) / page * page, hi = std::uintptr_t(end) / page * page;
  if (hi > lo) {
    // the pages wholly inside: returned to the system, zero when touched again
    std::memset(begin, 0, lo - std::uintptr_t(begin));
    std::memset(reinterpret_cast<void*>(hi), 0, std::uintptr_t(end) - hi);
    PALM_CHECK(::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) == 0, "madvise failed");
  } else if (bytes) {
    std::memset(begin, 0, bytes);
  }
}

void CpuBackend::copy_2d_on_device(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch,
                                   std::size_t width, std::size_t rows) {
  for (std::size_t r = 0; r < rows; ++r)
    std::memcpy(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch, width);
}

namespace {
std::size_t page_size() { return std::size_t(::sysconf(_SC_PAGESIZE)); }
// The mapping holding `bytes` (64-byte aligned) right before one PROT_NONE page.
std::size_t guarded_span(std::size_t bytes) {
  const std::size_t page = page_size(), rounded = (bytes + 63) / 64 * 64;
  return (rounded + page - 1) / page * page + page;
}
}  // namespace

void* GuardedCpuBackend::allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  const std::size_t span = guarded_span(bytes), page = page_size();
  auto* base = static_cast<char*>(map_zeroed(span));  // never kept: its last page is PROT_NONE
  PALM_CHECK(::mprotect(base + span - page, page, PROT_NONE) == 0, "mprotect of a guard page failed");
  return base + span - page - (bytes + 63) / 64 * 64;
}

void GuardedCpuBackend::deallocate(void* p, std::size_t bytes) {
  if (!p) return;
  const std::size_t span = guarded_span(bytes), page = page_size();
  char* base = static_cast<char*>(p) + (bytes + 63) / 64 * 64 + page - span;
  ::munmap(base, span);
}

}  // namespace palm
