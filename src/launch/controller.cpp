#include "launch/controller.h"

#include <signal.h>
#include <unistd.h>
#include <wordexp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include "base/check.h"
#include "base/file_util.h"
#include "base/hardware.h"
#include "base/signals.h"
#include "launch/events.h"
#include "launch/job.h"
#include "train/checkpoint.h"
#include "train/heartbeat.h"

namespace palm {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::atomic<int> g_launch_signal{0};

// `palm train` options that may be given again on --resume (cmd_train.cpp's list): the
// run's length, its layout and this launch's resources; `true`: takes a value.
const std::map<std::string, bool>& resume_flags() {
  static const std::map<std::string, bool> f = {
      {"--steps", true},     {"--threads", true},      {"--tp", true},        {"--pods", true},
      {"--shard", true},     {"--no-overlap", false},  {"--hash-every", true}, {"--card-info", true},
      {"--no-card", false},  {"--inject-crash", true}};
  return f;
}

// The train arguments split into what a restart passes on and the layout.
struct TrainArgs {
  std::vector<std::string> all, on_resume;  // on_resume: without --tp/--pods (the layout's own)
  int tp = 1, pods = 1;
  bool no_card = false;
};

TrainArgs parse_train_args(const std::vector<std::string>& args) {
  TrainArgs t;
  t.all = args;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i], value;
    const auto eq = name.find('=');
    const bool inline_value = name.rfind("--", 0) == 0 && eq != std::string::npos;
    if (inline_value) value = name.substr(eq + 1), name = name.substr(0, eq);
    PALM_CHECK(name != "--out" && name != "--resume" && name != "--heartbeat" && name != "--preflight", name,
               " is palm launch's to set: give the run as palm launch --out RUN");
    const auto f = resume_flags().find(name);
    if (f == resume_flags().end()) continue;
    if (f->second && !inline_value) {
      PALM_CHECK(i + 1 < args.size(), name, " needs a value");
      value = args[++i];
    }
    if (name == "--tp" || name == "--pods") {
      char* end = nullptr;
      const long v = std::strtol(value.c_str(), &end, 10);
      PALM_CHECK(*end == '\0' && v >= 1 && v <= (1 << 20), name, " ", value, ": expected a positive integer");
      (name == "--tp" ? t.tp : t.pods) = int(v);
      continue;
    }
    if (name == "--no-card") t.no_card = true;
    t.on_resume.push_back(name);
    if (f->second) t.on_resume.push_back(value);
  }
  return t;
}

struct Host {
  std::string name;
  int slots = 1;
};

std::vector<Host> read_hostfile(const std::string& path) {
  std::vector<Host> hosts;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    Host h;
    if (!(words >> h.name)) continue;
    for (std::string w; words >> w;) {
      if (w.rfind("slots=", 0) == 0) {
        char* end = nullptr;
        const long v = std::strtol(w.c_str() + 6, &end, 10);
        PALM_CHECK(*end == '\0' && v >= 1, path, ": bad '", w, "' for host ", h.name);
        h.slots = int(v);
      }
    }
    hosts.push_back(h);
  }
  PALM_CHECK(!hosts.empty(), path, ": no hosts");
  return hosts;
}

int total_slots(const std::vector<Host>& hosts) {
  int n = 0;
  for (const auto& h : hosts) n += h.slots;
  return n;
}

// "running", "stopped" (SIGSTOP, or traced), "gone", from /proc/PID/stat.
std::string process_state(std::int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (pid <= 0 || !std::getline(in, text)) return "gone";
  const auto paren = text.rfind(')');
  const char st = paren + 2 < text.size() ? text[paren + 2] : '?';
  if (st == 'T' || st == 't') return "stopped";
  if (st == 'Z' || st == 'X') return "gone";
  return "running";
}

std::string new_launch_id() {
  std::random_device rd;
  return std::to_string(::getpid()) + "-" + std::to_string(rd());
}

// Words of a --then stage, as a shell would split them (quotes, $VARS), never running a
// command substitution.
std::vector<std::string> split_words(const std::string& s) {
  wordexp_t w;
  PALM_CHECK(wordexp(s.c_str(), &w, WRDE_NOCMD | WRDE_SHOWERR) == 0, "\"", s,
             "\": cannot split it into words (unbalanced quotes or a $(...) command)");
  std::vector<std::string> out(w.we_wordv, w.we_wordv + w.we_wordc);
  wordfree(&w);
  return out;
}

