#include "infer/engine.h"

#include <chrono>

#include "base/check.h"
#include "kernels/device_buffer.h"
#include "base/threads.h"
#include "infer/stop.h"
#include "model/decode.h"

namespace palm {

namespace {
}

struct Engine::Sequence {
  EngineRequest req;
  std::unique_ptr<KvCache> cache;
  std::int32_t last = 0;
  std::int64_t generated = 0;
  bool done = false;
};

Engine::Engine(Backend& be, const Weights& w, std::int64_t max_batch, std::int64_t max_queue,
               const DecodeWeights* stored, KvFormat kv)
    : be_(be), w_(w), max_batch_(max_batch), max_queue_(max_queue), stored_(stored), kv_(kv) {
  PALM_CHECK(max_batch > 0, "max batch must be positive (got ", max_batch, ")");
  PALM_CHECK(max_queue >= 0, "max queue must be >= 0 (got ", max_queue, ")");
  thread_ = std::thread([this] {
    adopt_process_threads();  // --threads bounds the decode steps run on this thread
    loop();
  });
}

Engine::~Engine() { shutdown(0.0); }

Engine::Admit Engine::submit(EngineRequest r) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return Admit::kShuttingDown;
  // the batch's free slots plus the queue's length
  if (std::int64_t(queue_.size()) + active_count_.load() >= max_batch_ + max_queue_) return Admit::kQueueFull;
  queue_.push_back(std::move(r));
  cv_.notify_one();
  return Admit::kAccepted;
}

std::int64_t Engine::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::int64_t(queue_.size());
}

void Engine::shutdown(double grace_seconds) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (done_ && !thread_.joinable()) return;
    stopping_ = true;
    cv_.notify_one();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_seconds);
    idle_cv_.wait_until(lock, deadline, [&] { return queue_.empty() && active_count_.load() == 0; });
    cancel_all_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void Engine::finish(Sequence& s, const std::string& reason, const std::string& error) {
  if (s.done) return;
  s.done = true;
  if (s.req.on_done) s.req.on_done(reason, error);
}

void Engine::loop() {
  const ModelConfig& c = w_.config;
  const std::int64_t V = c.vocab_size;
  std::vector<std::unique_ptr<Sequence>> active;
  DecodeScratch scratch(be_, c, max_batch_);
  DeviceFloats logits(be_, std::size_t(max_batch_ * V));  // the backend's: sample_token reads what it needs
  SamplerScratch sampler;
  std::vector<KvCache*> caches;
  std::vector<std::int32_t> next;
  // After the token is sampled: callbacks, then whether the sequence goes on. Nothing
  // thrown here (by sampling or a request's callback) may leave this thread: the request
  // fails with the message and the engine goes on.
  auto advance = [&](Sequence& s, const float* row, std::uint64_t index) {
    try {
      const Sampled t = sample_token(be_, row, V, s.req.sampling, s.req.stream, index, sampler);
      ++s.generated;
      s.last = t.token;
      const bool stop = t.token == kEodId || (s.req.on_token && s.req.on_token(t.token, t.logprob));
      if (stop) finish(s, "stop");
      else if (s.generated >= s.req.max_tokens || s.cache->len >= s.cache->capacity) finish(s, "length");
    } catch (const std::exception& e) {
      finish(s, "error", e.what());
    }
  };
  for (;;) {
    std::vector<EngineRequest> admitted;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty() || !active.empty() || stopping_; });
      if (cancel_all_) {
        for (auto& r : queue_) {
          if (r.on_done) r.on_done("cancelled", "");
        }
        queue_.clear();
        for (auto& s : active) finish(*s, "cancelled");
        active.clear();
        active_count_ = 0;
        done_ = true;
        idle_cv_.notify_all();
        return;
      }
      if (stopping_ && queue_.empty() && active.empty()) {
        idle_cv_.notify_all();
        // wait for shutdown() to set cancel_all_ (it returns once idle)
        cv_.wait(lock, [&] { return cancel_all_; });
        done_ = true;
        return;
      }
      while (std::int64_t(active.size() + admitted.size()) < max_batch_ && !queue_.empty()) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      active_count_ = std::int64_t(active.size() + admitted.size());
    }
    // new requests: prefill, first token, then they join the batch
    for (auto& r : admitted) {
      auto s = std::make_unique<Sequence>();
      s->req = std::move(r);
      if (s->req.cancelled->load()) {
        finish(*s, "cancelled");
        continue;
      }
      try {
        validate(s->req.sampling);
        PALM_CHECK(!s->req.prompt.empty(), "empty prompt");
        PALM_CHECK(std::int64_t(s->req.prompt.size()) < c.max_seq_len, "prompt of ", s->req.prompt.size(),
                   " tokens leaves no room in the context of ", c.max_seq_len);
        PALM_CHECK(s->req.max_tokens > 0, "max_tokens must be positive");
        const std::int64_t cap = std::min<std::int64_t>(c.max_seq_len, std::int64_t(s->req.prompt.size()) + s->req.max_tokens);
        s->cache = std::make_unique<KvCache>(be_, c, cap, kv_);
        prefill(be_, w_, *s->cache, s->req.prompt.data(), std::int64_t(s->req.prompt.size()), logits.data());
      } catch (const std::exception& e) {
        finish(*s, "error", e.what());
        continue;
      }
      advance(*s, logits.data(), 0);
      if (!s->done) active.push_back(std::move(s));
    }
    // cancelled sequences leave before the step
    for (auto& s : active)
      if (!s->done && s->req.cancelled->load()) finish(*s, "cancelled");
    std::erase_if(active, [](const auto& s) { return s->done; });
    if (!active.empty()) {
      caches.clear();
      next.clear();
      for (auto& s : active) {
        caches.push_back(s->cache.get());
        next.push_back(s->last);
      }
      try {
        decode_step(be_, w_, caches, next.data(), logits.data(), scratch, stored_);
        for (std::size_t i = 0; i < active.size(); ++i)
          advance(*active[i], logits.data() + std::int64_t(i) * V, std::uint64_t(active[i]->generated));
      } catch (const std::exception& e) {  // the step failed: its sequences fail, the engine stays
        for (auto& s : active) finish(*s, "error", std::string("decode step failed: ") + e.what());
      }
      std::erase_if(active, [](const auto& s) { return s->done; });
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      active_count_ = std::int64_t(active.size());
      if (queue_.empty() && active.empty()) idle_cv_.notify_all();
    }
  }
}

}  // namespace palm
