#include "model/parallel_plan.h"

namespace palm {

void ParallelPlan::layer_backward_done(std::int64_t l, bool reduce) const {
  if (sharded) {
    sharded->reduce_layer_grads(l);  // the block's gradients go to their owners now
    sharded->release_layer(l);
  }
  if (overlap && reduce) overlap->layer_done(l);  // reduced while the next block computes
}

void ParallelPlan::backward_done(const ModelConfig& c, Comm& replicas, Gradients& g, bool reduce) const {
  if (tp.active() && reduce) {
    // the replicated K/V head: every rank's heads contributed to its gradient
    const std::int64_t HK = c.n_heads * c.head_dim, K = c.head_dim, D = c.d_model;
    for (std::int64_t l = 0; l < c.n_layers; ++l) tp.group->all_reduce_sum(g.view.layers[l].w_in + HK * D, 2 * K * D);
  }
  if (sharded) sharded->reduce_global_grads();  // replaces the all-reduce: owners get the sums
  else if (overlap && reduce) overlap->finish();
  else if (reduce) replicas.all_reduce_sum(g.arena.data(), static_cast<std::int64_t>(g.arena.size()));
}

}  // namespace palm
