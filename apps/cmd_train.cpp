// palm train: PaLM's training recipe (src/train), and palm plot for its metrics.
#include <fmt/format.h>

#include <limits>

#include <cstdlib>

#include <filesystem>
#include <set>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "base/signals.h"
#include "common.h"
#include "train/trainer.h"

namespace palm {

namespace {

namespace fs = std::filesystem;

struct TrainCli {
  TrainOptions o;
  ConfigChoice model;
  std::string resume;
  int preflight = 0;
  std::string card_info;  // --card-info: the author's statements for the model card
  bool no_card = false;
  CLI::App* cmd = nullptr;
};

bool given(CLI::App* cmd, const char* flag) { return cmd->count(flag) > 0; }

// A completed run gets its model card; a failure to write it does not fail the training.
bool is_leader() {  // rank 0 of an mpirun or srun job, or a single process
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"})
    if (const char* r = std::getenv(name)) return std::string(r) == "0";
  return true;
}

void card_after_training(const TrainCli& c, const std::string& run) {
  if (c.no_card || !is_leader()) return;
  try {
    write_model_card(run, c.card_info, run, false, true);
  } catch (const std::exception& e) {
    fmt::print(stderr, "palm: warning: the model card was not written: {}\n", e.what());
  }
}

void run_train(TrainCli& c) {
  // first, before any thread exists: SIGINT/SIGTERM reach only this watcher, which asks
  // the run to finish its step and checkpoint
  const StopSignals stop_signals([](int sig) { request_training_stop(sig); });
  TrainOptions o = c.o;
  if (!c.resume.empty()) {
    // a resumed run continues with its own settings: only the length, the layout and
    // this launch's resources may differ; any other flag would be silently ignored
    static const std::set<std::string> may_change = {"--resume", "--steps", "--threads", "--tp", "--pods", "--shard",
                                                     "--no-overlap", "--hash-every", "--inject-divergence",
                                                     "--dump-gradients", "--card-info", "--no-card", "--heartbeat",
                                                     "--inject-crash", "--preflight"};
    for (const CLI::Option* opt : c.cmd->get_options())
      if (opt->count() > 0 && !opt->get_name().empty() && opt->get_name() != "--help" &&
          !may_change.count(opt->get_name()))
        fail(str_cat(opt->get_name(), " cannot change when resuming: ", c.resume,
                     "/config.json holds the run's settings (with --resume only --steps, --threads, --tp, --pods, "
                     "--shard, --no-overlap, --hash-every, --card-info and --no-card may be given)"));
    const std::string cfg = (fs::path(c.resume) / "config.json").string();
    PALM_CHECK(fs::exists(cfg), c.resume, ": not a training run (no config.json)");
    const TrainOptions cli = o;
    o = train_options_from_json(read_file(cfg), cfg);
    o.out = c.resume;
    if (given(c.cmd, "--steps")) o.steps = cli.steps;  // continue to a new total
    o.threads = cli.threads;
    // the layout is this launch's: a run resumes on any number of processes
    o.tp = cli.tp;
    o.pods = cli.pods;
    o.shard = cli.shard;
    o.hash_every = cli.hash_every;
    o.inject_divergence = cli.inject_divergence;
    o.overlap = cli.overlap;
    o.heartbeat_dir = cli.heartbeat_dir;
    o.inject_crash = cli.inject_crash;
    if (c.preflight > 0) {
      preflight_training(o, c.preflight, true);
      return;
    }
    const std::int64_t done = run_training(o, true);
    if (is_leader()) fmt::print("run {} at step {}\n", o.out, done);
    if (done == o.steps) card_after_training(c, o.out);
    return;
  }
  PALM_CHECK(!o.data.empty(), "--data DIR is required (palm data build makes one)");
  if (!c.model.config_file.empty()) {
    const std::string text = read_file(c.model.config_file);
    const auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_object() && j.contains("model")) {
      // a training config (the names of RUN/config.json); flags given on the command line win
      TrainOptions f = train_options_from_json(text, c.model.config_file);
      f.out = o.out;
      f.threads = o.threads;
      if (given(c.cmd, "--data")) f.data = o.data;
      if (given(c.cmd, "--steps")) f.steps = o.steps;
      if (given(c.cmd, "--batch-size")) f.batch_size = o.batch_size;
      if (given(c.cmd, "--seq-len")) f.seq_len = o.seq_len;
      if (given(c.cmd, "--seed")) f.seed = o.seed;
      if (given(c.cmd, "--init")) f.init = o.init;
      o = f;
    } else {
      o.model = load_config_file(c.model.config_file);
    }
  } else if (!c.model.preset.empty() || o.init.empty()) {
    o.model = c.model.resolve();
    o.preset = c.model.preset;
  }
  if (!o.init.empty()) {
    // the weights carry their config: a run may start from them without --preset
    o.init = resolve_model(o.init);
    const std::string given_as = !c.model.preset.empty() ? "--preset " + c.model.preset : "--config " + c.model.config_file;
    o.model = check_weights_config(o.init, o.model.d_model != 0 ? &o.model : nullptr, given_as);
  }
  o.lr.total = o.steps;
  if (c.preflight > 0) {
    preflight_training(o, c.preflight, false);
    return;
  }
  const std::int64_t done = run_training(o, false);
  if (is_leader()) fmt::print("run {} at step {}: checkpoints in {}/checkpoints, metrics in {}/metrics.jsonl\n", o.out, done, o.out, o.out);
  if (done == o.steps) card_after_training(c, o.out);
}

// ------------------------------------------------------------------ palm plot

struct PlotCli {
  std::string run, out;
};

std::string polyline(const std::vector<std::pair<double, double>>& pts, double x0, double x1, double y0, double y1,
                     double left, double top, double width, double height, const char* color, bool log_y) {
  if (pts.empty()) return "";
  std::string s = fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"", color);
  for (const auto& [x, y] : pts) {
    const double yy = log_y ? std::log10(std::max(y, 1e-12)) : y;
    const double px = left + (x - x0) / std::max(x1 - x0, 1e-12) * width;
    const double py = top + height - (yy - y0) / std::max(y1 - y0, 1e-12) * height;
    s += fmt::format("{:.1f},{:.1f} ", px, py);
  }
  return s + "\"/>\n";
}

