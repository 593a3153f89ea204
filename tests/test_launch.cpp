// palm launch on 2 ranks of this machine: a worker killed with SIGKILL or stopped with
// SIGSTOP mid-run is detected, the job stopped without leaving a process behind, restarted
// from the last checkpoint, and the run ends bitwise equal to one that was never
// interrupted; a failure at every restart gives up after --max-restarts; bad input is one
// clear error before any rank starts; --then stages run and the card lists the restarts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "shell_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string g_dir;
std::string p(const std::string& f) { return g_dir + "/" + f; }
int sh(const std::string& cmd) { return palm::testing_util::run_status(cmd); }

const std::string kLauncherArgs = "--launcher-args='--oversubscribe --bind-to none --mca btl self,vader --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1'";
const int kSteps = 400;

std::string train_args(const std::string& extra = "") {
  return "train --preset tiny --data " + p("data") + " --batch-size 8 --seq-len 64 --checkpoint-every 50 --eval-every 100000 "
         "--threads 1 --steps " + std::to_string(kSteps) + " " + extra;
}

std::string launch(const std::string& run, const std::string& options, const std::string& extra = "") {
  return std::string(PALM_BINARY) + " launch --out " + p(run) + " --np 2 " + kLauncherArgs + " " + options + " -- " +
         train_args(extra);
}

std::vector<json> events(const std::string& run) {
  std::vector<json> out;
  std::ifstream in(p(run) + "/events.jsonl");
  for (std::string l; std::getline(in, l);) out.push_back(json::parse(l));
  return out;
}

std::vector<json> events_named(const std::string& run, const std::string& name) {
  std::vector<json> out;
  for (const auto& e : events(run))
    if (e["event"] == name) out.push_back(e);
  return out;
}

std::string final_model(const std::string& run) {
  return p(run) + "/checkpoints/step-" + std::to_string(kSteps) + "/model.safetensors";
}

bool same_file(const std::string& a, const std::string& b) { return sh("cmp -s " + a + " " + b) == 0; }

// Processes whose command line names the run's directory: none may outlive the launch.
std::string survivors(const std::string& run) {
  std::string out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos || pid == std::to_string(::getpid())) continue;
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)), {});
    for (char& c : cmd) c = c ? c : ' ';
    if (cmd.find(p(run) + " ") != std::string::npos && cmd.find(" launch ") == std::string::npos) out += pid + ": " + cmd + "\n";
  }
  return out;
}

// A rank's heartbeat, once it has one.
json heartbeat(const std::string& run, int rank) {
  std::ifstream in(p(run) + "/launch/heartbeats/rank-" + std::to_string(rank) + ".json");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  return json::parse(text, nullptr, false);
}

// Starts a launch in the background, waits until rank 1 is past step `at` (after the
// checkpoint of step 100), sends `sig` to it, and returns the launch's exit status and the
// moment of the signal.
struct Interrupted {
  int status = -1;
  double signalled_at = 0;  // seconds since the epoch
};
Interrupted run_and_interrupt(const std::string& run, const std::string& options, int sig, std::int64_t at) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string cmd = launch(run, options) + " > " + p(run + ".log") + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  Interrupted r;
  int st = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    if (::waitpid(pid, &st, WNOHANG) == pid) {  // ended before the signal: a failure the caller reports
      r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      return r;
    }
    const json h = heartbeat(run, 1);
    if (h.is_object() && h.value("step", 0) >= at) {
      ::kill(pid_t(h["pid"].get<std::int64_t>()), sig);
      r.signalled_at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string log_of(const std::string& run) {
  std::ifstream in(p(run + ".log"));
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

class Launch : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string t = (fs::temp_directory_path() / "palm_launch_XXXXXX").string();
    g_dir = ::mkdtemp(t.data());
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);  // CI runs as root; mpirun refuses it otherwise
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    const std::string text = PALM_SOURCE_DIR "/tests/fixtures/text/english.txt";
    ASSERT_EQ(sh(std::string(PALM_BINARY) + " tokenizer train --input " + text + " --vocab-size 500 --out " + p("tok") +
                 " 2>/dev/null >/dev/null"),
              0);
    ASSERT_EQ(sh(std::string(PALM_BINARY) + " data build --tokenizer " + p("tok") + " --source text=" + text +
                 ":format=lines --out " + p("data") + " 2>/dev/null >/dev/null"),
              0);
    // the uninterrupted run every healed one must equal, bit for bit
    ASSERT_EQ(sh(launch("reference", "", "--no-card") + " > " + p("reference.log") + " 2>&1"), 0) << log_of("reference");
  }
  static void TearDownTestSuite() { fs::remove_all(g_dir); }
};

