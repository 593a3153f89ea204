#include "serve/server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include <sys/socket.h>

#include "base/check.h"
#include "base/utf8.h"
#include "infer/stop.h"
#include "serve/api.h"
#include "serve/metrics.h"

namespace palm {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// One completion (a prompt x one of its n samples) as its text grows.
struct Choice {
  std::string text;          // bytes generated so far, cut at a stop string
  std::size_t emitted = 0;   // bytes already handed to the client
  std::vector<std::int32_t> tokens;
  std::vector<double> logprobs;
  std::string finish;        // "stop" | "length" | "cancelled" | "error"
  std::string error;
  bool done = false;
  Clock::time_point last_token;
};

// A request's shared state between the engine thread (callbacks) and its HTTP thread.
struct Job {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Choice> choices;
  std::vector<std::shared_ptr<std::atomic<bool>>> cancel;
  std::size_t remaining = 0;
  StopMatcher stops{{}};
  Clock::time_point received = Clock::now();
  bool first_token_seen = false;
  std::uint64_t version = 0;  // bumped by every engine event: the stream writer waits for a change
  void cancel_all() {
    for (auto& c : cancel) c->store(true);
  }
};

}  // namespace

struct Server::Impl {
  Engine& engine;
  const Tokenizer& tok;
  const ModelConfig& config;
  ServeOptions o;
  httplib::Server svr;
  ServeMetrics metrics;
  std::atomic<std::uint64_t> next_id{1};
  std::atomic<bool> stopping{false};
  std::atomic<int> in_flight{0};  // completion requests whose response is not fully written
  int bound_port = 0;
  int listen_fd = -1;
  std::mutex log_mu;

  Impl(Engine& e, const Tokenizer& t, const ModelConfig& c, ServeOptions opts)
      : engine(e), tok(t), config(c), o(std::move(opts)) {}

  static std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
      if (c < 0x20 || c == 0x7f) {
        char b[8];
        std::snprintf(b, sizeof b, "\\x%02x", c);
        out += b;
      } else {
        out += char(c);
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- errors
  void error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(dump(e.body()) + "\n", "application/json");
  }

