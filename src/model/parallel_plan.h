// How one model step is spread over ranks, in the one object the model asks: the
// tensor-parallel group and this rank's vocabulary rows, the fully sharded weights'
// gathers and gradient hand-over, the overlapped gradient reduction, and the replicas'
// final sum. forward() and backward() call its hooks at fixed points and never look at
// a mesh; a single-process run keeps the default (every hook does nothing but the sum
// over a one-rank Comm).
#pragma once
#include <cstdint>

#include "dist/comm.h"
#include "model/params.h"
#include "model/tensor_parallel.h"

namespace palm {

// Fully sharded data parallelism: a rank stores only the tensors it owns; the model asks
// for a block's weights just before it needs them and gives them back right after, and
// hands each block's gradients over as soon as they are complete.
class ShardedWeights {
 public:
  virtual ~ShardedWeights() = default;
  virtual void gather_globals() = 0;                 // embedding and final norm (kept for the step)
  virtual void gather_layer(std::int64_t l) = 0;
  virtual void release_layer(std::int64_t l) = 0;
  virtual void reduce_layer_grads(std::int64_t l) = 0;
  virtual void reduce_global_grads() = 0;
};

// Data parallelism with overlap: the backward hands over each block's gradients as soon as
// they are final (the step's last micro-batch), so they can be reduced while the blocks
// below compute; finish() hands over the rest and returns when all are reduced.
class GradientOverlap {
 public:
  virtual ~GradientOverlap() = default;
  virtual void layer_done(std::int64_t l) = 0;
  virtual void finish() = 0;
};

struct ParallelPlan {
  // Tensor parallelism: the group, and where this rank's vocabulary rows start. The
  // config given to forward()/backward() is then this rank's local config.
  TensorParallel tp;
  std::int64_t vocab_offset = 0;
  ShardedWeights* sharded = nullptr;   // --shard full
  GradientOverlap* overlap = nullptr;  // --overlap: replaces the final all-reduce

  const TensorParallel* tensor() const { return tp.active() ? &tp : nullptr; }

  // The hooks, in the order a step calls them.
  void forward_begins() const {
    if (sharded) sharded->gather_globals();
  }
  void layer_needed(std::int64_t l) const {
    if (sharded) sharded->gather_layer(l);
  }
  void layer_forward_done(std::int64_t l) const {
    if (sharded) sharded->release_layer(l);
  }
  // `reduce`: the step's last micro-batch, whose gradients are final.
  void layer_backward_done(std::int64_t l, bool reduce) const;
  // The one exit of the backward: the replicated K/V head's gradient summed over the
  // tensor group, then the gradients summed over the replicas (owners, overlap or a plain
  // all-reduce over `replicas`).
  void backward_done(const ModelConfig& c, Comm& replicas, Gradients& g, bool reduce) const;
};

}  // namespace palm
