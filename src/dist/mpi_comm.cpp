// Comm on MPI (OpenMPI from Debian): the job's processes as started by mpirun. MPI is
// called by one thread at a time (MPI_THREAD_SERIALIZED: the trainer's gradient thread
// reduces while the main thread computes, never both at once); errors abort the whole job,
// so a dead rank ends every rank instead of leaving them waiting.
#define OMPI_SKIP_MPICXX 1  // the C API only (the deprecated C++ bindings need another library)
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "base/check.h"
#include "dist/comm.h"

namespace palm {
namespace {

constexpr std::int64_t kChunk = std::int64_t(1) << 28;  // MPI counts are int: large buffers go in pieces
// All-reduces go in pieces of 16 MiB: OpenMPI 4.1 (vader, 2 ranks) reduces 16 MiB at
// 5.9 GB/s but 64 MiB at 0.34 GB/s (its algorithm changes; `palm bench comm`).
constexpr std::int64_t kReduceChunk = std::int64_t(1) << 22;

struct MpiRuntime {
  MpiRuntime() {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    PALM_CHECK(provided >= MPI_THREAD_SERIALIZED, "MPI does not provide MPI_THREAD_SERIALIZED");
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
};

void ensure_mpi() { static MpiRuntime runtime; }

class MpiComm final : public Comm {
 public:
  explicit MpiComm(MPI_Comm c, bool owned) : c_(c), owned_(owned) {
    MPI_Comm_rank(c_, &rank_);
    MPI_Comm_size(c_, &size_);
  }
  ~MpiComm() override {
    if (owned_) MPI_Comm_free(&c_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(float* d, std::int64_t n) override {
    for (std::int64_t a = 0; a < n; a += kReduceChunk)
      MPI_Allreduce(MPI_IN_PLACE, d + a, int(std::min(kReduceChunk, n - a)), MPI_FLOAT, MPI_SUM, c_);
  }
  void all_reduce_sum(double* d, std::int64_t n) override { pieces(n, [&](std::int64_t a, int k) { MPI_Allreduce(MPI_IN_PLACE, d + a, k, MPI_DOUBLE, MPI_SUM, c_); }); }
  void all_reduce_max(std::int64_t* d, std::int64_t n) override { pieces(n, [&](std::int64_t a, int k) { MPI_Allreduce(MPI_IN_PLACE, d + a, k, MPI_INT64_T, MPI_MAX, c_); }); }
  void all_reduce_max(float* d, std::int64_t n) override { pieces(n, [&](std::int64_t a, int k) { MPI_Allreduce(MPI_IN_PLACE, d + a, k, MPI_FLOAT, MPI_MAX, c_); }); }
  void all_gather(const float* in, float* out, std::int64_t n) override {
    PALM_CHECK(n <= kChunk, "all_gather of ", n, " floats per rank: above the ", kChunk, " supported");
    MPI_Allgather(in, int(n), MPI_FLOAT, out, int(n), MPI_FLOAT, c_);
  }
  void reduce_scatter_sum(const float* in, float* out, std::int64_t n) override {
    PALM_CHECK(n <= kChunk, "reduce_scatter of ", n, " floats per rank: above the ", kChunk, " supported");
    MPI_Reduce_scatter_block(in, out, int(n), MPI_FLOAT, MPI_SUM, c_);
  }
  void broadcast(float* d, std::int64_t n, int root) override { pieces(n, [&](std::int64_t a, int k) { MPI_Bcast(d + a, k, MPI_FLOAT, root, c_); }); }
  void reduce_sum(float* d, std::int64_t n, int root) override {
    for (std::int64_t a = 0; a < n; a += kReduceChunk) {
      const int k = int(std::min(kReduceChunk, n - a));
      if (rank_ == root) MPI_Reduce(MPI_IN_PLACE, d + a, k, MPI_FLOAT, MPI_SUM, root, c_);
      else MPI_Reduce(d + a, nullptr, k, MPI_FLOAT, MPI_SUM, root, c_);
    }
  }
  void exchange(const float* send, float* recv, std::int64_t n, int peer) override {
    pieces(n, [&](std::int64_t a, int k) {
      MPI_Sendrecv(send + a, k, MPI_FLOAT, peer, 7, recv + a, k, MPI_FLOAT, peer, 7, c_, MPI_STATUS_IGNORE);
    });
  }
  void barrier() override { MPI_Barrier(c_); }
  std::unique_ptr<Comm> split(int color, int key) override {
    MPI_Comm sub;
    MPI_Comm_split(c_, color, key, &sub);
    return std::make_unique<MpiComm>(sub, true);
  }

 private:
  template <typename F>
  void pieces(std::int64_t n, F f) {
    for (std::int64_t a = 0; a < n; a += kChunk) f(a, int(std::min(kChunk, n - a)));
  }
  MPI_Comm c_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool launched_by_mpirun() { return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr; }

std::unique_ptr<Comm> make_world_comm() {
  if (!launched_by_mpirun()) return make_local_comm();
  ensure_mpi();
  return std::make_unique<MpiComm>(MPI_COMM_WORLD, false);
}

}  // namespace palm
