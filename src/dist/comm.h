// The communication seam. Gradients leave the backward through Comm; data and tensor
// parallelism plug in MPI or NCCL implementations behind it without touching the model.
// Every collective is deterministic for a fixed group: the same inputs give the same
// bits on every member and in every run.
#pragma once
#include <cstdint>
#include <memory>

namespace palm {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: data[i] = sum over ranks of data[i] (the same bits on every rank).
  virtual void all_reduce_sum(float* data, std::int64_t count) = 0;
  virtual void all_reduce_sum(double* data, std::int64_t count) = 0;
  virtual void all_reduce_max(std::int64_t* data, std::int64_t count) = 0;
  virtual void all_reduce_max(float* data, std::int64_t count) = 0;
  // out[r * count .. (r+1) * count) = in of rank r.
  virtual void all_gather(const float* in, float* out, std::int64_t count) = 0;
  // out (count floats) = the sum over ranks of in[rank * count .. (rank+1) * count).
  virtual void reduce_scatter_sum(const float* in, float* out, std::int64_t count) = 0;
  virtual void broadcast(float* data, std::int64_t count, int root) = 0;
  // In place at root: data = the sum over ranks (the others' data is left as it was).
  virtual void reduce_sum(float* data, std::int64_t count, int root) = 0;
  // Sends `send` to `peer` and receives the peer's `recv` (the same count) at once.
  virtual void exchange(const float* send, float* recv, std::int64_t count, int peer) = 0;
  virtual void barrier() = 0;
  // Members with the same color form a new group, ordered by key.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;
};

// One process: every collective is the identity.
std::unique_ptr<Comm> make_local_comm();

// All processes of the job: MPI's world when started by mpirun (OpenMPI), else local.
std::unique_ptr<Comm> make_world_comm();
bool launched_by_mpirun();

// All processes of the job, for ranks whose buffers are GPU memory: NCCL on the device
// buffers (PALM_COMM=nccl, the default; bootstrapped over MPI), or MPI with the buffers
// staged through the host (PALM_COMM=mpi: any number of ranks per GPU). Host pointers are
// accepted too. One process: local unless PALM_COMM is set. Only in a CUDA build
// (dist/nccl_comm.cpp).
std::unique_ptr<Comm> make_device_world_comm();

}  // namespace palm
