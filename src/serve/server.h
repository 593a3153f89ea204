// `palm serve`: the OpenAI completions API over HTTP (serve/http.h), a thin adapter over
// the continuous-batching engine (src/infer/engine.h). Text concerns live here: prompt
// tokenization, incremental detokenization that never splits a UTF-8 character, stop
// strings, Server-Sent Events. docs/serving.md is the reference.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "infer/engine.h"
#include "tokenizer/tokenizer.h"

namespace palm {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0: any free port (printed when listening)
  std::string api_key;                    // non-empty: "Authorization: Bearer KEY" required
  std::string model_name = "palm";        // the id of /v1/models; requests must name it
  std::int64_t max_body_bytes = 1 << 20;  // larger bodies: 413
  std::int64_t max_n = 16;                // completions per request (prompts x n)
  int max_connections = 512;              // open connections; more are answered 503
  double grace_seconds = 10;              // SIGTERM: in-flight requests finish within this
  bool log = true;                        // one line per request on stderr
  std::vector<std::string> run_dirs;      // the runs /runs shows (serve/runs.h)
};

class Server {
 public:
  Server(Engine& engine, const Tokenizer& tok, const ModelConfig& config, ServeOptions o);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds (throws Error naming the address when it cannot) and prints the address.
  void bind();
  int port() const;
  // Serves until stop(); returns when every in-flight request has been answered.
  void listen();
  // Stops accepting; in-flight requests finish within grace_seconds, then are cancelled.
  // Safe to call from another thread (the SIGTERM watcher).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace palm