// The last "palm: error: ..." line of a command's output, or its first line (CLI11's
// parse errors come first, a hint after them).
std::string error_line(const std::string& output) {
  const auto at = output.rfind("palm: error: ");
  std::string line = at == std::string::npos ? output.substr(output.find_first_not_of("\n") == std::string::npos ? output.size() : output.find_first_not_of("\n"))
                                             : output.substr(at + 13);
  line = line.substr(0, line.find('\n'));
  return line.empty() ? "it failed without a message" : line;
}

// A launcher's last words: the last "palm: error: ..." line, else its last line of text
// (mpirun frames its messages in lines of dashes).
std::string last_words(const std::string& output) {
  if (output.find("palm: error: ") != std::string::npos) return error_line(output);
  std::istringstream in(output);
  std::string last;
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" -\t\r") != std::string::npos) last = line;
  return last.empty() ? "no output" : last;
}

// What stopped an attempt.
struct Failure {
  std::string cause;  // "hang", "killed", "exited", "did not start", "stopped early"
  int rank = -1;
  std::string host, detail;
  std::set<std::string> hosts;  // those it is blamed on (for shrinking)
};

// "rank 1 on host: killed (signal 9)", naming what is known.
std::string describe(const Failure& f) {
  std::string who = f.rank >= 0 ? "rank " + std::to_string(f.rank) : "";
  if (!f.host.empty()) who += (who.empty() ? "host " : " on ") + f.host;
  return (who.empty() ? "" : who + ": ") + f.cause + (f.detail.empty() ? "" : " (" + f.detail + ")");
}

struct RankSeen {
  std::int64_t step = -1, pid = 0;
  std::string phase, host;
  double changed = 0, loss = 0, tokens_per_s = 0;
};

class Controller {
 public:
  explicit Controller(const LaunchOptions& o) : o_(o), args_(parse_train_args(o.train_args)), id_(new_launch_id()) {}
  int run();

 private:
  const LaunchOptions& o_;
  TrainArgs args_;
  std::string id_;
  int np_ = 0, tp_ = 1, pods_ = 1, restarts_ = 0, attempt_ = 0;
  std::vector<Host> hosts_;
  std::map<std::string, int> host_failures_;  // consecutive attempts that failed on each host
  std::map<int, RankSeen> seen_;
  double attempt_start_ = 0, rate_t0_ = 0;
  std::int64_t rate_step0_ = -1, total_steps_ = 0;
  std::string state_ = "starting";

  fs::path dir() const { return fs::path(o_.run) / "launch"; }
  std::string heartbeats() const { return (dir() / "heartbeats").string(); }
  bool has_run() const { return fs::exists(fs::path(o_.run) / "config.json"); }
  std::int64_t stored_total_steps() const {
    const auto cfg = fs::path(o_.run) / "config.json";
    if (!fs::exists(cfg)) return 0;
    const json j = json::parse(read_file(cfg.string()), nullptr, false);
    return j.is_object() ? j.value("steps", std::int64_t(0)) : 0;
  }
  // fresh: the user's arguments with --out (else --resume RUN when RUN has its config.json)
  std::vector<std::string> train_command(int np, int tp, int pods, bool preflight, bool fresh = false) const;
  std::vector<std::string> launcher(int np) const;
  void preflight(int np, int tp, int pods, bool fresh = false) const;
  bool fits(int np, int tp, int pods) const;
  json layout() const;
  void write_status();
  void watch(Job& job, Failure& failure);
  void read_beats(double now);
  bool find_hang(double now, Failure& f) const;
  void blame_silent_hosts(Failure& f) const;
  std::string host_of(int rank) const;
  Failure diagnose(const Job& job) const;
  bool shrink(const Failure& f);
  int run_stages();
};

