// Runs untrusted Python (model-written code) in separate, contained processes: never
// in-process and never through a shell.
//
// Two processes per program. The program (prompt + completion) runs in one and, once
// loaded, serves calls; the data set's tests run in the other, the test runner, which
// reaches the program's functions only through calls whose results cross as plain data
// (ints, strings, lists...; an object of the program's own stays there as a handle with
// no == of its own). The verdict travels on a pipe only the runner holds, and a pass
// needs "passed" there plus the runner's exit status 0: nothing the program prints,
// registers at exit, traces, patches or returns can forge it.
//
// As root (CI, containers) both run as pid 1's children in fresh PID, mount, network and
// IPC namespaces with an empty read-only root (read-only /usr and /etc, a fresh /proc,
// private /tmp), no network interface but a downed loopback; the program as `nobody`,
// the runner as another unprivileged user (so the program can neither signal, trace nor
// open the runner's descriptors), rlimits on each, and, where the kernel's cgroups can be
// used, one memory and process cap on the whole sandbox. On timeout or palm's death the
// namespace's init dies and every process in it with it. Without root the namespaces are
// unavailable: both run in a fresh temporary directory under the rlimits and their process
// group only, the runner made non-dumpable; isolation() says so.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace palm {

struct SandboxLimits {
  double seconds = 10.0;                        // wall clock
  std::int64_t memory_bytes = 2ll << 30;        // address space of each process
  std::int64_t group_memory_bytes = 2ll << 30;  // the whole sandbox's memory (with cgroups)
  std::int64_t processes = 32;                  // tasks: RLIMIT_NPROC per user; the group's pids cap
  std::int64_t file_bytes = 16ll << 20;         // largest file it may write
  std::int64_t output_bytes = 64ll << 10;       // stdout+stderr kept (the tail)
};

struct SandboxProgram {
  std::string program;  // untrusted: what the model wrote (with its prompt), run as __main__
  std::string tests;    // the data set's tests, run by the test runner
  std::string prefix;   // trusted code the runner runs before the tests (HumanEval: the prompt's helpers)
  // The program's functions the tests call. Empty: every name the tests use that the
  // program defines (never a built-in's name).
  std::vector<std::string> calls;
};

struct SandboxResult {
  bool passed = false;
  std::string status;  // passed | failed | timeout
  int exit_code = -1;  // the test runner's exit status, or 128 + signal
  double seconds = 0;
  bool out_of_memory = false;  // the sandbox's memory cap was hit
  std::string output;          // the tail of everything both processes wrote to stdout/stderr
};

SandboxResult run_python_sandboxed(const SandboxProgram& program, const SandboxLimits& limits = {});

// e.g. "namespaces (pid, mount, net, ipc) + separate users + rlimits + cgroup v1 (memory, pids)".
std::string sandbox_isolation();

}  // namespace palm
