// Continuous batching (tokens in, tokens out): one engine thread owns the model and runs
// decode steps for every active sequence at once; a request submitted while others run
// is prefilled and joins the batch at the next step, and a finished or cancelled one
// leaves it, freeing its slot for the queue. Callbacks run on the engine thread and must
// not block (the HTTP layer hands text to its connection threads through a queue).
//
// Per sequence the arithmetic is generate()'s: prefill, then sample_token with draw k for
// the k-th generated token, so greedy output equals `palm generate`.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "infer/sampler.h"
#include "kernels/backend.h"
#include "model/params.h"

namespace palm {

struct DecodeWeights;

struct EngineRequest {
  std::vector<std::int32_t> prompt;
  std::int64_t max_tokens = 16;
  SamplingOptions sampling;
  std::uint64_t stream = 0;
  // Each generated token; return true to stop the sequence ("stop").
  std::function<bool(std::int32_t token, double logprob)> on_token;
  // Exactly once: "stop" | "length" | "cancelled" | "error"; `error` says why for "error".
  std::function<void(const std::string& finish_reason, const std::string& error)> on_done;
  // Set by the submitter (client gone): the sequence leaves the batch at the next step.
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
};

class Engine {
 public:
  Engine(Backend& be, const Weights& w, std::int64_t max_batch, std::int64_t max_queue,
         const DecodeWeights* stored = nullptr, KvFormat kv = KvFormat::kF32);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  enum class Admit { kAccepted, kQueueFull, kShuttingDown };
  Admit submit(EngineRequest r);

  // No new requests; what is still running after `grace_seconds` is cancelled. Returns
  // when everything has finished.
  void shutdown(double grace_seconds);

  std::int64_t queued() const;
  std::int64_t active() const { return active_count_.load(); }
  std::int64_t max_batch() const { return max_batch_; }
  std::int64_t max_queue() const { return max_queue_; }

 private:
  struct Sequence;
  void loop();
  void finish(Sequence& s, const std::string& reason, const std::string& error = "");

  Backend& be_;
  const Weights& w_;
  const std::int64_t max_batch_, max_queue_;
  const DecodeWeights* stored_;
  KvFormat kv_;  // the sequences' caches
  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<EngineRequest> queue_;
  bool stopping_ = false, cancel_all_ = false, done_ = false;
  std::atomic<std::int64_t> active_count_{0};
  std::thread thread_;
};

}  // namespace palm
