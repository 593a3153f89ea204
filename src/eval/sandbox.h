// Runs untrusted Python (model-written code) in a separate, contained process: never
// in-process and never through a shell.
//
// As root (CI, containers) each program runs as pid 1 of fresh PID, mount, network and
// IPC namespaces: no network interface but a downed loopback, fresh tmpfs over /tmp,
// /var/tmp and /dev/shm (its working directory is /tmp/work), user `nobody` (so the rest of
// the file system is read-only to it), and rlimits on address space, processes, CPU time,
// file size and open files. On timeout the namespace's init is killed, which kills every
// process it holds, also ones that left the process group. Without root the namespaces
// are unavailable: the program runs in a fresh temporary directory under the rlimits and
// its own process group only, and isolation() says so.
//
// A program passes only if it prints the run's random sentinel (a line of its own): the
// harness appends that print after the tests, so an early exit(0) is a failure.
#pragma once
#include <cstdint>
#include <string>

namespace palm {

struct SandboxLimits {
  double seconds = 10.0;                        // wall clock
  std::int64_t memory_bytes = 2ll << 30;        // address space
  std::int64_t processes = 32;                  // RLIMIT_NPROC for the sandbox user
  std::int64_t file_bytes = 16ll << 20;         // largest file it may write
  std::int64_t output_bytes = 64ll << 10;       // stdout+stderr kept (the tail)
};

struct SandboxResult {
  bool passed = false;
  std::string status;  // passed | failed | timeout
  int exit_code = -1;  // the program's exit status, or 128 + signal
  double seconds = 0;
  std::string output;  // the tail of stdout and stderr
};

// `program` is the whole Python source; the sentinel print is appended here.
SandboxResult run_python_sandboxed(const std::string& program, const SandboxLimits& limits = {});

// "namespaces (pid, mount, net, ipc) + nobody + rlimits" or "rlimits + temp dir (...)".
std::string sandbox_isolation();

}  // namespace palm
