// Log-likelihood scoring (tokens in, numbers out): the model's log-probability of each
// token given its prefix, by one full forward pass. Used by evaluation (multiple choice,
// perplexity) and `palm score`.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "model/params.h"

namespace palm {

// logprob[i] = log p(seq[i + 1] | seq[0..i]) for i in [0, n - 1); needs 2 <= n <= max_seq_len + 1.
std::vector<double> token_logprobs(Backend& be, const Weights& w, const std::vector<std::int32_t>& seq);

}  // namespace palm
