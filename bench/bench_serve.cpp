// palm bench serve: `palm serve` in process on loopback, driven by N concurrent
// streaming clients (closed loop: each sends its next request when the last one ends).
// Aggregate tokens/s and p50/p99 time to first token and inter-token latency at each
// concurrency, against the same requests run one at a time (concurrency 1).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/check.h"
#include "base/threads.h"
#include "common.h"
#include "infer/engine.h"
#include "kernels/backend.h"
#include "model/model_io.h"
#include "model/params.h"
#include "serve/server.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace palm {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct BenchServeOptions {
  std::string model, tokenizer, preset = "small", concurrency = "1,4,16,64";
  bool preset_given = false;  // --preset on the command line (with --model it must agree)
  std::int64_t tokens = 32, requests_per_client = 4;
  int threads = 0;
  bool json = false;
};

struct StreamTiming {
  double ttft = 0;
  std::vector<double> gaps;
  std::int64_t tokens = 0;
  bool ok = false;
};

// One streamed completion over a raw socket; the time each SSE event arrived.
StreamTiming stream_once(int port, const std::string& body) {
  StreamTiming t;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const auto start = Clock::now();
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return t;
  }
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                          "Content-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string raw;
  std::size_t scanned = 0;
  double last = -1;
  char buf[16384];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
    raw.append(buf, std::size_t(n));
    const double now = std::chrono::duration<double>(Clock::now() - start).count();
    for (std::size_t at; (at = raw.find("data: ", scanned)) != std::string::npos;) {
      const std::size_t end = raw.find("\n\n", at);
      if (end == std::string::npos) break;
      scanned = end + 2;
      const std::string ev = raw.substr(at + 6, end - at - 6);
      if (ev == "[DONE]") {
        t.ok = true;
        continue;
      }
      const auto j = json::parse(ev, nullptr, false);
      if (j.is_discarded() || !j.contains("choices")) continue;
      const json& c = j["choices"][0];
      if (!c["logprobs"].is_null()) t.tokens = std::int64_t(c["logprobs"]["tokens"].size());
      if (c["text"].get<std::string>().empty()) continue;
      if (last < 0) t.ttft = now;
      else t.gaps.push_back(now - last);
      last = now;
    }
  }
  ::close(fd);
  return t;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, std::size_t(q * double(v.size() - 1) + 0.5))];
}

struct Row {
  int concurrency;
  std::int64_t requests, tokens, failed;
  double seconds, tps, ttft50, ttft99, itl50, itl99;
};

Row run_load(int port, int concurrency, std::int64_t per_client, const std::string& model, std::int64_t tokens) {
  std::vector<std::thread> clients;
  std::vector<StreamTiming> all(std::size_t(concurrency * per_client));
  const auto t0 = Clock::now();
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&, c] {
      for (std::int64_t r = 0; r < per_client; ++r) {
        const json body = {{"model", model},     {"prompt", "def f(x):\n    return x * " + std::to_string(c * 100 + r)},
                           {"max_tokens", tokens}, {"temperature", 1.0}, {"seed", c * 1000 + r},
                           {"stream", true},     {"logprobs", 0}};
        all[std::size_t(c * per_client + r)] = stream_once(port, body.dump());
      }
    });
  }
  for (auto& t : clients) t.join();
  Row row{concurrency, std::int64_t(all.size()), 0, 0, std::chrono::duration<double>(Clock::now() - t0).count(), 0, 0, 0, 0, 0};
  std::vector<double> ttft, gaps;
  for (const auto& s : all) {
    if (!s.ok) ++row.failed;
    row.tokens += s.tokens;
    ttft.push_back(s.ttft);
    gaps.insert(gaps.end(), s.gaps.begin(), s.gaps.end());
  }
  row.tps = double(row.tokens) / row.seconds;
  row.ttft50 = percentile(ttft, 0.5);
  row.ttft99 = percentile(ttft, 0.99);
  row.itl50 = percentile(gaps, 0.5);
  row.itl99 = percentile(gaps, 0.99);
  return row;
}