std::vector<std::string> Controller::train_command(int np, int tp, int pods, bool preflight, bool fresh) const {
  std::vector<std::string> cmd = {o_.palm_binary, "train"};
  if (fresh || !has_run()) {
    cmd.insert(cmd.end(), args_.all.begin(), args_.all.end());
    cmd.insert(cmd.end(), {"--out", o_.run});
  } else {
    cmd.insert(cmd.end(), {"--resume", o_.run});
    cmd.insert(cmd.end(), args_.on_resume.begin(), args_.on_resume.end());
    cmd.insert(cmd.end(), {"--tp", std::to_string(tp), "--pods", std::to_string(pods)});
  }
  if (preflight) cmd.insert(cmd.end(), {"--preflight", std::to_string(np)});
  else cmd.insert(cmd.end(), {"--heartbeat", heartbeats()});
  return cmd;
}

std::vector<std::string> Controller::launcher(int np) const {
  std::vector<std::string> cmd;
  if (std::getenv("SLURM_JOB_ID") && o_.hostfile.empty()) {
    // inside a Slurm allocation: its own launcher, which kills the step when a task fails
    cmd = {"srun", "--ntasks=" + std::to_string(np), "--kill-on-bad-exit=1", "--export=ALL"};
    std::string exclude;
    int excluded = 0;
    for (const auto& [host, n] : host_failures_)
      if (n >= 2) exclude += (exclude.empty() ? "" : ",") + host, ++excluded;
    const char* nodes = std::getenv("SLURM_JOB_NUM_NODES");  // never exclude the whole allocation
    if (excluded > 0 && nodes && excluded < std::atoi(nodes)) cmd.push_back("--exclude=" + exclude);
  } else {
    cmd = {"mpirun", "-np", std::to_string(np), "-x", "PALM_LAUNCH_ID"};
    if (!hosts_.empty()) cmd.insert(cmd.end(), {"--hostfile", (dir() / "hostfile").string()});
  }
  const auto extra = split_words(o_.launcher_args);
  cmd.insert(cmd.end(), extra.begin(), extra.end());
  return cmd;
}

void Controller::preflight(int np, int tp, int pods, bool fresh) const {
  Job check(train_command(np, tp, pods, true, fresh), id_, /*echo=*/false);
  check.wait_for(1e9);
  PALM_CHECK(check.exit_code() == 0, error_line(check.output_tail()));
}

bool Controller::fits(int np, int tp, int pods) const {
  try {
    preflight(np, tp, pods);
    return true;
  } catch (const Error&) {
    return false;
  }
}

json Controller::layout() const {
  json hosts = json::array();
  for (const auto& h : hosts_) hosts.push_back({{"host", h.name}, {"slots", h.slots}});
  const bool slurm = std::getenv("SLURM_JOB_ID") && o_.hostfile.empty();
  return {{"np", np_}, {"tp", tp_}, {"pods", pods_}, {"data", np_ / std::max(1, tp_ * pods_)},
          {"launcher", slurm ? "srun" : "mpirun"}, {"hosts", hosts}};
}

void Controller::write_status() {
  json s = {{"state", state_},      {"controller_pid", std::int64_t(::getpid())}, {"launch_id", id_},
            {"attempt", attempt_},  {"restarts", restarts_}, {"max_restarts", o_.max_restarts},
            {"layout", layout()},   {"total_steps", total_steps_}, {"updated", seconds_since_epoch()}};
  const auto r0 = seen_.find(0);
  if (r0 != seen_.end() && r0->second.step >= 0) {
    std::int64_t slowest = r0->second.step;
    for (const auto& [r, x] : seen_) slowest = std::min(slowest, x.step);
    s["step"] = slowest;
    s["loss"] = r0->second.loss;
    s["tokens_per_s"] = r0->second.tokens_per_s;
    const double dt = r0->second.changed - rate_t0_;
    if (rate_step0_ >= 0 && slowest > rate_step0_ && dt > 0) {
      const double rate = double(slowest - rate_step0_) / dt;
      s["steps_per_s"] = rate;
      if (total_steps_ > 0) s["eta_s"] = double(std::max<std::int64_t>(total_steps_ - slowest, 0)) / rate;
    }
  }
  write_text_atomic((dir() / "status.json").string(), s.dump(2) + "\n");
}

