#include "serve/api.h"

#include <cmath>

namespace palm {

using json = nlohmann::json;

json ApiError::body() const {
  json e = {{"message", what()}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}};
  return {{"error", e}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, "'" + param + "': " + message, "invalid_request_error", param);
}

bool present(const json& b, const char* k) { return b.contains(k) && !b[k].is_null(); }

double number_in(const json& b, const char* k, double lo, double hi, double dflt) {
  if (!present(b, k)) return dflt;
  if (!b[k].is_number()) bad(k, "must be a number");
  const double v = b[k].get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) bad(k, "must be in [" + json(lo).dump() + ", " + json(hi).dump() + "]");
  return v;
}

std::int64_t integer_in(const json& b, const char* k, std::int64_t lo, std::int64_t hi, std::int64_t dflt) {
  if (!present(b, k)) return dflt;
  if (!b[k].is_number_integer()) bad(k, "must be an integer");
  const std::int64_t v = b[k].get<std::int64_t>();
  if (v < lo || v > hi) bad(k, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  return v;
}

bool boolean(const json& b, const char* k, bool dflt) {
  if (!present(b, k)) return dflt;
  if (!b[k].is_boolean()) bad(k, "must be true or false");
  return b[k].get<bool>();
}

// Options palm does not implement: accepted at their neutral value, refused otherwise.
void neutral_only(const json& b) {
  for (const char* k : {"presence_penalty", "frequency_penalty"})
    if (present(b, k) && (!b[k].is_number() || b[k].get<double>() != 0.0)) bad(k, "is not supported by palm (only 0)");
  if (present(b, "logit_bias") && (!b["logit_bias"].is_object() || !b["logit_bias"].empty()))
    bad("logit_bias", "is not supported by palm");
  if (present(b, "best_of") && (!b["best_of"].is_number_integer() || b["best_of"].get<std::int64_t>() != 1))
    bad("best_of", "is not supported by palm (only 1)");
  if (present(b, "suffix")) bad("suffix", "is not supported by palm");
  if (present(b, "tools") || present(b, "functions")) bad(present(b, "tools") ? "tools" : "functions", "is not supported by palm");
  if (present(b, "user") && !b["user"].is_string()) bad("user", "must be a string");
  if (present(b, "stream_options") && !b["stream_options"].is_object()) bad("stream_options", "must be an object");
}

}  // namespace

