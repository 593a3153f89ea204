// The communication seam. Gradients leave the backward through Comm; data and tensor
// parallelism plug in MPI or NCCL implementations behind it without touching the model.
#pragma once
#include <cstdint>
#include <memory>

namespace palm {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: data[i] = sum over ranks of data[i].
  virtual void all_reduce_sum(float* data, std::int64_t count) = 0;
};

// One process: every collective is the identity.
std::unique_ptr<Comm> make_local_comm();

}  // namespace palm