void run_plot(const PlotCli& p) {
  const std::string path = (fs::path(p.run) / "metrics.jsonl").string();
  PALM_CHECK(fs::exists(path), p.run, ": no metrics.jsonl (not a training run)");
  std::vector<std::pair<double, double>> train, val, lr;
  std::vector<double> rollback_steps;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    const double step = j.value("step", 0.0);
    if (j.contains("loss") && !j.contains("event")) train.emplace_back(step, j["loss"].get<double>());
    if (j.contains("val_loss")) val.emplace_back(step, j["val_loss"].get<double>());
    if (j.contains("lr")) lr.emplace_back(step, j["lr"].get<double>());
    if (j.value("event", "") == "rollback") rollback_steps.push_back(j.value("spike_step", 0.0));
  }
  PALM_CHECK(!train.empty(), path, ": no training steps logged yet");
  double x1 = 1, lo = 1e30, hi = -1e30, lr_lo = 1e30, lr_hi = -1e30;
  for (auto* v : {&train, &val})
    for (const auto& [x, y] : *v) {
      x1 = std::max(x1, x);
      lo = std::min(lo, y);
      hi = std::max(hi, y);
    }
  for (const auto& [x, y] : lr) {
    lr_lo = std::min(lr_lo, std::log10(y));
    lr_hi = std::max(lr_hi, std::log10(y));
  }
  if (lr_hi - lr_lo < 1e-9) lr_lo -= 0.5, lr_hi += 0.5;
  const double W = 800, H = 500, L = 70, T = 40, PW = 640, PH = 300;
  std::string svg = fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += fmt::format("<text x=\"{}\" y=\"22\" font-size=\"15\">{}: loss (train, validation) and learning rate</text>\n", L, p.run);
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n", L, T, PW, PH);
  for (int i = 0; i <= 4; ++i) {
    const double y = T + PH - i * PH / 4, v = lo + (hi - lo) * i / 4;
    svg += fmt::format("<text x=\"{}\" y=\"{:.0f}\" text-anchor=\"end\">{:.3f}</text>\n", L - 6, y + 4, v);
    const double x = L + i * PW / 4;
    svg += fmt::format("<text x=\"{:.0f}\" y=\"{}\" text-anchor=\"middle\">{:.0f}</text>\n", x, T + PH + 16, x1 * i / 4);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", L + PW / 2, T + PH + 34);
  for (double s : rollback_steps) {
    const double x = L + s / x1 * PW;
    svg += fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>\n", x, T, T + PH);
  }
  svg += polyline(train, 0, x1, lo, hi, L, T, PW, PH, "#1f77b4", false);
  svg += polyline(val, 0, x1, lo, hi, L, T, PW, PH, "#ff7f0e", false);
  // learning rate panel (log scale)
  const double T2 = T + PH + 50, PH2 = 90;
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n", L, T2, PW, PH2);
  svg += polyline(lr, 0, x1, lr_lo, lr_hi, L, T2, PW, PH2, "#2ca02c", true);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.1e}</text>\n", L - 6, T2 + 10, std::pow(10, lr_hi));
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.1e}</text>\n", L - 6, T2 + PH2, std::pow(10, lr_lo));
  const double lx = L + PW + 10;
  svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"#1f77b4\">train loss</text>\n", lx, T + 14);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"#ff7f0e\">val loss</text>\n", lx, T + 30);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"#d62728\">rollback</text>\n", lx, T + 46);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"#2ca02c\">learning rate</text>\n", lx, T2 + 14);
  svg += "</svg>\n";
  const std::string out = p.out.empty() ? (fs::path(p.run) / "plot.svg").string() : p.out;
  write_text_atomic(out, svg);
  fmt::print("wrote {} ({} steps, {} validation points)\n", out, train.size(), val.size());
}

}  // namespace

