// Fully sharded data parallelism (--shard full): within a pod, each data-parallel rank
// owns whole tensors (the --shard optimizer assignment) and keeps only their weights,
// gradients and optimizer state resident. A block's other tensors are broadcast from their
// owners just before the block runs and their memory is returned to the system right
// after (madvise: the pages leave the process); each block's gradients are summed onto
// their owners (MPI reduce) as soon as its backward is done, and the other ranks drop
// theirs. The arenas keep the model's layout (virtual memory), so the kernels and the
// optimizer are unchanged; resident memory is what the rank owns plus one block.
#pragma once
#include <cstdint>
#include <vector>

#include "dist/comm.h"
#include "model/activations.h"
#include "model/model.h"

namespace palm {

class FullySharded final : public ShardedWeights {
 public:
  // owner[i]: the data-parallel rank (in `group`) owning tensor i (for_each_param order).
  FullySharded(Backend& be, Comm& group, const ModelConfig& c, Weights& w, Gradients& g, std::vector<int> owner);
  void gather_globals() override;
  void gather_layer(std::int64_t l) override;
  void release_layer(std::int64_t l) override;
  void reduce_layer_grads(std::int64_t l) override;
  void reduce_global_grads() override;
  // After the optimizer step: the embedding and final norm of other owners leave memory.
  void release_globals();
  // Frees every tensor this rank does not own (weights and gradients): after loading.
  void release_all();
  bool owns(std::size_t tensor) const { return owner_[tensor] == me_; }

 private:
  struct Tensor {
    std::int64_t offset, numel;
    int owner;
  };
  void gather(const Tensor& t);
  void drop(DeviceFloats& a, const Tensor& t);  // contents become zero; the memory may be returned
  Comm& group_;
  Backend& be_;
  Weights& w_;
  Gradients& g_;
  std::vector<int> owner_;
  int me_;
  std::vector<std::vector<Tensor>> layers_;
  std::vector<Tensor> globals_;  // embedding, final norm
};

}  // namespace palm