// Until the job exits, fails or hangs: reads heartbeats, keeps the status file current.
void Controller::watch(Job& job, Failure& failure) {
  double last_status = 0, asked_at = 0;
  bool asked_to_stop = false;
  while (!job.wait_for(0.5)) {
    const double now = seconds_since_epoch();
    if (g_launch_signal && !asked_to_stop) {
      // a person stops the launch: the ranks finish their step and checkpoint
      job.signal(SIGTERM);
      asked_to_stop = true;
      asked_at = now;
      state_ = "stopping";
    }
    if (asked_to_stop && now - asked_at > std::max(o_.hang_timeout, 30.0)) return;  // stop() kills what is left
    if (total_steps_ == 0) total_steps_ = stored_total_steps();
    read_beats(now);
    if (!asked_to_stop && find_hang(now, failure)) return;
    if (now - last_status >= 1.0) {
      write_status();
      last_status = now;
    }
  }
}

// With a hostfile: the host mpirun's default by-slot mapping gives the rank (the names of
// the hostfile, which the heartbeats' gethostname need not match); else the heartbeat's.
std::string Controller::host_of(int rank) const {
  if (!hosts_.empty()) {
    int first = 0;
    for (const auto& h : hosts_) {
      if (rank < first + h.slots) return h.name;
      first += h.slots;
    }
  }
  const auto it = seen_.find(rank);
  return it == seen_.end() ? "" : it->second.host;
}

void Controller::read_beats(double now) {
  for (const Heartbeat& h : read_heartbeats(heartbeats())) {
    RankSeen& s = seen_[h.rank];
    if (h.step != s.step || h.phase != s.phase) s.changed = now;
    if (h.phase == "step" && rate_step0_ < 0) rate_step0_ = h.step, rate_t0_ = now;
    s.step = h.step, s.phase = h.phase, s.host = h.host, s.pid = h.pid, s.loss = h.loss, s.tokens_per_s = h.tokens_per_s;
  }
}

// A rank without progress for --hang-timeout. When one hangs the others soon wait for it
// in a collective and go quiet too: the culprit is the rank of this host that is stopped
// or gone, else the one that went quiet first (or never reported).
bool Controller::find_hang(double now, Failure& f) const {
  // a rank that has not reported yet is still starting (MPI, data, allocation): it has
  // --start-timeout; one that has reported must progress within --hang-timeout
  int worst = -1;
  double worst_since = now;
  for (int r = 0; r < np_; ++r) {
    const auto it = seen_.find(r);
    const double since = it == seen_.end() ? attempt_start_ : it->second.changed;
    const double allowed = it == seen_.end() ? o_.start_timeout : o_.hang_timeout;
    if (now - since > allowed && since < worst_since) worst = r, worst_since = since;
  }
  if (worst < 0) return false;
  const std::string here = describe_hardware().hostname;
  for (const auto& [r, s] : seen_) {
    if (s.host != here || now - s.changed <= o_.hang_timeout) continue;
    const std::string state = process_state(s.pid);
    if (state == "stopped" || state == "gone") {
      f.cause = "hang", f.rank = r, f.host = host_of(r), f.hosts = {f.host};
      f.detail = str_cat("process ", s.pid, " ", state, ", no progress for ", std::lround(now - s.changed), " s at step ", s.step);
      return true;
    }
  }
  f.cause = "hang";
  f.rank = worst;
  f.host = host_of(worst);
  if (!f.host.empty()) f.hosts = {f.host};
  const auto it = seen_.find(worst);
  if (it == seen_.end()) {
    f.detail = str_cat("no heartbeat in ", std::lround(now - attempt_start_), " s since the start");
  } else {
    f.detail = str_cat("no progress for ", std::lround(now - worst_since), " s at step ", it->second.step, " (",
                       it->second.phase, ")");
  }
  blame_silent_hosts(f);
  return true;
}