TEST_F(Launch, AnUninterruptedRunRecordsItsLayoutAndStatus) {
  const auto ev = events("reference");
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.front()["event"], "start");
  EXPECT_EQ(ev[1]["event"], "layout");
  EXPECT_EQ(ev[1]["np"], 2);
  EXPECT_EQ(ev[1]["launcher"], "mpirun");
  EXPECT_EQ(events_named("reference", "finish").size(), 1u);
  EXPECT_TRUE(events_named("reference", "failure").empty());
  const auto r = palm::testing_util::run_shell(std::string(PALM_BINARY) + " launch status " + p("reference") + " --json",
                                               p("status.err"));
  ASSERT_EQ(r.status, 0) << r.err;
  const json s = json::parse(r.out);
  EXPECT_EQ(s["state"], "finished");
  EXPECT_EQ(s["step"], kSteps);
  EXPECT_EQ(s["total_steps"], kSteps);
  EXPECT_EQ(s["restarts"], 0);
  EXPECT_EQ(s["layout"]["np"], 2);
  EXPECT_GT(s["steps_per_s"].get<double>(), 0);
  EXPECT_GT(s["tokens_per_s"].get<double>(), 0);
  EXPECT_TRUE(fs::exists(final_model("reference")));
}

TEST_F(Launch, AKilledWorkerIsHealedAndTheRunEndsBitwiseEqual) {
  const std::string stage = "--then 'eval --task perplexity --data " PALM_SOURCE_DIR "/tests/fixtures/text/english.txt'";
  const Interrupted r = run_and_interrupt("killed", stage, SIGKILL, 120);
  ASSERT_GT(r.signalled_at, 0) << "rank 1 never reached step 120\n" << log_of("killed");
  ASSERT_EQ(r.status, 0) << log_of("killed");
  const auto failures = events_named("killed", "failure");
  ASSERT_EQ(failures.size(), 1u) << log_of("killed");
  EXPECT_EQ(failures[0]["rank"], 1);
  EXPECT_EQ(failures[0]["cause"], "killed");
  const auto restarts = events_named("killed", "restart");
  ASSERT_EQ(restarts.size(), 1u);
  EXPECT_EQ(restarts[0]["from_checkpoint"], "step-100");
  EXPECT_LT(failures[0]["time"].get<double>() - r.signalled_at, 10.0) << "seconds to notice a dead rank";
  EXPECT_TRUE(same_file(final_model("reference"), final_model("killed"))) << "healed run differs from the uninterrupted one";
  EXPECT_EQ(survivors("killed"), "");
  // the --then stage ran on the final checkpoint, then palm card, which lists the restart
  EXPECT_FALSE(events_named("killed", "then").empty());
  bool evaluated = false;
  for (const auto& e : fs::directory_iterator(p("killed/eval"))) evaluated |= e.path().extension() == ".json";
  EXPECT_TRUE(evaluated) << "no RUN/eval/*.json from the --then stage";
  std::ifstream card(p("killed/MODEL_CARD.md"));
  const std::string c((std::istreambuf_iterator<char>(card)), {});
  EXPECT_NE(c.find("Restarts (palm launch)**: 1: rank 1"), std::string::npos) << c;
  EXPECT_NE(c.find("killed (signal 9), resumed from step-100"), std::string::npos) << c;
}