  // Compares in time independent of where the strings first differ (a timing oracle
  // would let a client find the key byte by byte).
  static bool same_secret(const std::string& a, const std::string& b) {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<std::size_t>(b.size(), 1)]);
    return diff == 0 && !b.empty();
  }

  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (o.api_key.empty()) return true;
    if (same_secret(req.get_header_value("Authorization"), "Bearer " + o.api_key)) return true;
    error(res, ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", "invalid_request_error", "",
                        "invalid_api_key"));
    return false;
  }

  // ---------------------------------------------------------------- the engine side
  // Text for the client: what cannot become part of a stop string and ends on a whole
  // character; all of it once the choice is done.
  static std::string take_ready(Choice& c, std::size_t hold, bool all) {
    std::size_t upto = all ? c.text.size() : (c.text.size() > hold ? c.text.size() - hold : 0);
    if (upto < c.emitted) upto = c.emitted;
    if (!all) upto = c.emitted + utf8_complete_prefix(std::string_view(c.text).substr(c.emitted, upto - c.emitted));
    std::string out = c.text.substr(c.emitted, upto - c.emitted);
    c.emitted = upto;
    return out;
  }

  EngineRequest engine_request(const std::shared_ptr<Job>& job, std::size_t index, const std::vector<std::int32_t>& prompt,
                               const CompletionParams& p, std::uint64_t seed, std::uint64_t stream) {
    EngineRequest r;
    r.prompt = prompt;
    r.max_tokens = p.max_tokens;
    r.sampling.temperature = p.temperature;
    r.sampling.top_p = p.top_p;
    r.sampling.seed = seed;
    r.stream = stream;
    r.cancelled = job->cancel[index];
    r.on_token = [this, job, index](std::int32_t token, double logprob) {
      const std::string piece = tok.decode({token});
      std::lock_guard<std::mutex> lock(job->mu);
      Choice& c = job->choices[index];
      const auto now = Clock::now();
      if (c.tokens.empty()) {
        if (!job->first_token_seen) metrics.time_to_first_token(since(job->received));
        job->first_token_seen = true;
      } else {
        metrics.inter_token(std::chrono::duration<double>(now - c.last_token).count());
      }
      c.last_token = now;
      c.tokens.push_back(token);
      c.logprobs.push_back(logprob);
      const std::size_t grown_from = c.text.size();
      c.text += piece;
      const std::size_t cut = job->stops.find(c.text, grown_from);
      if (cut != std::string::npos) c.text.resize(std::max(cut, c.emitted));  // the stop string is not output
      ++job->version;
      job->cv.notify_all();
      return cut != std::string::npos;
    };
    r.on_done = [job, index](const std::string& reason, const std::string& err) {
      std::lock_guard<std::mutex> lock(job->mu);
      Choice& c = job->choices[index];
      c.finish = reason;
      c.error = err;
      c.done = true;
      --job->remaining;
      ++job->version;
      job->cv.notify_all();
    };
    return r;
  }

  // ---------------------------------------------------------------- completions
  void completions(const httplib::Request& req, httplib::Response& res, bool chat) {
    const char* endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    // counted until the response is written: a stream hands its count to its releaser
    struct InFlight {
      std::atomic<int>& n;
      bool owned = true;
      explicit InFlight(std::atomic<int>& c) : n(c) { ++n; }
      ~InFlight() {
        if (owned) --n;
      }
    } flight(in_flight);
    try {
      if (!authorized(req, res)) return metrics.request(endpoint, res.status);
      const std::size_t bad_utf8 = find_invalid_utf8(req.body);
      if (bad_utf8 != std::string::npos)
        throw ApiError(400, "the request body is not valid UTF-8 (byte " + std::to_string(bad_utf8) + ")");
      const json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded()) throw ApiError(400, "the request body is not valid JSON");
      CompletionParams p = parse_completion_request(body, chat, ApiLimits{config.max_seq_len, o.max_n, config.vocab_size});
      const bool token_prompts = !p.prompt_ids.empty();
      for (const auto& ids : p.prompt_ids) p.prompts.push_back(tok.decode(ids));  // for echo
      if (p.model != o.model_name)
        throw ApiError(404, "the model '" + p.model + "' does not exist; this server serves '" + o.model_name + "'",
                       "invalid_request_error", "model", "model_not_found");
      std::vector<std::vector<std::int32_t>> prompts;
      std::int64_t prompt_tokens = 0;
      for (std::size_t i = 0; i < p.prompts.size(); ++i) {
        prompts.push_back(token_prompts ? p.prompt_ids[i] : tok.encode(p.prompts[i]));
        const auto n = std::int64_t(prompts.back().size());
        if (n >= config.max_seq_len)
          throw ApiError(400,
                         "prompt " + std::to_string(i) + " has " + std::to_string(n) + " tokens; the model's context holds " +
                             std::to_string(config.max_seq_len) + " (prompt and completion)",
                         "invalid_request_error", "prompt", "context_length_exceeded");
        prompt_tokens += n;
      }
      if (stopping) throw ApiError(503, "the server is shutting down", "server_error");
      auto job = std::make_shared<Job>();
      std::vector<std::string> stops = p.stop;
      if (chat) stops.push_back(kChatStop);
      job->stops = StopMatcher(stops);
      const std::size_t total = p.prompts.size() * std::size_t(p.n);
      job->choices.resize(total);
      job->remaining = total;
      for (std::size_t i = 0; i < total; ++i) job->cancel.push_back(std::make_shared<std::atomic<bool>>(false));
      // no seed: a fresh one per request (OpenAI's default is not reproducible)
      const std::uint64_t seed = p.has_seed ? p.seed : std::random_device{}() * 0x9E3779B97F4A7C15ull + next_id;
      for (std::size_t k = 0; k < total; ++k) {
        const std::size_t prompt = k / std::size_t(p.n), sample = k % std::size_t(p.n);
        // the stream id of `palm generate` for prompt `prompt`, sample `sample`
        const auto admit =
            engine.submit(engine_request(job, k, prompts[prompt], p, seed, prompt * 1000003ull + sample));
        if (admit != Engine::Admit::kAccepted) {
          job->cancel_all();
          {
            std::lock_guard<std::mutex> lock(job->mu);
            job->remaining -= total - k;  // never submitted
          }
          if (admit == Engine::Admit::kShuttingDown) throw ApiError(503, "the server is shutting down", "server_error");
          res.set_header("Retry-After", "1");
          throw ApiError(429, "the request queue is full (" + std::to_string(engine.max_batch()) + " running, " +
                                  std::to_string(engine.queued()) + " waiting); retry later",
                         "rate_limit_exceeded");
        }
      }
      metrics.tokens(prompt_tokens, 0);
      const std::string id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
      const std::int64_t created = std::int64_t(std::time(nullptr));
      if (p.stream) {
        stream_response(res, job, p, id, created, chat);
        flight.owned = false;  // the stream's releaser ends it
      } else {
        wait_and_respond(res, job, p, prompts, id, created, chat, prompt_tokens);
      }
      metrics.request(endpoint, res.status > 0 ? res.status : 200);  // httplib fills in 200 after the handler
    } catch (const ApiError& e) {
      error(res, e);
      metrics.request(endpoint, e.status);
    }
  }

  json logprobs_json(const Choice& c, const CompletionParams& p) {
    if (p.logprobs < 0) return nullptr;
    std::vector<std::string> pieces;
    std::vector<std::int64_t> offsets;
    std::int64_t at = 0;
    for (auto t : c.tokens) {
      pieces.push_back(tok.decode({t}));
      offsets.push_back(at);
      at += std::int64_t(pieces.back().size());
    }
    if (p.chat) {
      json content = json::array();
      for (std::size_t i = 0; i < pieces.size(); ++i)
        content.push_back({{"token", pieces[i]}, {"logprob", c.logprobs[i]}, {"top_logprobs", json::array()}});
      return {{"content", content}};
    }
    return {{"tokens", pieces}, {"token_logprobs", c.logprobs}, {"top_logprobs", nullptr}, {"text_offset", offsets}};
  }

  void wait_and_respond(httplib::Response& res, const std::shared_ptr<Job>& job, const CompletionParams& p,
                        const std::vector<std::vector<std::int32_t>>& prompts, const std::string& id, std::int64_t created,
                        bool chat, std::int64_t prompt_tokens) {
    std::unique_lock<std::mutex> lock(job->mu);
    job->cv.wait(lock, [&] { return job->remaining == 0; });
    json choices = json::array();
    std::int64_t completion_tokens = 0;
    for (std::size_t k = 0; k < job->choices.size(); ++k) {
      const Choice& c = job->choices[k];
      if (c.finish == "error") throw ApiError(500, "generation failed: " + c.error, "server_error");
      if (c.finish == "cancelled") throw ApiError(503, "the server is shutting down; the request was cancelled", "server_error");
      completion_tokens += std::int64_t(c.tokens.size());
      if (chat) {
        choices.push_back({{"index", k}, {"message", {{"role", "assistant"}, {"content", c.text}}},
                           {"logprobs", logprobs_json(c, p)}, {"finish_reason", c.finish}});
      } else {
        const std::string text = p.echo ? p.prompts[k / std::size_t(p.n)] + c.text : c.text;
        choices.push_back({{"text", text}, {"index", k}, {"logprobs", logprobs_json(c, p)}, {"finish_reason", c.finish}});
      }
    }
    metrics.tokens(0, completion_tokens);
    json r = {{"id", id},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", created},
              {"model", o.model_name},
              {"choices", choices},
              {"usage",
               {{"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion_tokens},
                {"total_tokens", prompt_tokens + completion_tokens}}}};
    (void)prompts;
    res.set_content(dump(r) + "\n", "application/json");
  }

  // Server-Sent Events in OpenAI's chunk format, ending with "data: [DONE]". The HTTP
  // thread writes; the engine never waits for it, so a slow reader slows only itself.
  void stream_response(httplib::Response& res, const std::shared_ptr<Job>& job, const CompletionParams& p,
                       const std::string& id, std::int64_t created, bool chat) {
    struct State {
      std::vector<bool> announced, finished;
      bool done = false;
      std::int64_t tokens = 0;
      std::uint64_t seen = ~0ull;  // the job version last written out
    };
    auto st = std::make_shared<State>();
    st->announced.assign(job->choices.size(), false);
    st->finished.assign(job->choices.size(), false);
    const std::string object = chat ? "chat.completion.chunk" : "text_completion";
    auto chunk = [=, this](std::size_t k, const std::string& text, const json& finish, const json& logprobs,
                           bool role) {
      json choice = {{"index", k}};
      if (chat) {
        json delta = json::object();
        if (role) delta["role"] = "assistant";
        if (!text.empty() || !role) delta["content"] = text;
        if (finish.is_string()) delta = json::object();
        choice["delta"] = delta;
      } else {
        choice["text"] = text;
      }
      choice["logprobs"] = logprobs;
      choice["finish_reason"] = finish;
      const json c = {{"id", id}, {"object", object}, {"created", created}, {"model", o.model_name}, {"choices", {choice}}};
      return "data: " + dump(c) + "\n\n";
    };
    res.set_chunked_content_provider(
        "text/event-stream",
        [=, this](std::size_t, httplib::DataSink& sink) {
          std::string out;
          {
            std::unique_lock<std::mutex> lock(job->mu);
            // new events, or a periodic check that the client is still there
            job->cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return job->version != st->seen; });
            st->seen = job->version;
            for (std::size_t k = 0; k < job->choices.size(); ++k) {
              Choice& c = job->choices[k];
              if (st->finished[k]) continue;
              if (chat && !st->announced[k]) {
                out += chunk(k, "", nullptr, nullptr, true);
                st->announced[k] = true;
              }
              if (!chat && !st->announced[k] && p.echo) {
                out += chunk(k, p.prompts[k / std::size_t(p.n)], nullptr, nullptr, false);
              }
              st->announced[k] = true;
              const std::string text = take_ready(c, job->stops.hold_back(), c.done);
              if (!text.empty()) out += chunk(k, text, nullptr, nullptr, false);
              if (c.done) {
                st->finished[k] = true;
                st->tokens += std::int64_t(c.tokens.size());
                if (c.finish == "stop" || c.finish == "length") {
                  out += chunk(k, "", c.finish, logprobs_json(c, p), false);
                } else {
                  const ApiError e(c.finish == "error" ? 500 : 503,
                                   c.finish == "error" ? "generation failed: " + c.error
                                                       : "the server is shutting down; the request was cancelled",
                                   "server_error");
                  out += "data: " + dump(e.body()) + "\n\n";
                }
              }
            }
            st->done = job->remaining == 0 && std::all_of(st->finished.begin(), st->finished.end(), [](bool b) { return b; });
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            job->cancel_all();  // the client is gone: its slots free at the next step
            return false;
          }
          if (st->done) {
            const std::string end = "data: [DONE]\n\n";
            sink.write(end.data(), end.size());
            metrics.tokens(0, st->tokens);
            sink.done();
            return true;
          }
          if (!sink.is_writable()) {
            job->cancel_all();
            return false;
          }
          return true;
        },
        [job, this](bool success) {
          if (!success) job->cancel_all();
          --in_flight;
        });
  }

  // ---------------------------------------------------------------- routes
  void routes() {
    svr.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) { completions(q, r, false); });
    svr.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& r) { completions(q, r, true); });
    svr.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& r) {
      if (!authorized(q, r)) return metrics.request("/v1/models", r.status);
      const json m = {{"id", o.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "palm"},
                      {"context_length", config.max_seq_len}};
      r.set_content(dump({{"object", "list"}, {"data", {m}}}) + "\n", "application/json");
      metrics.request("/v1/models", 200);
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& r) {
      r.set_content(dump({{"status", stopping ? "stopping" : "ok"},
                          {"active", engine.active()},
                          {"queued", engine.queued()}}) +
                        "\n",
                    "application/json");
      if (stopping) r.status = 503;
      metrics.request("/health", r.status);
    });
    svr.Get("/metrics", [this](const httplib::Request& q, httplib::Response& r) {
      if (!authorized(q, r)) return metrics.request("/metrics", r.status);  // it names traffic and load
      r.set_content(metrics.render(engine.queued(), engine.active(), engine.max_batch()), "text/plain; version=0.0.4");
      metrics.request("/metrics", 200);
    });
    auto not_allowed = [this](const char* allow) {
      return [this, allow](const httplib::Request& q, httplib::Response& r) {
        r.set_header("Allow", allow);
        error(r, ApiError(405, q.method + " is not allowed on " + q.path + " (use " + allow + ")"));
      };
    };
    for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
      svr.Get(path, not_allowed("POST"));
      svr.Put(path, not_allowed("POST"));
      svr.Delete(path, not_allowed("POST"));
    }
    for (const char* path : {"/v1/models", "/health", "/metrics"}) {
      svr.Post(path, not_allowed("GET"));
      svr.Put(path, not_allowed("GET"));
      svr.Delete(path, not_allowed("GET"));
    }
    // cpp-httplib 0.11 does not apply its body limit to chunked bodies (CVE-2025-46728:
    // a 64 MiB chunked prompt grew the server by 17.5 GB): refuse chunked request bodies
    // before they are read (OpenAI's clients send Content-Length), and close.
    svr.set_pre_routing_handler([this](const httplib::Request& q, httplib::Response& r) {
      std::string te = q.get_header_value("Transfer-Encoding");
      std::transform(te.begin(), te.end(), te.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      if (te.find("chunked") == std::string::npos) return httplib::Server::HandlerResponse::Unhandled;
      error(r, ApiError(411, "chunked request bodies are not accepted: send Content-Length (at most " +
                                 std::to_string(o.max_body_bytes) + " bytes)"));
      r.set_header("Connection", "close");
      metrics.request(q.path, 411);
      return httplib::Server::HandlerResponse::Handled;
    });
    // errors httplib produces itself (no route: 404; body too large: 413; ...)
    svr.set_error_handler([this](const httplib::Request& q, httplib::Response& r) {
      if (!r.body.empty()) return;
      if (r.status == 404) error(r, ApiError(404, "no route " + q.method + " " + q.path, "invalid_request_error", "", "not_found"));
      else if (r.status == 413)
        error(r, ApiError(413, "the request body exceeds " + std::to_string(o.max_body_bytes) + " bytes"));
      else error(r, ApiError(r.status, "HTTP error " + std::to_string(r.status)));
    });
    svr.set_exception_handler([this](const httplib::Request&, httplib::Response& r, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      error(r, ApiError(500, what, "server_error"));
    });
    svr.set_logger([this](const httplib::Request& q, const httplib::Response& r) {
      if (!o.log) return;
      std::lock_guard<std::mutex> l(log_mu);
      // the path and method as the client sent them may hold CR/LF (%0d%0a decodes to them):
      // escaped, so one request is one log line
      std::fprintf(stderr, "palm serve: %s %s %s %d %zu bytes\n", q.remote_addr.c_str(), printable(q.method).c_str(),
                   printable(q.path).c_str(), r.status, r.body.size());
    });
  }
};

