#include "train/overlap.h"

#include <chrono>

#include "base/threads.h"

namespace palm {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

OverlappedReduce::OverlappedReduce(Comm& comm, const ModelConfig& c, Gradients& g) : comm_(comm) {
  // a block's tensors are contiguous in the arena (norm, q, k, v, gate, up, o, down)
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const auto& v = g.view.layers[std::size_t(l)];
    const float* end = l + 1 < c.n_layers ? g.view.layers[std::size_t(l + 1)].norm : g.view.final_norm;
    layers_.emplace_back(v.norm, std::int64_t(end - v.norm));
  }
  embed_ = {g.view.embed, std::int64_t(g.view.layers.empty() ? 0 : g.view.layers[0].norm - g.view.embed)};
  final_norm_ = {g.view.final_norm, c.d_model};
  thread_ = std::thread([this] {
    adopt_process_threads();  // its reductions run with the process's --threads
    run();
  });
}

OverlappedReduce::~OverlappedReduce() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void OverlappedReduce::submit(float* p, std::int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.emplace_back(p, n);
  ++pending_;
  cv_.notify_all();
}

void OverlappedReduce::layer_done(std::int64_t l) { submit(layers_[std::size_t(l)].first, layers_[std::size_t(l)].second); }

void OverlappedReduce::finish() {
  submit(embed_.first, embed_.second);
  submit(final_norm_.first, final_norm_.second);
  const auto t0 = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  waited_ += since(t0);
}

void OverlappedReduce::run() {
  for (;;) {
    std::pair<float*, std::int64_t> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
    }
    const auto t0 = Clock::now();
    comm_.all_reduce_sum(job.first, job.second);
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ += since(t0);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }
}

}  // namespace palm
