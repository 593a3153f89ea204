// Evaluation harness: scoring rules against hand-computed values, the sandbox against
// hostile programs, oracle completions (canonical solutions, gold answers, a wrong set)
// against exact expected scores, and a tiny trained model through every task.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <algorithm>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "data_dir.h"
#include "shell_util.h"

#include "base/sha256.h"
#include "eval/metrics.h"
#include "eval/sandbox.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace palm;

std::string g_dir;
std::string p(const std::string& f) { return g_dir + "/" + f; }

using Cmd = palm::testing_util::CmdResult;
Cmd sh(const std::string& cmd) { return palm::testing_util::run_shell(cmd, p("stderr.txt")); }
Cmd palm(const std::string& args) { return sh(std::string(PALM_BINARY) + " " + args); }

// Runs `palm eval ... --json` and returns the results document.
json eval(const std::string& args) {
  const Cmd r = palm("eval " + args + " --json");
  EXPECT_EQ(r.status, 0) << args << "\n" << r.err;
  return r.status == 0 ? json::parse(r.out) : json();
}

// Completions JSONL from a data file: f(line json, index) -> {"task_id", "completion"}.
template <typename F>
std::string completions(const std::string& name, const std::string& data, F f) {
  std::ifstream in(data);
  std::ofstream out(p(name));
  std::string line;
  for (int i = 0; std::getline(in, line); ++i) out << f(json::parse(line), i).dump() << "\n";
  return p(name);
}

class EvalEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    std::string t = (fs::temp_directory_path() / "palm_eval_XXXXXX").string();
    g_dir = ::mkdtemp(t.data());
  }
  void TearDown() override { fs::remove_all(g_dir); }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new EvalEnv);

// ---- scoring rules ----

TEST(Metrics, PassAtKMatchesHandComputedValues) {
  EXPECT_DOUBLE_EQ(pass_at_k(10, 3, 1), 0.3);
  EXPECT_DOUBLE_EQ(pass_at_k(5, 1, 2), 0.4);           // 1 - C(4,2)/C(5,2) = 1 - 6/10
  EXPECT_NEAR(pass_at_k(10, 2, 5), 1.0 - 56.0 / 252.0, 1e-15);  // C(8,5)/C(10,5)
  EXPECT_DOUBLE_EQ(pass_at_k(10, 0, 5), 0.0);
  EXPECT_DOUBLE_EQ(pass_at_k(10, 6, 5), 1.0);          // fewer than k failures
  // n = 200, c = 7, k = 100 against log-binomials
  auto lc = [](double n, double k) { return std::lgamma(n + 1) - std::lgamma(k + 1) - std::lgamma(n - k + 1); };
  EXPECT_NEAR(pass_at_k(200, 7, 100), 1.0 - std::exp(lc(193, 100) - lc(200, 100)), 1e-12);
  EXPECT_THROW(pass_at_k(5, 1, 6), std::exception);
}

TEST(Metrics, AnswerExtractionRules) {
  EXPECT_EQ(extract_bbh_answer("Let's see. Blah. So the answer is (B)."), "(B)");
  EXPECT_EQ(extract_bbh_answer("the answer is No.\nQ: next"), "No");
  EXPECT_EQ(extract_bbh_answer("\n  valid \nmore"), "valid");
  EXPECT_EQ(extract_bbh_answer("The answer is x. Then the answer is Yes.."), "Yes.");  // the last phrase, one '.' dropped
  EXPECT_EQ(*extract_number("She makes 9 * 2 = $18.\nThe answer is 18."), 18.0);
  EXPECT_EQ(*extract_number("#### 1,234"), 1234.0);
  EXPECT_EQ(*extract_number("so 3 then 4 then -5.5 apples"), -5.5);
  EXPECT_EQ(*extract_number("The answer is $70,000."), 70000.0);
  EXPECT_FALSE(extract_number("no digits here").has_value());
  EXPECT_EQ(gsm8k_cot_answer("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 18"),
            "Janet sells 16 - 3 - 4 = 9 duck eggs.\nThe answer is 18.");
  EXPECT_EQ(truncate_at("    return 1\ndef g():\n", {"\nclass", "\ndef"}), "    return 1");
}

// ---- sandbox ----

// A program alone (it passes when it loads), or a program and the tests that call it.
SandboxResult run_python_sandboxed(const std::string& program, const SandboxLimits& l = {}) {
  return palm::run_python_sandboxed(SandboxProgram{program, "", "", {}}, l);
}
SandboxResult run_tests(const std::string& program, const std::string& tests, const SandboxLimits& l = {}) {
  return palm::run_python_sandboxed(SandboxProgram{program, tests, "", {}}, l);
}

