// palm dashboard RUN_DIR...: the /runs page for runs without a model loaded (src/serve/dashboard.h).
#include <fmt/format.h>
#include <signal.h>

#include <mutex>

#include "base/signals.h"
#include "common.h"
#include "serve/dashboard.h"

namespace palm {

namespace {

struct DashboardCli {
  std::vector<std::string> dirs;
  DashboardOptions o;
  std::string api_key_file;
};

void run(DashboardCli& c) {
  std::mutex mu;
  Dashboard* serving = nullptr;
  bool stop_early = false;
  const StopSignals stop_signals([&](int) {
    std::lock_guard<std::mutex> lock(mu);
    if (serving) serving->stop();
    stop_early = true;
  });
  signal(SIGPIPE, SIG_IGN);
  c.o.api_key = resolve_api_key(c.o.api_key, c.api_key_file);
  Dashboard d(c.dirs, c.o);
  d.bind();
  {
    std::lock_guard<std::mutex> lock(mu);
    serving = &d;
    if (stop_early) d.stop();
  }
  d.listen();
  std::lock_guard<std::mutex> lock(mu);
  serving = nullptr;
  fmt::print(stderr, "palm dashboard: stopped\n");
}

}  // namespace

void register_dashboard(CLI::App& app) {
  auto c = std::make_shared<DashboardCli>();
  auto* cmd = app.add_subcommand(
      "dashboard", "The runs page (loss curves, config, model card, evals) for run directories, in a browser");
  cmd->add_option("dirs", c->dirs, "Run directories, or directories holding runs")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--host", c->o.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", c->o.port, "Port (0: any free port, printed)")->capture_default_str()->check(integer_in(0, 65535));
  auto* key = cmd->add_option("--api-key", c->o.api_key,
                              "Require 'Authorization: Bearer KEY' for the runs API (prefer --api-key-file or PALM_API_KEY)");
  cmd->add_option("--api-key-file", c->api_key_file, "Read the API key from the first line of this file")->excludes(key);
  cmd->add_option("--max-connections", c->o.max_connections, "Open connections; more are answered 503 at once")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd->add_flag("--quiet", [c](std::int64_t) { c->o.log = false; }, "No per-request log lines");
  cmd->callback([c] { run(*c); });
}

}  // namespace palm
