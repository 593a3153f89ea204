// Gradient all-reduce overlapped with the backward (data parallelism, --tp 1, not
// --shard full): a dedicated thread reduces each block's gradients (in the order the
// backward finishes them) while the main thread computes the blocks below. MPI is called
// by one thread at a time: during the backward only this thread uses the gradient group.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "dist/comm.h"
#include "model/model.h"

namespace palm {

class OverlappedReduce final : public GradientOverlap {
 public:
  OverlappedReduce(Comm& gradient_comm, const ModelConfig& c, Gradients& g);
  ~OverlappedReduce() override;
  void layer_done(std::int64_t l) override;
  void finish() override;
  double waited_seconds() const { return waited_; }  // exposed: the backward waited this long
  double busy_seconds() const { return busy_; }      // total time spent reducing

 private:
  void submit(float* p, std::int64_t n);
  void run();
  Comm& comm_;
  std::vector<std::pair<float*, std::int64_t>> layers_;  // one contiguous range per block
  std::pair<float*, std::int64_t> embed_, final_norm_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::pair<float*, std::int64_t>> queue_;
  std::int64_t pending_ = 0;
  bool stop_ = false;
  double waited_ = 0, busy_ = 0;
  std::thread thread_;
};

}  // namespace palm