void run(const BenchServeOptions& o) {
  set_threads(o.threads);
  std::vector<int> levels;
  {
    std::stringstream ss(o.concurrency);
    for (std::string x; std::getline(ss, x, ',');) {
      levels.push_back(std::stoi(x));
      PALM_CHECK(levels.back() >= 1 && levels.back() <= 256, "--concurrency values must be in [1, 256]");
    }
  }
  PALM_CHECK(!levels.empty() && levels[0] == 1, "--concurrency must start with 1 (the one-at-a-time reference)");
  std::unique_ptr<Weights> w;
  std::unique_ptr<Tokenizer> tok;
  std::string tmp, what;
  if (!o.model.empty()) {
    std::string stored;
    const std::string path = resolve_model(o.model, &stored);
    tok = Tokenizer::load(o.tokenizer.empty() ? stored : o.tokenizer);
    if (o.preset_given) {
      const ModelConfig given = preset(o.preset);
      check_weights_config(path, &given, "--preset " + o.preset);
    }
    w = load_model(process_backend(), path);
    what = path;
  } else {
    // random weights of a preset, with a tokenizer of its vocabulary trained on Python's sources
    const ModelConfig c = ConfigChoice{o.preset, ""}.resolve();
    w = std::make_unique<Weights>(process_backend(), c);
    init_weights(process_backend(), *w, 1);
    tmp = (fs::temp_directory_path() / ("palm_bench_serve_" + std::to_string(::getpid()))).string();
    fs::create_directories(tmp);
    TokenizerTrainOptions t;
    t.inputs = {"/usr/lib/python3.11/**/*.py"};
    t.vocab_size = c.vocab_size;
    t.max_sentences = 50000;  // enough for a working vocabulary; the text does not matter here
    t.out = tmp + "/tok";
    fmt::print(stderr, "training a {}-piece tokenizer for the random {} model...\n", c.vocab_size, o.preset);
    train_tokenizer(t);
    tok = Tokenizer::load(t.out);
    what = o.preset + " (random weights)";
  }
  PALM_CHECK(tok->vocab_size() == w->config.vocab_size, "tokenizer and model vocabularies differ");
  const int max_level = *std::max_element(levels.begin(), levels.end());
  const auto be = make_backend();
  Engine engine(*be, *w, max_level, max_level);
  ServeOptions so;
  so.port = 0;
  so.model_name = "bench";
  so.log = false;
  Server server(engine, *tok, w->config, so);
  server.bind();
  std::thread listener([&] { server.listen(); });
  run_load(server.port(), 1, 1, "bench", 4);  // warm-up
  std::vector<Row> rows;
  for (int n : levels) {
    fmt::print(stderr, "{} concurrent streams...\n", n);
    rows.push_back(run_load(server.port(), n, o.requests_per_client * (n == 1 ? std::int64_t(8) : 1), "bench", o.tokens));
  }
  server.stop();
  listener.join();
  if (!tmp.empty()) fs::remove_all(tmp);

  fmt::print("bench serve  model {}  {} tokens per request  threads {}\n", what, o.tokens, current_threads());
  fmt::print("  {:>11} {:>8} {:>7} {:>11} {:>8} {:>10} {:>10} {:>10} {:>10}\n", "concurrency", "requests", "failed",
             "tokens/s", "vs 1", "ttft p50", "ttft p99", "itl p50", "itl p99");
  for (const auto& r : rows)
    fmt::print("  {:>11} {:>8} {:>7} {:>11.1f} {:>7.2f}x {:>9.1f}ms {:>9.1f}ms {:>9.1f}ms {:>9.1f}ms\n", r.concurrency,
               r.requests, r.failed, r.tps, r.tps / rows[0].tps, 1e3 * r.ttft50, 1e3 * r.ttft99, 1e3 * r.itl50,
               1e3 * r.itl99);
  if (o.json) {
    json j = {{"model", what}, {"tokens_per_request", o.tokens}, {"threads", current_threads()}, {"levels", json::array()}};
    for (const auto& r : rows)
      j["levels"].push_back({{"concurrency", r.concurrency}, {"requests", r.requests}, {"failed", r.failed},
                             {"tokens_per_s", r.tps}, {"speedup_vs_one_at_a_time", r.tps / rows[0].tps},
                             {"ttft_p50_s", r.ttft50}, {"ttft_p99_s", r.ttft99}, {"itl_p50_s", r.itl50},
                             {"itl_p99_s", r.itl99}});
    fmt::print("{}\n", j.dump());
  }
}

}  // namespace

void register_bench_serve(CLI::App& bench) {
  auto o = std::make_shared<BenchServeOptions>();
  auto* cmd = bench.add_subcommand("serve", "HTTP serving: tokens/s, TTFT and inter-token latency by concurrency");
  cmd->add_option("--model", o->model, "A trained model (default: random weights of --preset)");
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer for --model (default: the one stored with it)");
  auto* preset_option = cmd->add_option("--preset", o->preset, "Preset for random weights")->capture_default_str();
  cmd->add_option("--concurrency", o->concurrency, "Concurrent streams, comma-separated, starting with 1")->capture_default_str();
  cmd->add_option("--tokens", o->tokens, "Tokens per request")->capture_default_str();
  cmd->add_option("--requests-per-client", o->requests_per_client,
                  "Requests each client sends in turn (concurrency 1: 8x this)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Compute threads (default: all cores)");
  cmd->add_flag("--json", o->json, "End with one JSON line");
  cmd->callback([o, preset_option] {
    o->preset_given = preset_option->count() > 0;
    run(*o);
  });
}

}  // namespace palm