// Why the launcher exited: its own report of the first failed rank (mpirun's or srun's
// words), else the ranks that never reported.
Failure Controller::diagnose(const Job& job) const {
  Failure f;
  const std::string& out = job.output_tail();
  std::smatch m;
  static const std::regex signaled(R"(process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+))");
  static const std::regex exited(R"(Process name: \[\[\d+,\d+\],(\d+)\]\s*\n\s*Exit code:\s*(\d+))");
  static const std::regex srun_task(R"(srun: error: (\S+): task (\d+): (.*))");
  static const std::regex lost_daemon(R"(Remote daemon: \S+ on node (\S+))");
  static const std::regex unreachable(R"(connect to host (\S+)[^\n]*: ([^\n]+))");  // ssh's words
  static const std::regex lost_peer(R"(Peer host:\s+(\S+))");  // a rank's report of the peer that vanished
  if (std::regex_search(out, m, signaled)) {
    f.cause = "killed", f.rank = std::stoi(m[1]), f.host = m[2], f.detail = "signal " + m[3].str();
  } else if (std::regex_search(out, m, exited)) {
    f.cause = "exited", f.rank = std::stoi(m[1]), f.detail = "exit status " + m[2].str();
  } else if (std::regex_search(out, m, srun_task)) {
    f.host = m[1], f.rank = std::stoi(m[2]), f.detail = m[3];
    f.cause = f.detail.find("Killed") != std::string::npos || f.detail.find("signal") != std::string::npos ? "killed" : "exited";
  } else if (std::regex_search(out, m, unreachable)) {
    f.cause = "unreachable", f.host = m[1], f.detail = m[2];
  } else if (std::regex_search(out, m, lost_daemon)) {
    f.cause = "host lost", f.host = m[1], f.detail = "mpirun lost its daemon on " + m[1].str();
  } else if (std::regex_search(out, m, lost_peer)) {
    f.cause = "host lost", f.host = m[1], f.detail = "a rank's peer on " + m[1].str() + " disconnected";
  } else {
    f.cause = "exited", f.detail = str_cat("launcher exit status ", job.exit_code(), ": ", last_words(out));
  }
  if (f.host.empty() && f.rank >= 0) f.host = host_of(f.rank);
  if (!f.host.empty()) f.hosts.insert(f.host);
  if (f.rank < 0 && f.cause == "exited" && seen_.size() < std::size_t(np_)) f.cause = "did not start";
  blame_silent_hosts(f);
  return f;
}

// Hosts none of whose ranks ever reported share the blame: unreachable, or failing at
// start. Only when some did report: a job that never started says nothing about a host.
void Controller::blame_silent_hosts(Failure& f) const {
  if (seen_.empty() || seen_.size() >= std::size_t(np_)) return;
  std::set<std::string> reported;
  for (const auto& [r, s] : seen_) reported.insert(host_of(r));
  for (const auto& h : hosts_)
    if (!reported.count(h.name)) f.hosts.insert(h.name);
}

// After a failure: hosts that failed twice in a row leave the hostfile; the job continues
// on the largest valid mesh that the remaining slots hold, down to --min-np.
bool Controller::shrink(const Failure& f) {
  for (auto& [host, n] : host_failures_) n = f.hosts.count(host) ? n : 0;
  for (const auto& host : f.hosts) ++host_failures_[host];  // under srun: --exclude from the second
  if (hosts_.empty()) return true;  // one host, or Slurm's allocation: the rank count stays
  std::vector<Host> keep, dropped;
  for (const auto& h : hosts_) (host_failures_[h.name] >= 2 ? dropped : keep).push_back(h);
  if (dropped.empty()) return true;
  const int slots = total_slots(keep);
  const int min_np = o_.min_np > 0 ? o_.min_np : o_.np;
  for (int n = std::min(np_, slots); n >= std::max(min_np, 1) && !keep.empty(); --n) {
    for (const int pods : {pods_, 1}) {
      if (n % (tp_ * pods) != 0 || !fits(n, tp_, pods)) continue;
      std::vector<std::string> names;
      for (const auto& h : dropped) names.push_back(h.name);
      append_event(o_.run, "shrink", {{"dropped_hosts", names}, {"from_np", np_}, {"to_np", n}, {"tp", tp_}, {"pods", pods}});
      std::fprintf(stderr, "palm launch: leaving out %zu host(s) that failed twice in a row (%s...); continuing on %d ranks\n",
                   names.size(), names[0].c_str(), n);
      hosts_ = keep, np_ = n, pods_ = pods;
      std::string text;
      for (const auto& h : hosts_) text += h.name + " slots=" + std::to_string(h.slots) + "\n";
      write_text_atomic((dir() / "hostfile").string(), text);
      return true;
    }
  }
  append_event(o_.run, "give_up", {{"reason", "too few ranks left"}, {"slots", slots}, {"min_np", min_np}});
  std::fprintf(stderr, "palm: error: the hosts that still work hold %d slots: no valid mesh of at least --min-np %d ranks\n",
               slots, min_np);
  return false;
}

