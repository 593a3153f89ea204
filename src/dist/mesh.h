// The job's processes as PaLM's mesh: P pods x D data-parallel ranks x T tensor-parallel
// ranks (N = P * D * T). Rank placement (tensor fastest, pods slowest, so a tensor group
// shares a host and a pod is a contiguous block), group creation and the check that N
// factors are here and nowhere else.
#pragma once
#include <memory>
#include <string>

#include "dist/comm.h"

namespace palm {

class Mesh {
 public:
  // Throws Error naming N, T and P when N is not a multiple of T * P.
  Mesh(std::unique_ptr<Comm> world, int tensor, int pods);

  int pods() const { return pods_; }
  int data() const { return data_; }
  int tensor() const { return tensor_; }
  int pod_index() const { return pod_; }
  int data_index() const { return data_index_; }
  int tensor_index() const { return tensor_index_; }
  int data_parallel_ranks() const { return pods_ * data_; }  // ranks that split the batch
  int data_parallel_index() const { return pod_ * data_ + data_index_; }

  Comm& world() { return *world_; }
  Comm& data_group() { return *data_group_; }    // same pod and tensor index
  Comm& pod_twins() { return *pod_twins_; }      // same data and tensor index, one per pod
  Comm& tensor_group() { return *tensor_group_; }
  Comm& replicas() { return *replicas_; }        // same tensor index: hold the same shard
  // Gradients: summed within the pod (all-reduce), then exchanged with the twin rank of
  // every other pod and added, so all pods hold the same bits.
  Comm& gradient_comm() { return *gradient_comm_; }
  // Seconds spent in gradient reductions so far (blocking: the backward waits for them).
  double gradient_seconds() const;

  // "rank 3/4 (pod 1, data 0, tensor 1)"
  std::string describe() const;

 private:
  std::unique_ptr<Comm> world_, data_group_, pod_twins_, tensor_group_, replicas_, gradient_comm_;
  int pods_, data_, tensor_, pod_, data_index_, tensor_index_;
};

}  // namespace palm