CompletionParams parse_completion_request(const json& b, bool chat, const ApiLimits& limits) {
  if (!b.is_object()) throw ApiError(400, "the request body must be a JSON object");
  CompletionParams p;
  p.chat = chat;
  if (!present(b, "model") || !b["model"].is_string()) bad("model", "is required and must be a string");
  p.model = b["model"].get<std::string>();
  neutral_only(b);
  if (chat) {
    if (!present(b, "messages") || !b["messages"].is_array() || b["messages"].empty())
      bad("messages", "must be a non-empty array of {role, content}");
    for (std::size_t i = 0; i < b["messages"].size(); ++i) {
      const json& m = b["messages"][i];
      const std::string where = "messages[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) bad(where + ".role", "must be a string");
      const std::string role = m["role"];
      if (role != "system" && role != "user" && role != "assistant")
        bad(where + ".role", "must be system, user or assistant, got '" + role + "'");
      if (!m.contains("content") || !m["content"].is_string()) bad(where + ".content", "must be a string");
      p.messages.push_back({role, m["content"].get<std::string>()});
    }
    p.prompts = {render_chat(p.messages)};
  } else {
    if (!present(b, "prompt")) bad("prompt", "is required");
    const json& pr = b["prompt"];
    auto ids = [&](const json& a) {  // one prompt of token ids
      std::vector<std::int32_t> out;
      for (const auto& x : a) {
        if (!x.is_number_integer() || x.get<std::int64_t>() < 0 || x.get<std::int64_t>() >= limits.vocab_size)
          bad("prompt", "token ids must be integers in [0, " + std::to_string(limits.vocab_size) + "), got " + x.dump());
        out.push_back(std::int32_t(x.get<std::int64_t>()));
      }
      if (std::int64_t(out.size()) >= limits.context)
        bad("prompt", "has " + std::to_string(out.size()) + " tokens; the model's context holds " + std::to_string(limits.context));
      return out;
    };
    if (pr.is_string()) {
      p.prompts = {pr.get<std::string>()};
    } else if (pr.is_array() && !pr.empty() && std::all_of(pr.begin(), pr.end(), [](const json& x) { return x.is_string(); })) {
      for (const auto& x : pr) p.prompts.push_back(x.get<std::string>());
    } else if (pr.is_array() && !pr.empty() && std::all_of(pr.begin(), pr.end(), [](const json& x) { return x.is_number(); })) {
      p.prompt_ids = {ids(pr)};
    } else if (pr.is_array() && !pr.empty() &&
               std::all_of(pr.begin(), pr.end(), [](const json& x) { return x.is_array() && !x.empty(); })) {
      for (const auto& x : pr) p.prompt_ids.push_back(ids(x));
    } else {
      bad("prompt", "must be a string, a non-empty array of strings, an array of token ids or an array of such arrays");
    }
    for (const auto& s : p.prompts) {
      if (s.empty()) bad("prompt", "must not be empty");
      if (std::int64_t(s.size()) > kMaxBytesPerToken * limits.context)
        bad("prompt", "has " + std::to_string(s.size()) + " bytes, more than a context of " + std::to_string(limits.context) +
                          " tokens can hold; refused before tokenizing");
    }
  }
  const char* max_key = chat && present(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  p.max_tokens = integer_in(b, max_key, 1, limits.context, chat ? limits.context : 16);
  p.temperature = number_in(b, "temperature", 0.0, 2.0, 1.0);
  p.top_p = number_in(b, "top_p", 1e-9, 1.0, 1.0);
  p.n = integer_in(b, "n", 1, limits.max_n, 1);
  const std::size_t n_prompts = p.prompts.size() + p.prompt_ids.size();
  if (std::int64_t(n_prompts) * p.n > limits.max_n)
    bad("n", std::to_string(n_prompts) + " prompts x n " + std::to_string(p.n) + " exceeds " +
                 std::to_string(limits.max_n) + " completions per request");
  if (present(b, "stop")) {
    const json& s = b["stop"];
    if (s.is_string()) {
      p.stop = {s.get<std::string>()};
    } else if (s.is_array() && s.size() <= 4 && std::all_of(s.begin(), s.end(), [](const json& x) { return x.is_string(); })) {
      for (const auto& x : s) p.stop.push_back(x.get<std::string>());
    } else {
      bad("stop", "must be a string or an array of at most 4 strings");
    }
    for (const auto& s2 : p.stop)
      if (s2.empty()) bad("stop", "strings must not be empty");
  }
  if (present(b, "seed")) {
    if (!b["seed"].is_number_integer()) bad("seed", "must be an integer");
    p.seed = b["seed"].is_number_unsigned() ? b["seed"].get<std::uint64_t>() : std::uint64_t(b["seed"].get<std::int64_t>());
    p.has_seed = true;
  }
  p.stream = boolean(b, "stream", false);
  if (present(b, "stream_options")) {
    if (!p.stream) bad("stream_options", "is only allowed with stream: true");
    const json& so = b["stream_options"];
    if (so.contains("include_usage") && !so["include_usage"].is_boolean())
      bad("stream_options.include_usage", "must be true or false");
    p.include_usage = so.value("include_usage", false);
  }
  if (chat) {
    if (boolean(b, "logprobs", false)) p.logprobs = int(integer_in(b, "top_logprobs", 0, 0, 0));
  } else {
    p.logprobs = int(integer_in(b, "logprobs", 0, 5, -1));
    p.echo = boolean(b, "echo", false);
    if (p.echo && p.logprobs >= 0) bad("echo", "with logprobs is not supported by palm (prompt log-probabilities: palm score)");
  }
  return p;
}

std::string render_chat(const std::vector<ChatMessage>& messages) {
  std::string s;
  for (const auto& m : messages) {
    const std::string who = m.role == "system" ? "System" : m.role == "user" ? "User" : "Assistant";
    s += who + ": " + m.content + "\n\n";
  }
  return s + "Assistant:";
}

}  // namespace palm
