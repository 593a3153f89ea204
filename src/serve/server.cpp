#include "serve/server.h"

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

#include "base/check.h"
#include "base/utf8.h"
#include "infer/stop.h"
#include "serve/api.h"
#include "serve/http.h"
#include "serve/metrics.h"
#include "serve/web.h"

namespace palm {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A whole (non-streamed) response as a handler builds it.
struct Reply {
  int status = 200;
  std::string body;
  std::string type = "application/json";
  HttpHeaders headers;
};

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
  std::unique_ptr<HttpServer> http;
  WebRoutes web;
  ServeMetrics metrics;
  std::atomic<std::uint64_t> next_id{1};
  std::atomic<bool> stopping{false};
  int bound_port = 0;
  std::mutex log_mu;

  Impl(Engine& e, const Tokenizer& t, const ModelConfig& c, ServeOptions opts)
      : engine(e), tok(t), config(c), o(std::move(opts)), web(o.run_dirs, true) {}

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
  void error(Reply& res, const ApiError& e) {
    res.status = e.status;
    res.body = dump(e.body()) + "\n";
    res.type = "application/json";
  }

  bool authorized(const HttpRequest& req) const { return api_key_accepted(req, o.api_key); }

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
  void completions(HttpExchange& x, bool chat) {
    const HttpRequest& req = x.request();
    Reply res;
    const char* endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    try {
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
          res.headers.emplace_back("Retry-After", "1");
          throw ApiError(429, "the request queue is full (" + std::to_string(engine.max_batch()) + " running, " +
                                  std::to_string(engine.queued()) + " waiting); retry later",
                         "rate_limit_exceeded");
        }
      }
      metrics.tokens(prompt_tokens, 0);
      const std::string id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
      const std::int64_t created = std::int64_t(std::time(nullptr));
      if (p.stream) {
        stream_response(x, job, p, id, created, chat, prompt_tokens);
        metrics.request(endpoint, 200);
        return;
      }
      if (!wait_for_job(x, job)) {  // the client left: nothing to answer
        std::int64_t generated = 0;  // but what was generated for it counts
        {
          std::lock_guard<std::mutex> lock(job->mu);
          for (const Choice& c : job->choices) generated += std::int64_t(c.tokens.size());
        }
        metrics.tokens(0, generated);
        metrics.request(endpoint, 499);
        return x.respond(499, "", "", {{"Connection", "close"}});
      }
      respond_whole(res, job, p, id, created, chat, prompt_tokens);
      metrics.request(endpoint, res.status);
    } catch (const ApiError& e) {
      error(res, e);
      metrics.request(endpoint, e.status);
    }
    x.respond(res.status, res.type, res.body, res.headers);
  }

  // Waits for every choice of a non-streamed request; false if the client disconnected
  // first (its choices are cancelled then: the engine frees their slots at the next step,
  // instead of computing for nobody while others get 429). The client is looked at every
  // 20 ms (one poll(2)): at 100 ms a small model decoded ~125 tokens per abandoned request
  // on one thread before its slot was freed.
  bool wait_for_job(HttpExchange& x, const std::shared_ptr<Job>& job) {
    std::unique_lock<std::mutex> lock(job->mu);
    while (!job->cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return job->remaining == 0; })) {
      if (x.client_gone()) {
        job->cancel_all();
        job->cv.wait(lock, [&] { return job->remaining == 0; });
        return false;
      }
    }
    return true;
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

  void respond_whole(Reply& res, const std::shared_ptr<Job>& job, const CompletionParams& p, const std::string& id,
                     std::int64_t created, bool chat, std::int64_t prompt_tokens) {
    std::unique_lock<std::mutex> lock(job->mu);
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
    res.body = dump(r) + "\n";
  }

  // Server-Sent Events in OpenAI's chunk format, ending with "data: [DONE]". This
  // connection's thread writes; the engine never waits for it, so a slow reader slows only
  // itself, and a client that leaves (or stalls past the write limit) cancels its choices.
  void stream_response(HttpExchange& x, const std::shared_ptr<Job>& job, const CompletionParams& p, const std::string& id,
                       std::int64_t created, bool chat, std::int64_t prompt_tokens) {
    std::vector<bool> announced(job->choices.size(), false), finished(job->choices.size(), false);
    std::int64_t tokens = 0;
    std::uint64_t seen = ~0ull;  // the job version last written out
    const std::string object = chat ? "chat.completion.chunk" : "text_completion";
    auto chunk = [&](std::size_t k, const std::string& text, const json& finish, const json& logprobs, bool role) {
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
    if (!x.start_stream("text/event-stream")) return job->cancel_all();
    for (bool done = false; !done;) {
      std::string out;
      {
        std::unique_lock<std::mutex> lock(job->mu);
        // new events, or a periodic check that the client is still there
        job->cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return job->version != seen; });
        seen = job->version;
        for (std::size_t k = 0; k < job->choices.size(); ++k) {
          Choice& c = job->choices[k];
          if (finished[k]) continue;
          if (chat && !announced[k]) out += chunk(k, "", nullptr, nullptr, true);
          if (!chat && !announced[k] && p.echo) out += chunk(k, p.prompts[k / std::size_t(p.n)], nullptr, nullptr, false);
          announced[k] = true;
          const std::string text = take_ready(c, job->stops.hold_back(), c.done);
          if (!text.empty()) out += chunk(k, text, nullptr, nullptr, false);
          if (c.done) {
            finished[k] = true;
            tokens += std::int64_t(c.tokens.size());
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
        done = job->remaining == 0 && std::all_of(finished.begin(), finished.end(), [](bool b) { return b; });
      }
      if (done && p.include_usage) {  // OpenAI's shape: no choices, the whole request's usage
        const json u = {{"id", id},
                        {"object", object},
                        {"created", created},
                        {"model", o.model_name},
                        {"choices", json::array()},
                        {"usage",
                         {{"prompt_tokens", prompt_tokens},
                          {"completion_tokens", tokens},
                          {"total_tokens", prompt_tokens + tokens}}}};
        out += "data: " + dump(u) + "\n\n";
      }
      if (done) out += "data: [DONE]\n\n";
      if (!x.write(out)) {  // gone or stalled: its slots free at the next step
        job->cancel_all();
        std::unique_lock<std::mutex> lock(job->mu);
        job->cv.wait(lock, [&] { return job->remaining == 0; });
        // the tokens generated before the client left count too
        std::int64_t generated = 0;
        for (std::size_t k = 0; k < job->choices.size(); ++k)
          if (!finished[k]) generated += std::int64_t(job->choices[k].tokens.size());
        metrics.tokens(0, tokens + generated);
        return;
      }
    }
    x.finish();
    metrics.tokens(0, tokens);
  }

  // ---------------------------------------------------------------- routes
  // Refused before the body is read: unknown routes, wrong methods, a missing key.
  HttpServer::Refusal precheck(const HttpRequest& q) {
    static const std::vector<std::pair<std::string, std::string>> routes = {
        {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"}, {"/v1/models", "GET"}, {"/health", "GET"},
        {"/metrics", "GET"}};
    HttpServer::Refusal r;
    if (web.owns(q.path)) {  // the pages, their assets and the runs API: GET only
      if (q.method != "GET") {
        r.status = 405;
        r.message = q.method + " is not allowed on " + q.path + " (use GET)";
        r.headers.emplace_back("Allow", "GET");
      } else if (WebRoutes::needs_key(q.path) && !authorized(q)) {
        r.status = 401;
        r.message = "missing or wrong API key (Authorization: Bearer KEY)";
      }
      if (r.status) metrics.request(web_label(q.path), r.status);
      return r;
    }
    const auto route = std::find_if(routes.begin(), routes.end(), [&](const auto& e) { return e.first == q.path; });
    if (route == routes.end()) {
      r.status = 404;
      r.message = "no route " + q.method + " " + q.path;
    } else if (q.method != route->second) {
      r.status = 405;
      r.message = q.method + " is not allowed on " + q.path + " (use " + route->second + ")";
      r.headers.emplace_back("Allow", route->second);
    } else if (q.path != "/health" && !authorized(q)) {  // /metrics too: it names traffic and load
      r.status = 401;
      r.message = "missing or wrong API key (Authorization: Bearer KEY)";
    }
    if (r.status) metrics.request(route == routes.end() ? "other" : q.path, r.status);
    return r;
  }

  // The body of an error the HTTP layer or precheck() answers with.
  std::string error_body(int status, const std::string& message) const {
    if (status == 404) return dump(ApiError(404, message, "invalid_request_error", "", "not_found").body()) + "\n";
    if (status == 401)
      return dump(ApiError(401, message, "invalid_request_error", "", "invalid_api_key").body()) + "\n";
    return dump(ApiError(status, message, status >= 500 ? "server_error" : "invalid_request_error").body()) + "\n";
  }

  // The metrics label of a web route: few values, whatever paths clients ask for.
  static std::string web_label(const std::string& path) { return WebRoutes::needs_key(path) ? "/api/runs" : "/"; }

  void handle(HttpExchange& x) {
    const std::string& path = x.request().path;
    try {
      if (web.owns(path)) {
        web.handle(x);
        return metrics.request(web_label(path), x.status());
      }
      if (path == "/v1/completions") return completions(x, false);
      if (path == "/v1/chat/completions") return completions(x, true);
      if (path == "/v1/models") {
        const json m = {{"id", o.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "palm"},
                        {"context_length", config.max_seq_len}};
        x.respond(200, "application/json", dump({{"object", "list"}, {"data", {m}}}) + "\n");
      } else if (path == "/health") {
        x.respond(stopping ? 503 : 200, "application/json",
                  dump({{"status", stopping ? "stopping" : "ok"}, {"active", engine.active()}, {"queued", engine.queued()}}) +
                      "\n");
      } else if (path == "/metrics") {
        x.respond(200, "text/plain; version=0.0.4", metrics.render(engine.queued(), engine.active(), engine.max_batch()));
      }
      metrics.request(path, x.status());
    } catch (const std::exception& e) {
      if (!x.responded()) x.respond(500, "application/json", error_body(500, e.what()));
    }
  }

  void log(const HttpRequest& q, int status, std::size_t bytes) {
    if (!o.log) return;
    std::lock_guard<std::mutex> l(log_mu);
    // the path and method as the client sent them may hold CR/LF (%0d%0a decodes to them):
    // escaped, so one request is one log line
    std::fprintf(stderr, "palm serve: %s %s %s %d %zu bytes\n", q.remote.c_str(), printable(q.method).c_str(),
                 printable(q.path).c_str(), status, bytes);
  }
};

Server::Server(Engine& engine, const Tokenizer& tok, const ModelConfig& config, ServeOptions o)
    : impl_(std::make_unique<Impl>(engine, tok, config, std::move(o))) {
  Impl& s = *impl_;
  PALM_CHECK(s.o.max_body_bytes > 0, "the body limit must be positive");
  HttpLimits limits;
  limits.max_body_bytes = s.o.max_body_bytes;
  limits.max_connections = s.o.max_connections;
  s.http = std::make_unique<HttpServer>(
      limits, [&s](HttpExchange& x) { s.handle(x); }, [&s](const HttpRequest& q) { return s.precheck(q); },
      [&s](int status, const std::string& m) { return s.error_body(status, m); },
      [&s](const HttpRequest& q, int status, std::size_t bytes) { s.log(q, status, bytes); });
}

Server::~Server() = default;

void Server::bind() {
  Impl& s = *impl_;
  s.bound_port = s.http->bind(s.o.host, s.o.port);
  std::fprintf(stderr, "palm serve: listening on http://%s:%d (model '%s')\n", s.o.host.c_str(), s.bound_port,
               s.o.model_name.c_str());
  std::fflush(stderr);
}

int Server::port() const { return impl_->bound_port; }

void Server::listen() { impl_->http->run(); }

void Server::stop() {
  Impl& s = *impl_;
  if (s.stopping.exchange(true)) return;  // from now on new completions are answered 503
  // In-flight requests finish (or are cancelled at the deadline) and their responses are
  // written out; meanwhile idle connections and requests still arriving are closed.
  s.http->stop();
  s.engine.shutdown(s.o.grace_seconds);
}

}  // namespace palm