TEST(Sandbox, PassingFailingAndEarlyExit) {
  EXPECT_TRUE(run_python_sandboxed("assert 1 + 1 == 2").passed);
  const auto fail = run_python_sandboxed("assert 1 + 1 == 3");
  EXPECT_FALSE(fail.passed);
  EXPECT_NE(fail.output.find("AssertionError"), std::string::npos) << fail.output;
  // exiting with status 0 before the tests ran is not a pass
  EXPECT_FALSE(run_python_sandboxed("import sys\nsys.exit(0)\nassert False").passed);
  EXPECT_FALSE(run_python_sandboxed("import os\nos._exit(0)").passed);
  // printing lines of its own changes nothing
  EXPECT_TRUE(run_python_sandboxed("print('hello')\nprint('world')").passed);
  // the tests call the program's functions and compare what they return
  EXPECT_TRUE(run_tests("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\nassert add('a', 'b') == 'ab'\n").passed);
  const auto wrong = run_tests("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5\n");
  EXPECT_FALSE(wrong.passed);
  EXPECT_NE(wrong.output.find("AssertionError"), std::string::npos) << wrong.output;
  EXPECT_FALSE(run_tests("def add(a, b):\n    import os\n    os._exit(0)\n", "assert add(2, 3) == 5\n").passed);
}

// Each of these programs computes the wrong answer and tries to be scored as passing
// anyway (the hardening review's fake passes, and a few more). None may pass.
TEST(Sandbox, AWrongProgramCannotForgeAPass) {
  const std::string tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(1, 1) == 2\n\ncheck(add)\n";
  const std::string wrong = "def add(a, b):\n    return a - b\n";
  SandboxLimits l;
  l.seconds = 10;
  const std::vector<std::pair<std::string, std::string>> attacks = {
      {"print what a pass looks like", wrong + "print('passed')\nimport os\nos.write(1, b'\\npassed\\n')\n"},
      {"write it to every descriptor", wrong + "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'passed\\n')\n    except OSError:\n        pass\n"},
      {"print it at exit, after the failure",
       wrong + "import atexit, os\natexit.register(lambda: (print('passed'), os.write(1, b'passed\\n')))\n"},
      {"replace check through the module dict", wrong + "globals()['check'] = lambda candidate: None\n"},
      {"skip the asserts with a tracer",
       wrong + "import sys\nsys.settrace(lambda *a: None)\nimport builtins\nbuiltins.AssertionError = type('A', (Exception,), {})\n"},
      {"return an object equal to everything",
       "class Eq:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\ndef add(a, b):\n    return Eq()\n"},
      {"return an int subclass equal to everything",
       "class E(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\ndef add(a, b):\n    return E(0)\n"},
      {"shadow the built-ins the tests use", wrong + "def AssertionError(*a):\n    return None\nall = any = lambda *a: True\n"},
      // (without root the program runs as the same user as this test: it would kill the test)
      {geteuid() == 0 ? "write into every process's descriptors and kill them" : "",
       "import os, signal\ndef add(a, b):\n"
       "    for pid in os.listdir('/proc'):\n"
       "        if not pid.isdigit() or int(pid) == os.getpid():\n            continue\n"
       "        try:\n            for fd in os.listdir('/proc/' + pid + '/fd'):\n"
       "                try:\n                    os.write(os.open('/proc/' + pid + '/fd/' + fd, os.O_WRONLY), b'passed\\n')\n"
       "                except OSError:\n                    pass\n"
       "        except OSError:\n            pass\n"
       "        try:\n            os.kill(int(pid), signal.SIGKILL)\n        except OSError:\n            pass\n"
       "    return a - b\n"},
      {"exit with status 0 when called", "def add(a, b):\n    raise SystemExit(0)\n"},
  };
  for (const auto& [what, program] : attacks) {
    if (what.empty()) continue;
    const SandboxResult r = run_tests(program, tests, l);
    EXPECT_FALSE(r.passed) << what << "\n" << r.output;
    EXPECT_NE(r.status, "passed") << what;
  }
  // and the same tests pass a right answer, also one returned as a subclass of int
  EXPECT_TRUE(run_tests("def add(a, b):\n    return a + b\n", tests, l).passed);
  EXPECT_TRUE(run_tests("class E(int):\n    pass\ndef add(a, b):\n    return E(a + b)\n", tests, l).passed);
}

