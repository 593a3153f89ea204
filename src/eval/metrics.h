// Scoring rules of the evaluation harness, each documented in docs/evaluation.md.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace palm {

// Unbiased pass@k of Chen et al. 2021: 1 - C(n - c, k) / C(n, k) for n samples of which
// c pass (k <= n), computed as a product so that it is stable for n in the hundreds.
double pass_at_k(std::int64_t n, std::int64_t c, std::int64_t k);

// BIG-Bench Hard answers: the text after the last "the answer is" (any case) up to the
// end of that line, without a trailing period; without that phrase, the first non-empty
// line. Surrounding whitespace is removed.
std::string extract_bbh_answer(const std::string& text);

// GSM8K answers: the number after the last "The answer is" or "####", else the last
// number in the text; commas, a leading '$' and a trailing '.' are dropped ("1,000.00"
// -> 1000). nullopt when the text has no number.
std::optional<double> extract_number(const std::string& text);

// A GSM8K worked answer as a chain-of-thought exemplar: calculator annotations <<...>>
// removed and the final "#### N" line replaced by "The answer is N.".
std::string gsm8k_cot_answer(const std::string& worked);

// HumanEval's and MBPP's completion truncation: cut at the first of `stops`.
std::string truncate_at(const std::string& text, const std::vector<std::string>& stops);

}  // namespace palm
