#include <algorithm>

#include "base/check.h"
#include "dist/comm.h"

namespace palm {
namespace {

class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, std::int64_t) override {}
  void all_reduce_sum(double*, std::int64_t) override {}
  void all_reduce_max(std::int64_t*, std::int64_t) override {}
  void all_reduce_max(float*, std::int64_t) override {}
  void all_gather(const float* in, float* out, std::int64_t n) override {
    if (in != out) std::copy(in, in + n, out);
  }
  void reduce_scatter_sum(const float* in, float* out, std::int64_t n) override {
    if (in != out) std::copy(in, in + n, out);
  }
  void broadcast(float*, std::int64_t, int root) override { PALM_ASSERT(root == 0); }
  void reduce_sum(float*, std::int64_t, int root) override { PALM_ASSERT(root == 0); }
  void exchange(const float* send, float* recv, std::int64_t n, int peer) override {
    PALM_ASSERT(peer == 0);
    if (send != recv) std::copy(send, send + n, recv);
  }
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { return std::make_unique<LocalComm>(); }
};

}  // namespace

std::unique_ptr<Comm> make_local_comm() { return std::make_unique<LocalComm>(); }

#ifndef PALM_WITH_NCCL
std::unique_ptr<Comm> make_device_world_comm() {
  fail("GPU ranks need NCCL or CUDA-staged MPI: this palm was built without CUDA (make build-cuda)");
}
#endif

}  // namespace palm