TEST(Sandbox, TestsReachTheProgramsObjectsThroughHandles) {
  // MBPP 367's shape: the test setup builds the program's own class, sets attributes
  const std::string node = "class Node:\n    def __init__(self, v):\n        self.v = v\n        self.left = None\n"
                           "def depth(n):\n    return 0 if n is None else 1 + max(depth(n.left), depth(getattr(n, 'right', None)))\n";
  EXPECT_TRUE(run_tests(node, "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\nassert depth(root) == 3\n"
                              "assert root.left.v == 2\nassert repr(root).startswith('<')\n").passed);
  // generators, exceptions, floats, bytes, nested containers, big ints
  const std::string program = "def gen(n):\n    yield from range(n)\n"
                              "def sqrt(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x ** 0.5\n"
                              "def echo(x):\n    return x\n";
  EXPECT_TRUE(run_tests(program,
                        "assert list(gen(4)) == [0, 1, 2, 3]\n"
                        "try:\n    sqrt(-1)\n    assert False\nexcept ValueError as e:\n    assert 'negative' in str(e)\n"
                        "assert abs(sqrt(2.0) - 1.4142135623730951) < 1e-15\n"
                        "v = [1, (2.5, 'x'), {'k': {3, 4}}, b'\\x00', None, True, 3 + 4j, 10 ** 5000, frozenset([1]), float('inf')]\n"
                        "assert echo(v) == v\nassert type(echo(True)) is bool and type(echo((1,))) is tuple\n")
                  .passed);
}