int Controller::run_stages() {
  std::vector<std::vector<std::string>> stages;
  for (const auto& s : o_.then) {
    std::vector<std::string> words = split_words(s);
    if (!words.empty() && words[0] == "eval" && std::find(words.begin(), words.end(), "--model") == words.end())
      words.insert(words.end(), {"--model", o_.run});  // the final checkpoint; results go to RUN/eval/
    stages.push_back(words);
  }
  if (!args_.no_card) stages.push_back({"card", o_.run});  // last: it lists what the stages measured
  for (auto& words : stages) {
    const std::string line = [&] {
      std::string l = "palm";
      for (const auto& w : words) l += " " + w;
      return l;
    }();
    words.insert(words.begin(), o_.palm_binary);
    append_event(o_.run, "then", {{"command", line}});
    std::fprintf(stderr, "palm launch: %s\n", line.c_str());
    Job stage(words, id_);
    stage.wait_for(1e12);
    if (stage.exit_code() != 0) {
      append_event(o_.run, "then_failed", {{"command", line}, {"exit_code", stage.exit_code()}});
      std::fprintf(stderr, "palm: error: stage '%s' failed (exit status %d)\n", line.c_str(), stage.exit_code());
      return 1;
    }
  }
  return 0;
}

int Controller::run() {
  PALM_CHECK(!o_.run.empty(), "--out RUN is required");
  PALM_CHECK(o_.np >= 1, "--np must be at least 1");
  PALM_CHECK(o_.min_np >= 0 && o_.min_np <= o_.np, "--min-np ", o_.min_np, " must lie in [1, --np ", o_.np, "]");
  PALM_CHECK(o_.max_restarts >= 0, "--max-restarts must be >= 0");
  PALM_CHECK(o_.hang_timeout > 0 && o_.start_timeout > 0, "--hang-timeout and --start-timeout must be positive");
  np_ = o_.np, tp_ = args_.tp, pods_ = args_.pods;
  if (!o_.hostfile.empty()) {
    hosts_ = read_hostfile(o_.hostfile);
    PALM_CHECK(total_slots(hosts_) >= np_, o_.hostfile, " holds ", total_slots(hosts_), " slots, fewer than --np ", np_);
  }
  for (const auto& s : o_.then) split_words(s);  // a bad stage is an error now, not after training
  split_words(o_.launcher_args);
  // every check of palm train's, for this layout, before any rank starts
  // (with the user's arguments: a RUN of another model or data is refused here)
  preflight(np_, tp_, pods_, /*fresh=*/true);
  fs::create_directories(dir());  // RUN/launch, and RUN with it
  if (!hosts_.empty()) {
    std::string text;
    for (const auto& h : hosts_) text += h.name + " slots=" + std::to_string(h.slots) + "\n";
    write_text_atomic((dir() / "hostfile").string(), text);
  }
  const StopSignals stop([](int sig) { g_launch_signal = sig; });
  append_event(o_.run, "start", {{"np", np_}, {"train_args", o_.train_args}, {"then", o_.then},
                                 {"resumed", has_run()}, {"launch_id", id_}});
  for (;; ++attempt_) {
    append_event(o_.run, "layout", layout());
    fs::remove_all(heartbeats());
    seen_.clear();
    rate_step0_ = -1;
    attempt_start_ = seconds_since_epoch();
    state_ = attempt_ == 0 ? "running" : "running (restart " + std::to_string(restarts_) + ")";
    std::vector<std::string> cmd = launcher(np_);
    const auto train = train_command(np_, tp_, pods_, false);
    cmd.insert(cmd.end(), train.begin(), train.end());
    Failure failure;
    {
      Job job(cmd, id_);
      watch(job, failure);
      if (!failure.cause.empty()) std::fprintf(stderr, "\npalm launch: %s: stopping the job\n", describe(failure).c_str());
      // what is left of the job, everywhere: at once after a failure (a hung collective
      // cannot checkpoint), with a grace for the ranks' own checkpoint when a person stops it
      job.stop(g_launch_signal ? 30.0 : 0.0);
      read_beats(seconds_since_epoch());
      if (failure.cause.empty() && job.exit_code() != 0) failure = diagnose(job);
      if (failure.cause.empty()) {
        total_steps_ = stored_total_steps();
        const std::string last = latest_checkpoint(o_.run);
        const std::int64_t step = seen_.count(0) ? seen_[0].step : -1;
        if (g_launch_signal) {
          state_ = "stopped";
          write_status();
          append_event(o_.run, "stopped", {{"signal", int(g_launch_signal)}, {"step", step}});
          std::fprintf(stderr, "palm: error: stopped by signal %d at step %lld; run the same palm launch command to continue\n",
                       int(g_launch_signal), (long long)step);
          return 1;
        }
        if (step < total_steps_ || last.empty()) {
          failure.cause = "stopped early";
          failure.detail = str_cat("the job exited at step ", step, " of ", total_steps_, " without an error");
        }
      }
    }
    if (failure.cause.empty()) break;
    append_event(o_.run, "failure", {{"cause", failure.cause}, {"rank", failure.rank}, {"host", failure.host},
                                     {"detail", failure.detail}, {"attempt", attempt_}});
    std::fprintf(stderr, "palm launch: attempt %d failed: %s\n", attempt_, describe(failure).c_str());
    if (g_launch_signal) {
      append_event(o_.run, "stopped", {{"signal", int(g_launch_signal)}});
      state_ = "stopped";
      write_status();
      return 1;
    }
    if (restarts_ >= o_.max_restarts) {
      append_event(o_.run, "give_up", {{"reason", "max restarts"}, {"restarts", restarts_}});
      state_ = "failed";
      write_status();
      std::fprintf(stderr, "palm: error: gave up after %d restart(s) (--max-restarts %d); last failure: %s\n", restarts_,
                   o_.max_restarts, describe(failure).c_str());
      return 1;
    }
    if (!shrink(failure)) {
      state_ = "failed";
      write_status();
      return 1;
    }
    ++restarts_;
    const std::string from = latest_checkpoint(o_.run);
    append_event(o_.run, "restart", {{"restart", restarts_}, {"from_checkpoint", from.empty() ? "" : fs::path(from).filename().string()}});
    std::fprintf(stderr, "palm launch: restart %d of at most %d, from %s\n", restarts_, o_.max_restarts,
                 from.empty() ? "the start (no checkpoint yet)" : from.c_str());
  }
  state_ = "trained";
  write_status();
  append_event(o_.run, "finish", {{"step", total_steps_}, {"restarts", restarts_}});
  const int stages = run_stages();
  state_ = stages == 0 ? "finished" : "failed";
  write_status();
  return stages;
}

}  // namespace

int run_launch(const LaunchOptions& o) { return Controller(o).run(); }

json launch_status(const std::string& run) {
  const fs::path path = fs::path(run) / "launch" / "status.json";
  PALM_CHECK(fs::exists(path), run, ": no palm launch status (", path.string(), " is missing)");
  json s = json::parse(read_file(path.string()), nullptr, false);
  PALM_CHECK(s.is_object(), path.string(), ": not a JSON object");
  const std::string state = s.value("state", "");
  const bool active = state != "finished" && state != "failed" && state != "stopped";
  const std::int64_t pid = s.value("controller_pid", std::int64_t(0));
  if (active && (pid <= 0 || (::kill(pid_t(pid), 0) != 0 && errno == ESRCH)))
    s["state"] = "controller gone (was: " + state + ")";
  json restarts = json::array();
  json failures = json::array();
  for (const json& e : read_events(run)) {
    const std::string ev = e.value("event", "");
    if (ev == "failure") failures.push_back(e);
    if (ev == "restart" || ev == "shrink") restarts.push_back(e);
  }
  s["failures"] = failures;
  s["restart_events"] = restarts;
  return s;
}

}  // namespace palm
