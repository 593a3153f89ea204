#include "infer/generate.h"

#include <chrono>
#include <memory>

#include "base/check.h"
#include "kernels/device_buffer.h"
#include "infer/stop.h"
#include "model/decode.h"

namespace palm {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

std::vector<GenerationResult> generate(Backend& be, const Weights& w, const std::vector<GenerationRequest>& requests,
                                       std::int64_t max_batch,
                                       const std::function<bool(std::size_t, std::int32_t)>& on_token,
                                       GenerationStats* stats, const DecodeWeights* stored, KvFormat kv) {
  const ModelConfig& c = w.config;
  const std::int64_t V = c.vocab_size;
  std::vector<GenerationResult> out(requests.size());
  SamplerScratch scratch;
  GenerationStats st;
  // Requests run in waves of max_batch sequences; within a wave the batch shrinks as
  // sequences finish.
  for (std::size_t wave = 0; wave < requests.size(); wave += std::size_t(max_batch)) {
    const std::size_t end = std::min(requests.size(), wave + std::size_t(max_batch));
    std::vector<std::unique_ptr<KvCache>> caches;
    std::vector<std::size_t> active;
    std::vector<std::int32_t> next;
    DeviceFloats logits(be, static_cast<std::size_t>(V));  // the backend's: sample_token reads what it needs
    for (std::size_t r = wave; r < end; ++r) {
      const auto& req = requests[r];
      validate(req.sampling);
      PALM_CHECK(!req.prompt.empty(), "request ", r, ": empty prompt");
      PALM_CHECK(std::int64_t(req.prompt.size()) < c.max_seq_len, "request ", r, ": prompt of ", req.prompt.size(),
                 " tokens leaves no room in the context of ", c.max_seq_len);
      PALM_CHECK(req.max_tokens > 0, "request ", r, ": max_tokens must be positive");
      const std::int64_t cap = std::min<std::int64_t>(c.max_seq_len, std::int64_t(req.prompt.size()) + req.max_tokens);
      caches.push_back(std::make_unique<KvCache>(be, c, cap, kv));
      const auto t0 = Clock::now();
      prefill(be, w, *caches.back(), req.prompt.data(), std::int64_t(req.prompt.size()), logits.data());
      st.prefill_seconds += since(t0);
      st.prefill_tokens += std::int64_t(req.prompt.size());
      const Sampled s = sample_token(be, logits.data(), V, req.sampling, req.stream, 0, scratch);
      out[r].tokens.push_back(s.token);
      out[r].logprobs.push_back(s.logprob);
      const bool stop = s.token == kEodId || on_token(r, s.token);
      if (stop) {
        out[r].finish_reason = "stop";
      } else if (std::int64_t(out[r].tokens.size()) >= req.max_tokens || caches.back()->len >= cap) {
        out[r].finish_reason = "length";
      } else {
        active.push_back(r);
      }
    }
    DecodeScratch ds(be, c, max_batch);
    DeviceFloats batch_logits(be, static_cast<std::size_t>(max_batch * V));
    while (!active.empty()) {
      std::vector<KvCache*> cs;
      next.clear();
      for (std::size_t r : active) {
        cs.push_back(caches[r - wave].get());
        next.push_back(out[r].tokens.back());
      }
      const auto t0 = Clock::now();
      decode_step(be, w, cs, next.data(), batch_logits.data(), ds, stored);
      st.decode_seconds += since(t0);
      st.decode_tokens += std::int64_t(active.size());
      std::vector<std::size_t> still;
      for (std::size_t i = 0; i < active.size(); ++i) {
        const std::size_t r = active[i];
        const auto& req = requests[r];
        const Sampled s = sample_token(be, batch_logits.data() + i * V, V, req.sampling, req.stream,
                                       std::uint64_t(out[r].tokens.size()), scratch);
        out[r].tokens.push_back(s.token);
        out[r].logprobs.push_back(s.logprob);
        if (s.token == kEodId || on_token(r, s.token)) {
          out[r].finish_reason = "stop";
        } else if (std::int64_t(out[r].tokens.size()) >= req.max_tokens || cs[i]->len >= cs[i]->capacity) {
          out[r].finish_reason = "length";
        } else {
          still.push_back(r);
        }
      }
      active = still;
    }
  }
  if (stats) *stats = st;
  return out;
}

}  // namespace palm
