#include "train/overlap.h"

#include <chrono>

#include "base/threads.h"

namespace palm {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

OverlappedReduce::OverlappedReduce(Comm& comm, const ModelConfig& c, Gradients& g) : comm_(comm) {
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const ParamRange r = layer_range(c, l);
    layers_.emplace_back(g.arena.data() + r.offset, r.count);
  }
  for (const ParamInfo& p : param_list(c)) {  // the tensors outside the blocks
    if (p.role == ParamRole::kEmbedding) embed_ = {g.arena.data() + p.offset, p.numel};
    if (p.role == ParamRole::kFinalNorm) final_norm_ = {g.arena.data() + p.offset, p.numel};
  }
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
