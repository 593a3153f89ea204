#include "train/fsdp.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "base/check.h"

namespace palm {

FullySharded::FullySharded(Backend& be, Comm& group, const ModelConfig& c, Weights& w, Gradients& g,
                           std::vector<int> owner)
    : group_(group), be_(be), w_(w), g_(g), owner_(std::move(owner)), me_(group.rank()), layers_(std::size_t(c.n_layers)) {
  // Small pages only: a transparent huge page would make 2 MiB around every owned tensor
  // resident, other owners' tensors included (measured: no saving at all without this).
  for (DeviceFloats* a : {&w.arena, &g.arena}) {
    if (!be.host_visible()) break;  // (an accelerator's memory has no such pages)
    const std::size_t page = std::size_t(::sysconf(_SC_PAGESIZE));
    const std::size_t bytes = (a->size() * sizeof(float) + page - 1) / page * page;
    if (bytes) ::madvise(a->data(), bytes, MADV_NOHUGEPAGE);
  }
  std::size_t i = 0;
  for_each_param(c, [&](const ParamInfo& p) {
    const Tensor t{p.offset, p.numel, owner_[i++]};
    if (p.layer >= 0) layers_[std::size_t(p.layer)].push_back(t);
    else globals_.push_back(t);
  });
}

void FullySharded::gather(const Tensor& t) { group_.broadcast(w_.arena.data() + t.offset, t.numel, t.owner); }

void FullySharded::drop(DeviceFloats& a, const Tensor& t) {
  be_.discard(a.data() + t.offset, sizeof(float) * std::size_t(t.numel));
}

void FullySharded::gather_globals() {
  for (const auto& t : globals_) gather(t);
}

void FullySharded::gather_layer(std::int64_t l) {
  for (const auto& t : layers_[std::size_t(l)]) gather(t);
}

void FullySharded::release_layer(std::int64_t l) {
  for (const auto& t : layers_[std::size_t(l)])
    if (t.owner != me_) drop(w_.arena, t);
}

void FullySharded::reduce_layer_grads(std::int64_t l) {
  for (const auto& t : layers_[std::size_t(l)]) {
    group_.reduce_sum(g_.arena.data() + t.offset, t.numel, t.owner);
    if (t.owner != me_) drop(g_.arena, t);  // summed on the owner: this rank's copy goes
  }
}

void FullySharded::reduce_global_grads() {
  for (const auto& t : globals_) {
    group_.reduce_sum(g_.arena.data() + t.offset, t.numel, t.owner);
    if (t.owner != me_) drop(g_.arena, t);
  }
}

void FullySharded::release_globals() {
  for (const auto& t : globals_)
    if (t.owner != me_) drop(w_.arena, t);
}

void FullySharded::release_all() {
  for (std::size_t l = 0; l < layers_.size(); ++l) release_layer(std::int64_t(l));
  release_globals();
  for (const auto& layer : layers_)
    for (const auto& t : layer)
      if (t.owner != me_) drop(g_.arena, t);
  for (const auto& t : globals_)
    if (t.owner != me_) drop(g_.arena, t);
}

}  // namespace palm
