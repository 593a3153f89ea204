// Comm on GPU buffers (dist/nccl_comm.cpp): NCCL and MPI staged through the host, on one
// rank (the lent machine has one GPU and no mpirun): every collective on device buffers
// and on host pointers must give the one-rank result bit for bit, through both transports,
// and a split group must work. Cases are registered only where a CUDA device is usable (a
// CUDA build without a GPU has none: nothing is reported skipped); scripts/gpu-check.sh
// runs them on the GPU machine.
#include <gtest/gtest.h>

#include <cstdlib>
#include <numeric>
#include <vector>

#include "dist/comm.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace palm {
namespace {

std::vector<float> ramp(std::int64_t n, float start) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[std::size_t(i)] = start + 0.25f * float(i);
  return v;
}

void check_transport(const char* transport) {
  setenv("PALM_COMM", transport, 1);
  auto be = make_backend("cuda");
  auto comm = make_device_world_comm();
  ASSERT_EQ(comm->size(), 1);
  ASSERT_EQ(comm->rank(), 0);
  const std::int64_t n = 3000;
  const std::vector<float> x = ramp(n, -7.0f);
  float* d = static_cast<float*>(be->allocate(sizeof(float) * n * 2));
  std::vector<float> got(static_cast<std::size_t>(n));
  auto expect_device = [&](const float* p, const std::vector<float>& want, const char* what) {
    be->copy_to_host(got.data(), p, sizeof(float) * want.size());
    for (std::size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << transport << " " << what << " at " << i;
  };
  be->copy_to_device(d, x.data(), sizeof(float) * n);
  comm->all_reduce_sum(d, n);
  expect_device(d, x, "all_reduce_sum");
  comm->all_reduce_max(d, n);
  expect_device(d, x, "all_reduce_max");
  comm->broadcast(d, n, 0);
  expect_device(d, x, "broadcast");
  comm->reduce_sum(d, n, 0);
  expect_device(d, x, "reduce_sum");
  comm->all_gather(d, d + n, n);
  expect_device(d + n, x, "all_gather");
  be->memset_on_device(d + n, 0, sizeof(float) * n);
  comm->reduce_scatter_sum(d, d + n, n);
  expect_device(d + n, x, "reduce_scatter_sum");
  be->memset_on_device(d + n, 0, sizeof(float) * n);
  comm->exchange(d, d + n, n, 0);
  expect_device(d + n, x, "exchange");
  // host pointers (norms, counters) go through the same comm
  std::vector<double> hd{1.5, -2.25};
  comm->all_reduce_sum(hd.data(), 2);
  EXPECT_EQ(hd, (std::vector<double>{1.5, -2.25}));
  std::vector<std::int64_t> hi{7, -3};
  comm->all_reduce_max(hi.data(), 2);
  EXPECT_EQ(hi, (std::vector<std::int64_t>{7, -3}));
  std::vector<float> hf = x;
  comm->all_reduce_sum(hf.data(), n);
  EXPECT_EQ(hf, x);
  comm->barrier();
  auto sub = comm->split(0, 0);
  ASSERT_EQ(sub->size(), 1);
  sub->all_reduce_sum(d, n);
  expect_device(d, x, "split group's all_reduce_sum");
  be->deallocate(d, sizeof(float) * n * 2);
  unsetenv("PALM_COMM");
}

}  // namespace
}  // namespace palm

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (palm::cuda_device_count() > 0) {
    for (const char* t : {"nccl", "mpi"}) {
      testing::RegisterTest("DeviceComm", (std::string("OneRankBitExact/") + t).c_str(), nullptr, nullptr, __FILE__,
                            __LINE__, [t]() -> testing::Test* {
                              struct Case : testing::Test {
                                const char* transport;
                                explicit Case(const char* tr) : transport(tr) {}
                                void TestBody() override { palm::check_transport(transport); }
                              };
                              return new Case(t);
                            });
    }
  }
  return RUN_ALL_TESTS();
}