void register_train(CLI::App& app) {
  auto c = std::make_shared<TrainCli>();
  auto* cmd = app.add_subcommand("train", "Train with PaLM's recipe (Adafactor, schedules, z-loss, checkpoints)");
  c->cmd = cmd;
  TrainOptions& o = c->o;
  cmd->add_option("--preset", c->model.preset, "Model preset: " + preset_list());
  cmd->add_option("--config", c->model.config_file, "Model config JSON, or a training config (RUN/config.json names)");
  cmd->add_option("--resume", c->resume, "Continue RUN from its newest checkpoint (optionally with a new --steps)");
  cmd->add_option("--tp", c->o.tp, "Tensor-parallel ranks (under mpirun; divides heads, d_ff and vocabulary)");
  cmd->add_option("--pods", c->o.pods, "Pods: data-parallel groups that exchange gradients point to point");
  cmd->add_option("--shard", c->o.shard, "none | optimizer | full: data-parallel ranks keep only their share of the optimizer state (and of the weights and gradients)");
  cmd->add_flag("--no-overlap", [c](std::int64_t) { c->o.overlap = false; },
                "Reduce gradients after the backward instead of during it (for comparison)");
  cmd->add_option("--hash-every", c->o.hash_every, "Steps between the check that replicas hold identical parameters");
  cmd->add_option("--dump-gradients", c->o.dump_gradients, "Test hook: write the first step's gradients to PATH-tp-R-of-T.safetensors");
  cmd->add_option("--inject-divergence", c->o.inject_divergence, "Test hook: perturb the last rank's weights at this step");
  cmd->add_option("--heartbeat", c->o.heartbeat_dir, "Each rank rewrites DIR/rank-R.json (step, loss, tokens/s) every step (palm launch's watch)");
  cmd->add_option("--preflight", c->preflight, "Check the options, the data and a mesh of N processes, then exit without training (palm launch's first step)")->check(integer_in(1, 1 << 20));
  cmd->add_option("--inject-crash", c->o.inject_crash, "Test hook: the last rank kills itself (SIGKILL) when it starts this step");
  cmd->add_option("--card-info", c->card_info, "Author statements for the model card written at the end (palm card --info)");
  cmd->add_flag("--no-card", c->no_card, "Do not write MODEL_CARD.md / DATASHEET.md at the end");
  cmd->add_option("--data", o.data, "Data directory (palm data build)");
  cmd->add_option("--out", o.out, "Run directory");
  cmd->add_option("--steps", o.steps, "Total optimizer steps")->capture_default_str()->check(integer_in(1, std::int64_t(1) << 40));
  cmd->add_option("--batch-size", o.batch_size, "Global batch (sequences per step)")->capture_default_str()->check(integer_in(1, 1 << 24));
  cmd->add_option("--seq-len", o.seq_len, "Sequence length T")->capture_default_str()->check(integer_in(1, 1 << 20));
  cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per step")->capture_default_str();
  cmd->add_option("--init", o.init, "Start from these weights (safetensors) instead of a fresh init");
  cmd->add_option("--seed", o.seed, "Seed (init, data order)")->capture_default_str()->check(integer_in(0, std::numeric_limits<std::int64_t>::max()));
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Steps between checkpoints")->capture_default_str();
  cmd->add_option("--keep-checkpoints", o.keep_checkpoints, "Checkpoints kept")->capture_default_str();
  cmd->add_option("--eval-every", o.eval_every, "Steps between validation losses")->capture_default_str();
  cmd->add_option("--eval-batches", o.eval_batches, "Validation batches per evaluation")->capture_default_str();
  cmd->add_flag("--remat", o.remat, "Recompute activations in the backward (less memory)");
  cmd->add_flag("--bf16", o.bf16, "bf16 GEMMs, fp32 master weights and optimizer (on a CPU: faster than fp32 only with AVX512_BF16 or AMX-BF16)");
  cmd->add_option("--threads", o.threads, "Threads (default: all cores)");
  cmd->add_option("--optimizer", o.optimizer.kind, "adafactor (PaLM) or adamw")->capture_default_str();
  cmd->add_option("--clip-norm", o.optimizer.clip_norm, "Global gradient norm clip (0: off)")->capture_default_str()->check(finite_in(0, 1e9));
  cmd->add_option("--weight-decay", o.optimizer.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--lr-schedule", o.lr.kind, "palm (min(1e-2, 1/sqrt(k))), cosine, inv-sqrt, constant")->capture_default_str();
  cmd->add_option("--lr", o.lr.peak, "Peak learning rate (palm: the plateau)")->capture_default_str()->check(finite_in(0, 100));
  cmd->add_option("--warmup-steps", o.lr.warmup, "Linear warmup steps (cosine, inv-sqrt, constant)")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o.lr.min_ratio, "Cosine: final lr / peak")->capture_default_str();
  cmd->add_option("--batch-ramp", o.batch_ramp, "PaLM's batch ramp, e.g. 8:0,16:500 (BATCH:FROM_STEP,...)");
  cmd->add_option("--z-loss", o.z_loss, "z-loss coefficient")->capture_default_str();
  cmd->add_option("--spike-factor", o.spike_factor, "Rollback when loss > factor x recent median")->capture_default_str();
  cmd->add_option("--spike-window", o.spike_window, "Losses in the recent median")->capture_default_str();
  cmd->add_option("--spike-skip", o.spike_skip, "Batches skipped after a rollback")->capture_default_str();
  cmd->add_option("--max-rollbacks", o.max_rollbacks, "Rollbacks before giving up")->capture_default_str();
  cmd->add_option("--inject-spike", o.inject_spike, "Test hook: multiply the loss by 100 whenever this step is trained");
  cmd->callback([c] {
    PALM_CHECK(!c->resume.empty() || !c->o.out.empty(), "--out RUN is required (or --resume RUN)");
    run_train(*c);
  });

  auto p = std::make_shared<PlotCli>();
  auto* plot = app.add_subcommand("plot", "SVG of training and validation loss and learning rate");
  plot->add_option("run", p->run, "Run directory")->required();
  plot->add_option("--out", p->out, "Output SVG (default RUN/plot.svg)");
  plot->callback([p] { run_plot(*p); });
}

}  // namespace palm
