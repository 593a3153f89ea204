#include "dist/mesh.h"

#include <chrono>
#include <vector>

#include "base/check.h"

namespace palm {

namespace {

// Within the pod by all-reduce, then across pods: two pods swap their sums point to point
// (in 256 MiB pieces) and each adds the other's; a + b == b + a in IEEE arithmetic, so both
// pods hold the same bits. More pods: an all-reduce over the twins.
class PodGradientComm final : public Comm {
 public:
  PodGradientComm(Comm& pod, Comm& twins) : pod_(pod), twins_(twins) {}
  int rank() const override { return pod_.rank(); }
  int size() const override { return pod_.size() * twins_.size(); }
  void all_reduce_sum(float* d, std::int64_t n) override {
    const auto t0 = std::chrono::steady_clock::now();
    reduce(d, n);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void reduce(float* d, std::int64_t n) {
    pod_.all_reduce_sum(d, n);
    if (twins_.size() == 1) return;
    if (twins_.size() == 2) {
      if (std::int64_t(other_.size()) < n) other_.resize(std::size_t(n));
      twins_.exchange(d, other_.data(), n, 1 - twins_.rank());
      // one thread (threads belong to the compute backend): a streaming add, vectorized,
      // at memory speed next to the exchange it follows
      for (std::int64_t i = 0; i < n; ++i) d[i] += other_[std::size_t(i)];
    } else {
      twins_.all_reduce_sum(d, n);
    }
  }
  void all_reduce_sum(double* d, std::int64_t n) override {
    pod_.all_reduce_sum(d, n);
    twins_.all_reduce_sum(d, n);
  }
  void all_reduce_max(std::int64_t* d, std::int64_t n) override {
    pod_.all_reduce_max(d, n);
    twins_.all_reduce_max(d, n);
  }
  void all_reduce_max(float* d, std::int64_t n) override {
    pod_.all_reduce_max(d, n);
    twins_.all_reduce_max(d, n);
  }
  void all_gather(const float*, float*, std::int64_t) override { PALM_CHECK(false, "all_gather on the gradient group"); }
  void reduce_scatter_sum(const float*, float*, std::int64_t) override { PALM_CHECK(false, "reduce_scatter on the gradient group"); }
  void broadcast(float*, std::int64_t, int) override { PALM_CHECK(false, "broadcast on the gradient group"); }
  void reduce_sum(float*, std::int64_t, int) override { PALM_CHECK(false, "reduce on the gradient group"); }
  void exchange(const float*, float*, std::int64_t, int) override { PALM_CHECK(false, "exchange on the gradient group"); }
  void barrier() override {
    pod_.barrier();
    twins_.barrier();
  }
  std::unique_ptr<Comm> split(int, int) override {
    PALM_CHECK(false, "split of the gradient group");
    return nullptr;
  }

  double seconds = 0;  // time in gradient reductions

 private:
  Comm& pod_;
  Comm& twins_;
  std::vector<float> other_;
};

}  // namespace

Mesh::Mesh(std::unique_ptr<Comm> world, int tensor, int pods) : world_(std::move(world)), pods_(pods), tensor_(tensor) {
  const int n = world_->size();
  PALM_CHECK(tensor >= 1 && pods >= 1, "--tp and --pods must be >= 1 (got ", tensor, ", ", pods, ")");
  PALM_CHECK(n % (tensor * pods) == 0, n, " processes do not factor as pods x data x tensor with --pods ", pods, " --tp ",
             tensor, ": N must be a multiple of ", tensor * pods);
  data_ = n / (tensor * pods);
  const int r = world_->rank();
  tensor_index_ = r % tensor;
  data_index_ = (r / tensor) % data_;
  pod_ = r / (tensor * data_);
  data_group_ = world_->split(pod_ * tensor + tensor_index_, data_index_);
  pod_twins_ = world_->split(data_index_ * tensor + tensor_index_, pod_);
  tensor_group_ = world_->split(pod_ * data_ + data_index_, tensor_index_);
  replicas_ = world_->split(tensor_index_, pod_ * data_ + data_index_);
  gradient_comm_ = std::make_unique<PodGradientComm>(*data_group_, *pod_twins_);
}

double Mesh::gradient_seconds() const { return static_cast<const PodGradientComm&>(*gradient_comm_).seconds; }

std::string Mesh::describe() const {
  return "rank " + std::to_string(world_->rank()) + "/" + std::to_string(world_->size()) + " (pod " + std::to_string(pod_) +
         ", data " + std::to_string(data_index_) + ", tensor " + std::to_string(tensor_index_) + ")";
}

}  // namespace palm
