#include "infer/score.h"

#include "base/check.h"
#include "kernels/device_buffer.h"
#include "model/model.h"

namespace palm {

std::vector<double> token_logprobs(Backend& be, const Weights& w, const std::vector<std::int32_t>& seq) {
  const ModelConfig& c = w.config;
  PALM_CHECK(seq.size() >= 2, "need at least 2 tokens to score (got ", seq.size(), ")");
  PALM_CHECK(std::int64_t(seq.size()) - 1 <= c.max_seq_len, "sequence of ", seq.size(),
             " tokens is longer than the model's max_seq_len + 1 (", c.max_seq_len + 1, ")");
  check_tokens(c, seq.data(), std::int64_t(seq.size()), "token");
  const std::int64_t T = std::int64_t(seq.size()) - 1;
  const std::vector<std::int32_t> inputs(seq.begin(), seq.end() - 1), targets(seq.begin() + 1, seq.end());
  Activations acts(be, c, ActivationPlan{1, T, false, false});
  forward(be, w, acts, inputs.data(), targets.data(), 0.0f);
  const HostWindow nll(be, acts.nll, std::size_t(T));
  std::vector<double> lp(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) lp[std::size_t(t)] = -double(nll.data()[t]);
  return lp;
}

}  // namespace palm
