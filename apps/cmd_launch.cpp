// palm launch: the controller that runs, watches and heals a training job
// (src/launch/controller.h), and palm launch status.
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "common.h"
#include "launch/controller.h"

namespace palm {

namespace {

struct StatusCli {
  std::string run;
  bool json = false;
};

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = std::lround(s);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60) : fmt::format("{}m{:02}s", t / 60, t % 60);
}

void print_status(const StatusCli& c) {
  const nlohmann::json s = launch_status(c.run);
  if (c.json) {
    fmt::print("{}\n", s.dump());
    return;
  }
  const auto& l = s["layout"];
  fmt::print("run:      {}\nstate:    {}\n", c.run, s.value("state", "?"));
  fmt::print("step:     {} of {}", s.value("step", std::int64_t(0)), s.value("total_steps", std::int64_t(0)));
  if (s.contains("loss")) fmt::print("  (loss {:.4f})", s["loss"].get<double>());
  fmt::print("\n");
  if (s.contains("steps_per_s"))
    fmt::print("rate:     {:.3f} steps/s, {:.0f} tokens/s, ETA {}\n", s["steps_per_s"].get<double>(),
               s.value("tokens_per_s", 0.0), duration(s.value("eta_s", -1.0)));
  fmt::print("restarts: {} of at most {}\n", s.value("restarts", 0), s.value("max_restarts", 0));
  fmt::print("layout:   {} ranks (tp {}, pods {}, data {}) through {}", l.value("np", 0), l.value("tp", 1), l.value("pods", 1),
             l.value("data", 1), l.value("launcher", "?"));
  if (!l["hosts"].empty()) {
    fmt::print(" on");
    for (const auto& h : l["hosts"]) fmt::print(" {}:{}", h.value("host", "?"), h.value("slots", 1));
  }
  fmt::print("\n");
  for (const auto& f : s["failures"])
    fmt::print("failure:  attempt {}: rank {}{}{}: {} ({})\n", f.value("attempt", 0), f.value("rank", -1),
               f.value("host", "").empty() ? "" : " on ", f.value("host", ""), f.value("cause", "?"), f.value("detail", ""));
}

}  // namespace

void register_launch(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  auto* cmd = app.add_subcommand("launch", "Run a training job under a controller that watches and heals it (docs/scaling.md)");
  cmd->footer("Example: palm launch --out RUN --np 4 --hostfile hosts --min-np 2 -- train --preset small --data D --steps 1000");
  cmd->add_option("--out", o->run, "Run directory (resumed when it holds a run)");
  cmd->add_option("--np", o->np, "Ranks")->check(integer_in(1, 1 << 20));
  cmd->add_option("--hostfile", o->hostfile, "OpenMPI hostfile ('host slots=N' per line); without it: this host, or Slurm's allocation under srun");
  cmd->add_option("--min-np", o->min_np, "Continue on fewer ranks, down to this many, when hosts keep failing (default: --np)")
      ->check(integer_in(1, 1 << 20));
  cmd->add_option("--max-restarts", o->max_restarts, "Restarts from the last checkpoint before giving up")->capture_default_str()
      ->check(integer_in(0, 1000000));
  cmd->add_option("--hang-timeout", o->hang_timeout, "Seconds a rank may go without progress before the job counts as hung")
      ->capture_default_str()->check(finite_in(1, 1e7));
  cmd->add_option("--start-timeout", o->start_timeout, "Seconds a rank may take to start (MPI, data, memory) before its first heartbeat")
      ->capture_default_str()->check(finite_in(1, 1e7));
  cmd->add_option("--then", o->then, "A palm command run after training, e.g. \"eval --task gsm8k --data F\" (eval gets --model RUN); repeatable; palm card runs last")
      ->allow_extra_args(false);  // one stage per --then, so "--" still ends the options
  cmd->add_option("--launcher-args", o->launcher_args, "Extra mpirun (or srun) options as one string, e.g. --launcher-args=\"--oversubscribe --mca btl self,vader\"");
  cmd->add_option("command", o->train_args, "-- train ARGS...: the palm train command to run");
  auto s = std::make_shared<StatusCli>();
  auto* status = cmd->add_subcommand("status", "Where a launched run stands: state, step, rate, ETA, restarts, layout");
  status->add_option("run", s->run, "Run directory")->required();
  status->add_flag("--json", s->json, "One JSON object");
  status->callback([s] { print_status(*s); });
  cmd->callback([o, cmd, status] {
    if (status->parsed()) return;
    PALM_CHECK(!o->run.empty(), "--out RUN is required (or: palm launch status RUN)");
    PALM_CHECK(!o->train_args.empty() && o->train_args[0] == "train",
               "give the job after --: palm launch --out RUN --np N -- train ARGS...");
    o->train_args.erase(o->train_args.begin());
    char exe[4096];
    const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    PALM_CHECK(n > 0, "cannot find the palm binary (/proc/self/exe)");
    o->palm_binary.assign(exe, std::size_t(n));
    const int rc = run_launch(*o);
    if (rc != 0) std::exit(rc);
  });
}

}  // namespace palm