Server::Server(Engine& engine, const Tokenizer& tok, const ModelConfig& config, ServeOptions o)
    : impl_(std::make_unique<Impl>(engine, tok, config, std::move(o))) {
  Impl& s = *impl_;
  PALM_CHECK(s.o.max_body_bytes > 0, "the body limit must be positive");
  s.svr.set_payload_max_length(std::size_t(s.o.max_body_bytes));
  s.svr.set_read_timeout(30, 0);
  s.svr.set_write_timeout(10, 0);  // a stalled reader is dropped (its slots free) after 10 s
  s.svr.set_keep_alive_timeout(5);
  // every accepted request may hold a connection thread for its whole stream
  const std::size_t threads = std::size_t(engine.max_batch() + engine.max_queue()) + 16;
  s.svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.svr.set_socket_options([&s](socket_t sock) {
    httplib::default_socket_options(sock);
    s.listen_fd = sock;  // the listening socket, for its backlog (bind)
  });
  s.routes();
}

Server::~Server() = default;

void Server::bind() {
  Impl& s = *impl_;
  if (s.o.port == 0) {
    s.bound_port = s.svr.bind_to_any_port(s.o.host);
    PALM_CHECK(s.bound_port > 0, "cannot bind ", s.o.host, " on any port");
  } else {
    PALM_CHECK(s.svr.bind_to_port(s.o.host, s.o.port), "cannot bind ", s.o.host, ":", s.o.port,
               " (in use, or not an address of this machine)");
    s.bound_port = s.o.port;
  }
  // cpp-httplib listens with a backlog of 5: a burst of clients would see dropped SYNs and
  // 1 s retransmits (measured: p99 time to first token ~1 s at 16 streams). Listening
  // again on the bound socket raises the backlog.
  if (s.listen_fd >= 0) ::listen(s.listen_fd, 1024);
  std::fprintf(stderr, "palm serve: listening on http://%s:%d (model '%s')\n", s.o.host.c_str(), s.bound_port,
               s.o.model_name.c_str());
  std::fflush(stderr);
}

int Server::port() const { return impl_->bound_port; }

void Server::listen() { impl_->svr.listen_after_bind(); }

void Server::stop() {
  Impl& s = *impl_;
  if (s.stopping.exchange(true)) return;  // from now on new completions are answered 503
  // In-flight requests finish (or are cancelled at the deadline) and their responses are
  // written out before the server stops: cpp-httplib cuts chunked responses short once
  // stopped, which would truncate the streams being finished.
  s.engine.shutdown(s.o.grace_seconds);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (s.in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  s.svr.stop();  // closes the listening socket; listen() returns
}

}  // namespace palm