TEST(Sandbox, ContainsHostilePrograms) {
  SandboxLimits l;
  l.seconds = 3;
  // infinite loop: killed at the deadline
  auto r = run_python_sandboxed("while True:\n    pass", l);
  EXPECT_EQ(r.status, "timeout");
  EXPECT_LT(r.seconds, 6.0);
  // a loop that leaves the process group and ignores SIGTERM is still killed
  r = run_python_sandboxed("import os, signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                           "if os.fork() == 0:\n    os.setsid()\n    while True: pass\nwhile True: pass", l);
  EXPECT_EQ(r.status, "timeout");
  // 10 GB allocation: refused by the address-space limit
  r = run_python_sandboxed("x = bytearray(10 * 1024**3)", l);
  EXPECT_FALSE(r.passed);
  EXPECT_NE(r.output.find("MemoryError"), std::string::npos) << r.output;
  // fork bomb: contained by the process limit and the deadline; the machine keeps working
  r = run_python_sandboxed("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", l);
  EXPECT_FALSE(r.passed);
  EXPECT_LT(r.seconds, 8.0);
  EXPECT_TRUE(run_python_sandboxed("print(1)").passed) << "the sandbox works after a fork bomb";
}

TEST(Sandbox, IsolatesProcessesFilesAndNetworkAsRoot) {
  if (geteuid() != 0) {
    EXPECT_NE(sandbox_isolation().find("not root"), std::string::npos);
    GTEST_SKIP() << "the namespace isolation needs root (CI runs as root); without it programs run only rlimited";
  }
  SandboxLimits l;
  l.seconds = 3;
  auto r = run_python_sandboxed("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", l);
  EXPECT_FALSE(r.passed);
  // nothing of it survives: no process of user nobody is left
  int left = -1;
  for (int i = 0; i < 100 && left != 0; ++i, usleep(20000)) left = std::stoi(sh("ps -u nobody -o stat= | grep -vc Z").out);
  EXPECT_EQ(left, 0);
  // writing outside its directory: the real file system is unchanged
  const std::string outside = p("outside.txt");
  r = run_python_sandboxed("open('" + outside + "', 'w').write('x')", l);
  EXPECT_FALSE(r.passed);
  EXPECT_FALSE(fs::exists(outside));
  r = run_python_sandboxed("open('/tmp/palm_sandbox_escape', 'w').write('x')", l);
  EXPECT_FALSE(fs::exists("/tmp/palm_sandbox_escape")) << "its /tmp is a private tmpfs";
  // no network: a server listening on the host's loopback is unreachable
  const int srv = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(srv, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(srv, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(srv, reinterpret_cast<sockaddr*>(&a), &len);
  r = run_python_sandboxed("import socket\nsocket.create_connection(('127.0.0.1', " + std::to_string(ntohs(a.sin_port)) +
                               "), timeout=1)",
                           l);
  ::close(srv);
  EXPECT_FALSE(r.passed) << "connected to the host's loopback";
  EXPECT_NE(sandbox_isolation().find("namespaces"), std::string::npos);
  // nothing of the host's files, processes or sockets is in reach: the program asserts it
  // (a host process with a secret in its command line; a unix socket of the host)
  const pid_t secret = fork();
  if (secret == 0) {
    const int null = ::open("/dev/null", O_WRONLY);  // not our output pipe: ctest would wait for it
    dup2(null, 1);
    dup2(null, 2);
    execl("/bin/sleep", "palm-secret-argument", "30", nullptr);  // argv[0]: in its command line
    _exit(127);
  }
  const std::string sock_path = p("host.sock");
  const int us = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un ua{};
  ua.sun_family = AF_UNIX;
  std::snprintf(ua.sun_path, sizeof ua.sun_path, "%s", sock_path.c_str());
  ASSERT_EQ(::bind(us, reinterpret_cast<sockaddr*>(&ua), sizeof ua), 0);
  ASSERT_EQ(::listen(us, 1), 0);
  r = run_python_sandboxed(
      "import os, socket\n"
      "for path in ['" PALM_SOURCE_DIR "/README.md', '" + palm::testing_util::data_dir() + "/humaneval/HumanEval.jsonl', '" +
          palm::testing_util::fixtures_dir() + "/eval/humaneval/HumanEval.jsonl']:\n"
      "    assert not os.path.exists(path), path\n"
      "for secret in ['/tmp/runner/job.json', '/tmp/runner/runner.py']:\n"
      "    try:\n"
      "        open(secret).read()\n"
      "        raise SystemExit('read the tests: ' + secret)\n"
      "    except OSError:\n"
      "        pass\n"
      "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
      "assert len(pids) <= 3, pids\n"
      "for p in pids:\n"
      "    assert b'palm-secret-argument' not in open('/proc/' + p + '/cmdline', 'rb').read()\n"
      "for w in ['/run/lock/x', '/var/tmp/x', '/usr/x', '/etc/x', '/x']:\n"
      "    try:\n"
      "        open(w, 'w').write('x')\n"
      "        raise SystemExit('wrote ' + w)\n"
      "    except OSError:\n"
      "        pass\n"
      "s = socket.socket(socket.AF_UNIX)\n"
      "try:\n"
      "    s.connect('" + sock_path + "')\n"
      "    raise SystemExit('reached a host socket')\n"
      "except OSError:\n"
      "    pass\n",
      l);
  ::close(us);
  kill(secret, SIGKILL);
  waitpid(secret, nullptr, 0);
  EXPECT_TRUE(r.passed) << r.output;
}

TEST(Sandbox, MemoryIsCappedForTheWholeSandbox) {
  // three processes of 400 MiB each, every one within the per-process limit (2 GiB)
  SandboxLimits l;
  l.seconds = 20;
  l.group_memory_bytes = 512ll << 20;
  const std::string hog = "import os, time\nkids = []\nfor i in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
                          "        b = b'x' * (400 << 20)\n        time.sleep(3)\n        os._exit(0)\n    kids.append(pid)\n"
                          "for pid in kids:\n    assert os.waitpid(pid, 0)[1] == 0, 'a child died'\n";
  const SandboxResult r = run_python_sandboxed(hog, l);
  if (sandbox_isolation().find("cap on the whole sandbox: none (") != std::string::npos) {
    // no usable cgroup here (not root, no cgroup file system, none delegated): only the
    // per-process cap holds, the program runs, and the isolation line says why
    EXPECT_TRUE(r.passed) << "without a group cap 3 x 400 MiB fit: " << r.output;
    std::fprintf(stderr, "note: %s\n", sandbox_isolation().c_str());
    return;
  }
  EXPECT_FALSE(r.passed) << r.output;
  EXPECT_TRUE(r.out_of_memory) << r.output;
  EXPECT_NE(r.output.find("out of memory"), std::string::npos) << r.output;
  // within the cap the same shape passes
  l.group_memory_bytes = 1536ll << 20;
  EXPECT_TRUE(run_python_sandboxed(hog, l).passed);
}

TEST(Sandbox, NothingOutlivesItsDeadlineEvenAfterSetsid) {
  if (geteuid() != 0) GTEST_SKIP() << "the namespace sandbox needs root (CI runs as root)";
  auto nobody_left = [] {
    int left = -1;
    for (int i = 0; i < 100 && left != 0; ++i, usleep(20000))
      left = std::stoi(sh("ps -u nobody,65533 -o stat= | grep -vc Z").out);
    return left;
  };
  ASSERT_EQ(nobody_left(), 0);
  SandboxLimits l;
  l.seconds = 2;
  // a grandchild in a session of its own, ignoring SIGTERM and SIGHUP, sleeping long
  const auto r = run_python_sandboxed("import os, signal, time\n"
                                      "if os.fork() == 0:\n"
                                      "    os.setsid()\n"
                                      "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                      "    signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
                                      "    if os.fork() == 0:\n"
                                      "        time.sleep(100)\n"
                                      "    os._exit(0)\n"
                                      "time.sleep(100)\n",
                                      l);
  EXPECT_EQ(r.status, "timeout");
  EXPECT_EQ(nobody_left(), 0) << "a process of the sandbox survived its deadline";
}

TEST(Sandbox, TheHelperHoldsNoDescriptorButItsOutput) {
  // the helper forked for a sandbox (it waits, it does not exec) must not keep palm's
  // descriptors: with --jobs >= 2 it held other sandboxes' pipes open, so their readers
  // missed EOF and correct programs were scored "timeout" (9 of 623 runs)
  if (geteuid() != 0) GTEST_SKIP() << "the helper exists only for the namespace sandbox (root)";
  const int extra = ::open("/dev/null", O_RDONLY);  // a descriptor of ours, as another job's pipe would be
  ASSERT_GE(extra, 0);
  SandboxLimits l;
  l.seconds = 5;
  SandboxResult r;
  std::thread run([&] { r = run_python_sandboxed("import time\ntime.sleep(1.5)", l); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the helper is waiting by now
  std::vector<std::string> fds;
  for (int i = 0; i < 100 && fds.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (const auto& e : fs::directory_iterator("/proc")) {
      std::ifstream st(e.path() / "stat");
      std::string line;
      if (!std::getline(st, line)) continue;
      std::istringstream f(line.substr(line.rfind(')') + 2));
      char state;
      int ppid = 0;
      f >> state >> ppid;
      if (ppid != getpid()) continue;
      std::error_code ec;
      for (const auto& fd : fs::directory_iterator(e.path() / "fd", ec)) fds.push_back(fd.path().filename().string());
    }
  }
  run.join();
  ::close(extra);
  EXPECT_EQ(r.status, "passed");
  std::sort(fds.begin(), fds.end());
  EXPECT_EQ(fds, (std::vector<std::string>{"0", "1", "2"}));
}

TEST(Sandbox, KillingPalmEvalKillsItsPrograms) {
  if (geteuid() != 0) GTEST_SKIP() << "the namespace sandbox needs root (CI runs as root)";
  const std::string he = palm::testing_util::fixtures_dir() + "/eval/humaneval/HumanEval.jsonl";
  const std::string c = completions("sleepers.jsonl", he, [](const json& j, int) {
    return json{{"task_id", j["task_id"]}, {"completion", "    import time\n    time.sleep(100)\n"}};
  });
  const pid_t pid = fork();
  if (pid == 0) {
    execl(PALM_BINARY, "palm", "eval", "--task", "humaneval", "--data", he.c_str(), "--completions", c.c_str(), "--timeout",
          "60", "--jobs", "2", nullptr);
    _exit(127);
  }
  int running = 0;
  for (int i = 0; i < 200 && running < 2; ++i, usleep(20000)) running = std::stoi(sh("ps -u nobody -o stat= | grep -vc Z").out);
  ASSERT_GE(running, 2) << "the programs started";
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  int left = -1;
  for (int i = 0; i < 100 && left != 0; ++i, usleep(20000))
    left = std::stoi(sh("ps -u nobody,65533 -o stat= | grep -vc Z").out);
  EXPECT_EQ(left, 0) << "programs or test runners outlived palm eval";
  sh("pkill -9 -u nobody; pkill -9 -u 65533");
}

// ---- oracle completions through the real binary ----
// Each check runs on the self-made fixtures (always) and on the full public set (when
// the data directory has it): the same rules, the set's own row counts.

const std::string kFix = palm::testing_util::fixtures_dir() + "/eval";
std::string data(const std::string& rel) { return palm::testing_util::data_dir() + "/" + rel; }

void humaneval_canonical_pass_and_wrong_fail(const std::string& file, int rows) {
  const auto good = completions("he_good.jsonl", file, [](const json& j, int) {
    return json{{"task_id", j["task_id"]}, {"completion", j["canonical_solution"]}};
  });
  json r = eval("--task humaneval --data " + file + " --completions " + good + " --samples-out " + p("he.jsonl"));
  EXPECT_EQ(r["n"], rows);
  EXPECT_DOUBLE_EQ(r["pass@1"].get<double>(), 1.0);
  EXPECT_TRUE(fs::exists(p("he.jsonl")));
  const auto bad = completions("he_bad.jsonl", file, [](const json& j, int) {
    return json{{"task_id", j["task_id"]}, {"completion", "    return None\n"}};
  });
  const int limit = std::min(rows, 40);
  r = eval("--task humaneval --data " + file + " --limit " + std::to_string(limit) + " --completions " + bad);
  EXPECT_EQ(r["n"], limit);
  EXPECT_DOUBLE_EQ(r["pass@1"].get<double>(), 0.0);
}

void pass_at_k_from_several_samples(const std::string& file) {
  // 10 samples per problem, the first c(problem) of them correct: pass@k is exact
  std::ifstream in(file);
  std::ofstream out(p("he_k.jsonl"));
  std::string line;
  double want1 = 0, want10 = 0;
  for (int i = 0; i < 4 && std::getline(in, line); ++i) {
    const json j = json::parse(line);
    const int c = i;  // 0, 1, 2, 3 correct of 10
    for (int s = 0; s < 10; ++s)
      out << json{{"task_id", j["task_id"]}, {"completion", s < c ? j["canonical_solution"].get<std::string>() : "    return None\n"}}.dump() << "\n";
    want1 += c / 10.0 / 4;
    want10 += (c > 0 ? 1.0 : 0.0) / 4;
  }
  out.close();
  const json r = eval("--task humaneval --data " + file + " --limit 4 --completions " + p("he_k.jsonl"));
  EXPECT_NEAR(r["pass@1"].get<double>(), want1, 1e-12);
  EXPECT_NEAR(r["pass@10"].get<double>(), want10, 1e-12);
  EXPECT_FALSE(r.contains("pass@100"));
}

void gsm8k_gold_100_and_off_by_one_0(const std::string& file, int rows) {
  const auto gold = completions("gsm_gold.jsonl", file, [](const json& j, int i) {
    return json{{"task_id", i}, {"completion", j["answer"]}};
  });
  json r = eval("--task gsm8k --data " + file + " --completions " + gold);
  EXPECT_EQ(r["n"], rows);
  EXPECT_DOUBLE_EQ(r["accuracy"].get<double>(), 1.0);
  const auto wrong = completions("gsm_wrong.jsonl", file, [](const json& j, int i) {
    const std::string a = j["answer"];
    const double v = std::stod([&] { std::string s = a.substr(a.rfind("####") + 4); s.erase(std::remove(s.begin(), s.end(), ','), s.end()); return s; }());
    return json{{"task_id", i}, {"completion", "The answer is " + std::to_string(v + 1) + "."}};
  });
  r = eval("--task gsm8k --data " + file + " --completions " + wrong);
  EXPECT_DOUBLE_EQ(r["accuracy"].get<double>(), 0.0);
}

void mbpp_reference_passes(const std::string& file, int rows) {
  const auto ref = completions("mbpp.jsonl", file, [](const json& j, int) {
    return json{{"task_id", j["task_id"]}, {"completion", j["code"]}};
  });
  json r = eval("--task mbpp --data " + file + " --completions " + ref);
  EXPECT_EQ(r["n"], rows);
  EXPECT_DOUBLE_EQ(r["pass@1"].get<double>(), 1.0);
  const auto wrong = completions("mbpp_wrong.jsonl", file, [](const json& j, int) {
    return json{{"task_id", j["task_id"]}, {"completion", "def nothing():\n    return None"}};
  });
  r = eval("--task mbpp --data " + file + " --completions " + wrong);
  EXPECT_DOUBLE_EQ(r["pass@1"].get<double>(), 0.0);
}

void bbh_targets_match(const std::string& file) {
  const json ex = json::parse(std::ifstream(file))["examples"];
  std::ofstream out(p("bbh.jsonl"));
  for (std::size_t i = 0; i < ex.size(); ++i)
    out << json{{"task_id", i}, {"completion", " Let's think. So the answer is " + ex[i]["target"].get<std::string>() + ".\n"}}.dump() << "\n";
  out.close();
  const json b = eval("--task bbh --data " + file + " --completions " + p("bbh.jsonl"));
  EXPECT_EQ(b["n"], ex.size());
  EXPECT_DOUBLE_EQ(b["accuracy"].get<double>(), 1.0) << file;
}

TEST(OracleFixtures, EveryFormatParsesAndScoresItsOracle) {
  humaneval_canonical_pass_and_wrong_fail(kFix + "/humaneval/HumanEval.jsonl", 4);
  pass_at_k_from_several_samples(kFix + "/humaneval/HumanEval.jsonl");
  gsm8k_gold_100_and_off_by_one_0(kFix + "/gsm8k/test.jsonl", 6);
  mbpp_reference_passes(kFix + "/mbpp/mbpp_test.jsonl", 3);
  bbh_targets_match(kFix + "/bigbench_hard/navigate.json");
}

TEST(Oracle, DataFilesMatchTheDocumentedChecksums) {
  PALM_REQUIRE_DATA("humaneval/HumanEval.jsonl");
  // every "| `file` | `sha256` |" row of docs/evaluation.md
  std::ifstream doc(PALM_SOURCE_DIR "/docs/evaluation.md");
  const std::regex row("^\\| `([^`]+)` \\| `([0-9a-f]{64})` \\|$");
  int checked = 0;
  for (std::string line; std::getline(doc, line);) {
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;
    const std::string file = data(m[1].str());
    ASSERT_TRUE(fs::exists(file)) << file;
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(sha256_hex(bytes), m[2].str()) << file;
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST(Oracle, HumanEvalCanonicalSolutionsPassAndAWrongSetFails) {
  PALM_REQUIRE_DATA("humaneval/HumanEval.jsonl");
  humaneval_canonical_pass_and_wrong_fail(data("humaneval/HumanEval.jsonl"), 164);
}

TEST(Oracle, PassAtKFromSeveralSamplesPerProblem) {
  PALM_REQUIRE_DATA("humaneval/HumanEval.jsonl");
  pass_at_k_from_several_samples(data("humaneval/HumanEval.jsonl"));
}

TEST(Oracle, Gsm8kGoldAnswersScore100AndOffByOneScores0) {
  PALM_REQUIRE_DATA("gsm8k/test.jsonl");
  gsm8k_gold_100_and_off_by_one_0(data("gsm8k/test.jsonl"), 1319);
}

TEST(Oracle, MbppReferenceCodePassesAndBbhTargetsMatch) {
  PALM_REQUIRE_DATA("mbpp/mbpp_test.jsonl");
  PALM_REQUIRE_DATA("bigbench_hard/date_understanding.json");
  mbpp_reference_passes(data("mbpp/mbpp_test.jsonl"), 500);
  for (const char* task : {"date_understanding", "sports_understanding"})
    bbh_targets_match(data(std::string("bigbench_hard/") + task + ".json"));
}

TEST(Oracle, BadInputIsAClearError) {
  const std::string he = kFix + "/humaneval/HumanEval.jsonl";
  std::ofstream(p("bad.jsonl")) << "{\"task_id\": \"HumanEval/0\", \"completion\": \"x\"}\nnot json\n";
  Cmd r = palm("eval --task humaneval --data " + he + " --completions " + p("bad.jsonl"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("bad.jsonl:2:"), std::string::npos) << r.err;
  std::ofstream(p("mc_bad.jsonl")) << "{\"prompt\": \"a\", \"choices\": [\"b\", \"c\"], \"answer\": 0}\n{\"prompt\": \"a\", \"choices\": [\"b\"], \"answer\": 0}\n";
  r = palm("eval --task mc --data " + p("mc_bad.jsonl") + " --model x.safetensors");
  EXPECT_NE(r.status, 0);
  r = palm("eval --task humaneval --data " + he + " --completions " + p("he_bad_missing.jsonl"));
  EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.err;
  std::ofstream(p("one.jsonl")) << "{\"task_id\": \"HumanEval/0\", \"completion\": \"    return True\\n\"}\n";
  r = palm("eval --task humaneval --data " + he + " --completions " + p("one.jsonl"));
  EXPECT_NE(r.err.find("no completion for task_id HumanEval/1"), std::string::npos) << r.err;
  r = palm("eval --task nosuch --data " + he + " --completions " + p("one.jsonl"));
  EXPECT_NE(r.err.find("unknown task 'nosuch'"), std::string::npos) << r.err;
  r = palm("eval --task piqa --data " + kFix + "/piqa/valid.jsonl --completions " + p("one.jsonl"));
  EXPECT_NE(r.err.find("--labels"), std::string::npos) << r.err;
}

// ---- a tiny trained model through every task ----

class TinyModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // corpus: English text plus three GSM8K-format test examples (for the contamination check)
    std::ifstream gsm(kFix + "/gsm8k/test.jsonl");
    std::ofstream corpus(p("corpus.txt"));
    // documents separated by "%%" lines: each paragraph of the text, each example
    std::ifstream text(palm::testing_util::fixtures_dir() + "/text/english.txt");
    std::string line;
    while (std::getline(text, line)) corpus << (line.empty() ? "%%" : line) << "\n";
    for (int i = 0; i < 3 && std::getline(gsm, line); ++i) {
      const json j = json::parse(line);
      corpus << "%%\n" << j["question"].get<std::string>() << "\n" << j["answer"].get<std::string>() << "\n";
    }
    corpus.close();
    ASSERT_EQ(palm("tokenizer train --input " + p("corpus.txt") + " --vocab-size 600 --out " + p("tok")).status, 0);
    ASSERT_EQ(palm("data build --tokenizer " + p("tok") + " --source text=" + p("corpus.txt") + ":sep=%% --out " + p("data")).status, 0);
    const Cmd r = palm("train --preset tiny --data " + p("data") + " --out " + p("run") +
                       " --steps 30 --batch-size 4 --seq-len 128 --checkpoint-every 30 --eval-every 30");
    ASSERT_EQ(r.status, 0) << r.err;
  }
};

TEST_F(TinyModel, RunsEveryTaskEndToEnd) {
  const std::string m = "--model " + p("run") + " --limit 3 ";
  std::ofstream(p("mc.jsonl")) << "{\"prompt\": \"To be or not\", \"choices\": [\" to be\", \" a fish\", \" 12\"], \"answer\": 0}\n"
                                  "{\"prompt\": \"ROMEO:\", \"choices\": [\" O\", \" x\"], \"answer\": 0}\n"
                                  "{\"prompt\": \"The king\", \"choices\": [\" is\", \" qq\"], \"answer\": 0}\n";
  json r = eval(m + "--task mc --data " + p("mc.jsonl") + " --shots 1 --samples-out " + p("mc_out.jsonl"));
  EXPECT_EQ(r["n"], 2);
  EXPECT_EQ(r["shots"], 1);
  EXPECT_TRUE(r.contains("accuracy") && r.contains("accuracy_norm"));
  EXPECT_EQ(r["model_sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(r["tokenizer_sha256"].get<std::string>().size(), 64u);
  // multiple-choice log-likelihoods are the model's: palm score agrees (checked on line 1)
  std::ifstream s(p("mc_out.jsonl"));
  std::string line;
  std::getline(s, line);
  EXPECT_EQ(json::parse(line)["choice_logprobs"].size(), 2u);
  r = eval(m + "--task piqa --data " + kFix + "/piqa/valid.jsonl --labels " + kFix + "/piqa/valid-labels.lst");
  EXPECT_EQ(r["n"], 3);
  r = eval(m + "--task bbh --data " + kFix + "/bigbench_hard/navigate.json --cot-prompts " + kFix +
           "/bigbench_hard/cot-prompts/navigate.txt");
  EXPECT_EQ(r["shots"], 3);
  EXPECT_TRUE(r["chain_of_thought"].get<bool>());
  EXPECT_GE(r["prompts_truncated_left"].get<int>(), 1) << "a tiny context cannot hold 3 CoT exemplars";
  r = eval(m + "--task gsm8k --data " + kFix + "/gsm8k/test.jsonl --shots 2 --no-cot");
  EXPECT_FALSE(r["chain_of_thought"].get<bool>());
  r = eval(m + "--task humaneval --data " + kFix + "/humaneval/HumanEval.jsonl --num-samples 2 --seed 1");
  EXPECT_TRUE(r.contains("pass@1"));
  EXPECT_DOUBLE_EQ(r["temperature"].get<double>(), 0.8);
  r = eval(m + "--task mbpp --data " + kFix + "/mbpp/mbpp_test.jsonl");
  EXPECT_EQ(r["shots"], 3);
  // greedy evaluation is deterministic
  const json a = eval(m + "--task gsm8k --data " + kFix + "/gsm8k/test.jsonl --shots 1 --samples-out " + p("g1.jsonl"));
  const json b = eval(m + "--task gsm8k --data " + kFix + "/gsm8k/test.jsonl --shots 1 --samples-out " + p("g2.jsonl"));
  EXPECT_EQ(std::ifstream(p("g1.jsonl")).rdbuf() ? sh("cmp " + p("g1.jsonl") + " " + p("g2.jsonl")).status : 1, 0);
}

TEST_F(TinyModel, PerplexityBitsPerByteEqualsPyTorchsLogprobs) {
  // one window (fewer tokens than the context): bits/byte = -sum log p(token | prefix) /
  // ln 2 / bytes, with the log-probabilities from the float64 PyTorch reference
  const std::string text = "To be, or not to be: that is the question. Whether the model predicts it is what we measure.";
  std::ofstream(p("ppl.txt")) << text;
  const json r = eval("--model " + p("run") + " --task perplexity --data " + p("ppl.txt"));
  const Cmd enc = palm("tokenizer encode --tokenizer " + p("tok") + " --text '" + text + "'");
  ASSERT_EQ(enc.status, 0) << enc.err;
  std::istringstream ids_in(enc.out);
  std::string ids = "1";  // <eod>: the document start the evaluation predicts from
  int n = 0;
  for (std::string id; ids_in >> id; ++n) ids += " " + id;
  ASSERT_LT(n, 200) << "one window";
  std::string model;
  for (const auto& e : fs::directory_iterator(p("run/checkpoints")))
    if (fs::exists(e.path() / "model.safetensors")) model = (e.path() / "model.safetensors").string();
  const Cmd ref = sh("/usr/bin/python3 " PALM_SOURCE_DIR "/tools/palm_ref.py score --model " + model + " --tokens '" + ids + "'");
  ASSERT_EQ(ref.status, 0) << ref.err;
  double nll = 0;
  const json lps = json::parse(ref.out)["logprobs"];
  for (const auto& lp : lps) nll -= lp.get<double>();
  const double want = nll / std::log(2.0) / double(text.size());
  EXPECT_EQ(r["tokens"], n);
  EXPECT_EQ(r["bytes"], text.size());
  EXPECT_NEAR(r["bits_per_byte"].get<double>(), want, 1e-4 * want) << ref.out << " for " << ids;
  EXPECT_NEAR(r["token_perplexity"].get<double>(), std::exp(nll / n), 1e-4 * std::exp(nll / n));
}

TEST_F(TinyModel, ContaminationFindsTheExamplesInTheTrainingData) {
  const std::string data = kFix + "/gsm8k/test.jsonl";
  const auto gold = completions("gsm_gold10.jsonl", data, [](const json& j, int i) {
    return json{{"task_id", i}, {"completion", j["answer"]}};
  });
  const json r = eval("--task gsm8k --data " + data + " --limit 10 --completions " + gold + " --contamination " + p("data") +
                      " --samples-out " + p("cont.jsonl"));
  EXPECT_EQ(r["contamination"]["contaminated"], 3);
  EXPECT_EQ(r["contamination"]["clean"]["n"], 3);  // 6 fixture problems, the first 3 in the corpus
  EXPECT_DOUBLE_EQ(r["contamination"]["clean"]["accuracy"].get<double>(), 1.0);
  std::ifstream s(p("cont.jsonl"));
  std::string line;
  for (int i = 0; std::getline(s, line); ++i) EXPECT_EQ(json::parse(line)["contaminated"].get<bool>(), i < 3) << i;
}

}  // namespace