TEST_F(Launch, AStoppedWorkerIsAHangDetectedWithinTheTimeoutAndHealed) {
  const Interrupted r = run_and_interrupt("stopped", "--hang-timeout 5 --max-restarts 1", SIGSTOP, 120);
  ASSERT_GT(r.signalled_at, 0) << log_of("stopped");
  ASSERT_EQ(r.status, 0) << log_of("stopped");
  const auto failures = events_named("stopped", "failure");
  ASSERT_EQ(failures.size(), 1u) << log_of("stopped");
  EXPECT_EQ(failures[0]["cause"], "hang");
  EXPECT_EQ(failures[0]["rank"], 1) << failures[0].dump();
  const double detected = failures[0]["time"].get<double>() - r.signalled_at;
  EXPECT_GE(detected, 4.0);
  EXPECT_LT(detected, 5.0 + 5.0) << "seconds from SIGSTOP to the detected hang (timeout 5 s)";
  EXPECT_TRUE(same_file(final_model("reference"), final_model("stopped")));
  EXPECT_EQ(survivors("stopped"), "") << "the stopped rank must not survive";
}

TEST_F(Launch, AFailureAtEveryRestartGivesUpAfterMaxRestarts) {
  // the last rank dies at step 130 each time; restarts resume from step 100
  const auto r = palm::testing_util::run_shell(
      launch("doomed", "--max-restarts 2", "--inject-crash 130 --no-card") + " > " + p("doomed.log"), p("doomed.err"));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("palm: error: gave up after 2 restart(s) (--max-restarts 2); last failure: rank 1"),
            std::string::npos) << r.err;
  EXPECT_EQ(events_named("doomed", "failure").size(), 3u);
  EXPECT_EQ(events_named("doomed", "restart").size(), 2u);
  EXPECT_EQ(events_named("doomed", "give_up").size(), 1u);
  const auto s = palm::testing_util::run_shell(std::string(PALM_BINARY) + " launch status " + p("doomed"), p("s.err"));
  EXPECT_NE(s.out.find("state:    failed"), std::string::npos) << s.out;
  EXPECT_NE(s.out.find("restarts: 2 of at most 2"), std::string::npos) << s.out;
  EXPECT_EQ(survivors("doomed"), "");
}

TEST_F(Launch, BadInputIsOneClearErrorBeforeAnythingStarts) {
  struct Case {
    std::string run, options, extra, message;
  };
  const std::vector<Case> cases = {
      {"bad_flag", "", "--bogus 3", "--bogus"},
      {"bad_mesh", "--np 3", "--tp 2", "3 processes do not factor as pods x data x tensor"},
      {"bad_then", "--then 'eval $(touch " + p("pwned") + ")'", "", "cannot split it into words"},
  };
  for (const auto& c : cases) {
    const std::size_t before = events(c.run).size();
    std::string cmd = launch(c.run, c.options, c.extra);
    if (c.options.find("--np 3") != std::string::npos) cmd.replace(cmd.find(" --np 2 "), 8, " ");
    const auto r = palm::testing_util::run_shell(cmd, p("bad.err"));
    EXPECT_EQ(r.status, 1) << cmd;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << cmd << "\n" << r.err;
    EXPECT_EQ(r.err.find("mpirun"), std::string::npos) << "a rank was started: " << r.err;
    EXPECT_EQ(events(c.run).size(), before) << c.run << ": nothing may be recorded before the checks pass";
  }
  EXPECT_FALSE(fs::exists(p("pwned"))) << "a --then stage ran a command substitution";
  // a RUN of another model: refused before any rank starts, the run untouched
  const std::size_t before = events("reference").size();
  std::string other = launch("reference", "");
  other.replace(other.find("--preset tiny"), 13, "--preset small");
  const auto r = palm::testing_util::run_shell(other, p("other.err"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("holds a run of another model"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  EXPECT_EQ(events("reference").size(), before);
  // no job after --
  const auto none = palm::testing_util::run_shell(std::string(PALM_BINARY) + " launch --out " + p("x") + " --np 2", p("x.err"));
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.err.find("palm launch --out RUN --np N -- train ARGS"), std::string::npos) << none.err;
}

}  // namespace
