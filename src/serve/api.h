// The OpenAI API's request and error shapes (JSON <-> structs, nothing else): parsing
// and validation of /v1/completions and /v1/chat/completions bodies, and the plain
// chat template (docs/serving.md).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace palm {

// An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string type = "invalid_request_error", std::string param = "",
           std::string code = "")
      : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type, param, code;
  nlohmann::json body() const;
};

struct ChatMessage {
  std::string role, content;
};

struct CompletionParams {
  bool chat = false;
  std::string model;
  std::vector<std::string> prompts;     // completions: one or more; chat: the rendered conversation
  // completions given as token ids ("prompt": [1, 2, 3] or [[1, 2], [3]]), checked
  // against the vocabulary; `prompts` then stays empty until the server decodes them
  std::vector<std::vector<std::int32_t>> prompt_ids;
  std::vector<ChatMessage> messages;    // chat only
  std::int64_t max_tokens = 16;
  double temperature = 1.0;
  double top_p = 1.0;
  std::int64_t n = 1;
  std::vector<std::string> stop;
  std::uint64_t seed = 0;
  bool has_seed = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  int logprobs = -1;  // -1: none; completions: 0..5; chat: 0 (true) or top_logprobs
  bool echo = false;
};

struct ApiLimits {
  std::int64_t context = 0;      // the model's max_seq_len
  std::int64_t max_n = 16;       // completions per request (n x prompts)
  std::int64_t vocab_size = 0;   // token-id prompts must lie in [0, vocab_size)
};

// A text prompt longer than this many bytes cannot fit the context whatever its tokens
// (no piece of palm's vocabularies is longer): refused before it is tokenized.
inline constexpr std::int64_t kMaxBytesPerToken = 32;

// Throws ApiError(400, ...) naming the field for malformed or out-of-range input.
CompletionParams parse_completion_request(const nlohmann::json& body, bool chat, const ApiLimits& limits);

// "System: ...\n\nUser: ...\n\nAssistant: ...\n\n" for each message, then "Assistant:".
std::string render_chat(const std::vector<ChatMessage>& messages);
inline const char* kChatStop = "\nUser:";  // the next turn is never generated

}  // namespace palm
