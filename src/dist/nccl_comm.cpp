// Comm for ranks whose buffers are GPU memory (the CUDA backend), two ways:
//  - NcclComm: NCCL's collectives on the device buffers, one NCCL communicator per group,
//    bootstrapped over the host transport (rank 0 makes the unique id and broadcasts it),
//    split with ncclCommSplit. NCCL refuses two ranks on one GPU.
//  - DeviceStagedComm: a host transport (MPI) with device buffers copied to the host and
//    back around each collective: slower, but it runs any number of ranks on one GPU (the
//    lent test machine has one) and gives the MPI ranks' bits.
// Both are synchronous, as the Comm interface: all work queued on the rank's device (the
// one current when the comm was made; each call makes it current on the calling thread) is waited
// for first (the backend's stream is not visible here), then the collective runs on this
// comm's own stream and is waited for. Host pointers (scalars, norms) are accepted too:
// each pointer's kind is asked of the runtime and host data goes through a device copy.
// Built only with CUDA (-DPALM_CUDA=ON); compiled here without a GPU, run by
// scripts/gpu-check.sh where one is lent.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/check.h"
#include "dist/comm.h"

namespace palm {
namespace {

void cuda_ok(cudaError_t e, const char* what) {
  PALM_CHECK(e == cudaSuccess, "CUDA error in ", what, ": ", cudaGetErrorString(e));
}

void nccl_ok(ncclResult_t r, const char* what) {
  PALM_CHECK(r == ncclSuccess, "NCCL error in ", what, ": ", ncclGetErrorString(r),
             r == ncclInvalidUsage ? " (two ranks on one GPU? NCCL refuses that: PALM_COMM=mpi stages through the host)" : "");
}

bool on_device(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();  // an unregistered host pointer: clear the sticky error
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// A device (or host) copy of a buffer that lives on the other side, for the span of one
// collective: `to` copies in, `back` copies out.
class Staging {
 public:
  Staging() = default;
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  ~Staging() {
    if (device_) cudaFree(device_);
  }
  void* device(std::size_t bytes) {
    if (bytes > device_bytes_) {
      if (device_) cuda_ok(cudaFree(device_), "cudaFree");
      device_ = nullptr;
      cuda_ok(cudaMalloc(&device_, bytes), "cudaMalloc (NCCL staging)");
      device_bytes_ = bytes;
    }
    return device_;
  }
  void* host(std::size_t bytes) {
    if (host_.size() < bytes) host_.resize(bytes);
    return host_.data();
  }

 private:
  void* device_ = nullptr;
  std::size_t device_bytes_ = 0;
  std::vector<unsigned char> host_;
};

template <typename T>
ncclDataType_t nccl_type();
template <> ncclDataType_t nccl_type<float>() { return ncclFloat32; }
template <> ncclDataType_t nccl_type<double>() { return ncclFloat64; }
template <> ncclDataType_t nccl_type<std::int64_t>() { return ncclInt64; }

class NcclComm final : public Comm {
 public:
  explicit NcclComm(ncclComm_t c) : c_(c) {
    cuda_ok(cudaGetDevice(&device_), "cudaGetDevice");
    nccl_ok(ncclCommUserRank(c_, &rank_), "ncclCommUserRank");
    nccl_ok(ncclCommCount(c_, &size_), "ncclCommCount");
    cuda_ok(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~NcclComm() override {
    cudaStreamDestroy(stream_);
    ncclCommDestroy(c_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(float* d, std::int64_t n) override { all_reduce(d, n, ncclSum); }
  void all_reduce_sum(double* d, std::int64_t n) override { all_reduce(d, n, ncclSum); }
  void all_reduce_max(std::int64_t* d, std::int64_t n) override { all_reduce(d, n, ncclMax); }
  void all_reduce_max(float* d, std::int64_t n) override { all_reduce(d, n, ncclMax); }
  void all_gather(const float* in, float* out, std::int64_t n) override {
    run_io(in, n, out, n * size_, [&](const void* i, void* o) {
      nccl_ok(ncclAllGather(i, o, std::size_t(n), ncclFloat32, c_, stream_), "ncclAllGather");
    });
  }
  void reduce_scatter_sum(const float* in, float* out, std::int64_t n) override {
    run_io(in, n * size_, out, n, [&](const void* i, void* o) {
      nccl_ok(ncclReduceScatter(i, o, std::size_t(n), ncclFloat32, ncclSum, c_, stream_), "ncclReduceScatter");
    });
  }
  void broadcast(float* d, std::int64_t n, int root) override {
    run_io(d, n, d, n, [&](const void* i, void* o) {
      nccl_ok(ncclBroadcast(i, o, std::size_t(n), ncclFloat32, root, c_, stream_), "ncclBroadcast");
    });
  }
  void reduce_sum(float* d, std::int64_t n, int root) override {
    // in place at the root; the others' buffers are only read
    run_io(d, n, d, rank_ == root ? n : 0, [&](const void* i, void* o) {
      nccl_ok(ncclReduce(i, rank_ == root ? o : const_cast<void*>(i), std::size_t(n), ncclFloat32, ncclSum, root, c_,
                         stream_),
              "ncclReduce");
    });
  }
  void exchange(const float* send, float* recv, std::int64_t n, int peer) override {
    run_io(send, n, recv, n, [&](const void* i, void* o) {
      nccl_ok(ncclGroupStart(), "ncclGroupStart");
      nccl_ok(ncclSend(i, std::size_t(n), ncclFloat32, peer, c_, stream_), "ncclSend");
      nccl_ok(ncclRecv(o, std::size_t(n), ncclFloat32, peer, c_, stream_), "ncclRecv");
      nccl_ok(ncclGroupEnd(), "ncclGroupEnd");
    });
  }
  void barrier() override {
    float one = 1.0f;
    all_reduce(&one, 1, ncclSum);
  }
  std::unique_ptr<Comm> split(int color, int key) override {
    cuda_ok(cudaSetDevice(device_), "cudaSetDevice");
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    ncclComm_t sub = nullptr;
    nccl_ok(ncclCommSplit(c_, color, key, &sub, nullptr), "ncclCommSplit");
    PALM_CHECK(sub != nullptr, "ncclCommSplit gave no communicator for color ", color);
    return std::make_unique<NcclComm>(sub);
  }

 private:
  template <typename T>
  void all_reduce(T* d, std::int64_t n, ncclRedOp_t op) {
    run_io(d, n, d, n, [&](const void* i, void* o) {
      nccl_ok(ncclAllReduce(i, o, std::size_t(n), nccl_type<T>(), op, c_, stream_), "ncclAllReduce");
    });
  }
  // Runs f(device in, device out) on n_in elements of `in` and n_out of `out` (T-sized),
  // staging host buffers through device memory, and waits for it.
  template <typename T, typename F>
  void run_io(const T* in, std::int64_t n_in, T* out, std::int64_t n_out, F f) {
    // the calling thread (the trainer's reduce thread, say) may have another current device
    cuda_ok(cudaSetDevice(device_), "cudaSetDevice");
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");  // the producers of `in`
    const std::size_t in_bytes = sizeof(T) * std::size_t(n_in), out_bytes = sizeof(T) * std::size_t(n_out);
    const bool in_dev = on_device(in), out_dev = n_out == 0 || on_device(out);
    const bool same = static_cast<const void*>(in) == static_cast<const void*>(out);
    const void* din = in;
    void* dout = out;
    if (!in_dev || !out_dev) {
      // one device block holds both sides (the output after the input)
      unsigned char* block = static_cast<unsigned char*>(staging_.device(in_bytes + out_bytes + 256));
      if (!in_dev) {
        cuda_ok(cudaMemcpy(block, in, in_bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
        din = block;
      }
      if (!out_dev) dout = same && !in_dev ? block : block + ((in_bytes + 255) / 256) * 256;
    }
    f(din, dout);
    cuda_ok(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (NCCL)");
    if (!out_dev) cuda_ok(cudaMemcpy(out, dout, out_bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to the host");
  }
  ncclComm_t c_;
  int device_ = 0;
  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;
  Staging staging_;
};

// A host transport for device buffers: each device operand is copied to the host, the
// inner comm runs, and device results are copied back.
class DeviceStagedComm final : public Comm {
 public:
  explicit DeviceStagedComm(std::unique_ptr<Comm> inner) : inner_(std::move(inner)) {
    cuda_ok(cudaGetDevice(&device_), "cudaGetDevice");
  }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void all_reduce_sum(float* d, std::int64_t n) override { inout(d, n, [&](float* h) { inner_->all_reduce_sum(h, n); }); }
  void all_reduce_sum(double* d, std::int64_t n) override { inout(d, n, [&](double* h) { inner_->all_reduce_sum(h, n); }); }
  void all_reduce_max(std::int64_t* d, std::int64_t n) override {
    inout(d, n, [&](std::int64_t* h) { inner_->all_reduce_max(h, n); });
  }
  void all_reduce_max(float* d, std::int64_t n) override { inout(d, n, [&](float* h) { inner_->all_reduce_max(h, n); }); }
  void all_gather(const float* in, float* out, std::int64_t n) override {
    const float* hin = to_host(in, n, a_);
    float* hout = host_out(out, n * size(), b_);
    inner_->all_gather(hin, hout, n);
    from_host(out, hout, n * size());
  }
  void reduce_scatter_sum(const float* in, float* out, std::int64_t n) override {
    const float* hin = to_host(in, n * size(), a_);
    float* hout = host_out(out, n, b_);
    inner_->reduce_scatter_sum(hin, hout, n);
    from_host(out, hout, n);
  }
  void broadcast(float* d, std::int64_t n, int root) override { inout(d, n, [&](float* h) { inner_->broadcast(h, n, root); }); }
  void reduce_sum(float* d, std::int64_t n, int root) override { inout(d, n, [&](float* h) { inner_->reduce_sum(h, n, root); }); }
  void exchange(const float* send, float* recv, std::int64_t n, int peer) override {
    const float* hs = to_host(send, n, a_);
    float* hr = host_out(recv, n, b_);
    inner_->exchange(hs, hr, n, peer);
    from_host(recv, hr, n);
  }
  void barrier() override { inner_->barrier(); }
  std::unique_ptr<Comm> split(int color, int key) override {
    return std::make_unique<DeviceStagedComm>(inner_->split(color, key));
  }

 private:
  template <typename T, typename F>
  void inout(T* d, std::int64_t n, F f) {
    if (!on_device(d)) return f(d);
    T* h = static_cast<T*>(a_.host(sizeof(T) * std::size_t(n)));
    cuda_ok(cudaSetDevice(device_), "cudaSetDevice");
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    cuda_ok(cudaMemcpy(h, d, sizeof(T) * std::size_t(n), cudaMemcpyDeviceToHost), "cudaMemcpy to the host");
    f(h);
    cuda_ok(cudaMemcpy(d, h, sizeof(T) * std::size_t(n), cudaMemcpyHostToDevice), "cudaMemcpy to the device");
  }
  const float* to_host(const float* d, std::int64_t n, Staging& s) {
    if (!on_device(d)) return d;
    float* h = static_cast<float*>(s.host(sizeof(float) * std::size_t(n)));
    cuda_ok(cudaSetDevice(device_), "cudaSetDevice");
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    cuda_ok(cudaMemcpy(h, d, sizeof(float) * std::size_t(n), cudaMemcpyDeviceToHost), "cudaMemcpy to the host");
    return h;
  }
  float* host_out(float* d, std::int64_t n, Staging& s) {
    return on_device(d) ? static_cast<float*>(s.host(sizeof(float) * std::size_t(n))) : d;
  }
  void from_host(float* d, const float* h, std::int64_t n) {
    if (d != h) cuda_ok(cudaMemcpy(d, h, sizeof(float) * std::size_t(n), cudaMemcpyHostToDevice), "cudaMemcpy to the device");
  }
  std::unique_ptr<Comm> inner_;
  int device_ = 0;
  Staging a_, b_;
};

}  // namespace

std::unique_ptr<Comm> make_device_world_comm() {
  std::unique_ptr<Comm> host = make_world_comm();
  if (host->size() == 1 && !std::getenv("PALM_COMM")) return host;
  const char* choice = std::getenv("PALM_COMM");
  const std::string transport = choice ? choice : "nccl";
  PALM_CHECK(transport == "nccl" || transport == "mpi", "PALM_COMM=", transport, ": must be nccl or mpi");
  if (transport == "mpi") return std::make_unique<DeviceStagedComm>(std::move(host));
  // the unique id travels over the host transport as 32 floats (a broadcast copies bits)
  ncclUniqueId id;
  static_assert(sizeof(id) % sizeof(float) == 0, "the NCCL id is sent as floats");
  std::vector<float> bits(sizeof(id) / sizeof(float));
  if (host->rank() == 0) {
    nccl_ok(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::memcpy(bits.data(), &id, sizeof(id));
  }
  host->broadcast(bits.data(), std::int64_t(bits.size()), 0);
  std::memcpy(&id, bits.data(), sizeof(id));
  ncclComm_t c = nullptr;
  nccl_ok(ncclCommInitRank(&c, host->size(), id, host->rank()), "ncclCommInitRank");
  return std::make_unique<NcclComm>(c);
}

}  // namespace palm
