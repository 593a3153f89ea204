// No signal handler may run on a thread inside oneDNN's GEMM: Debian's oneDNN 2.6 points
// the stack pointer at a heap buffer inside its JIT GEMM kernels (oneDNN issue #4845,
// fixed in 3.11), so a handler run there writes its signal frame over the heap (a no-op
// SIGUSR1 handler during forward passes aborted in glibc's free within seconds).
//
// StopSignals: SIGINT and SIGTERM taken by one thread (sigwait) and blocked in every
// other. Construct it first in a command, before any other thread exists (OpenMP's
// workers included): a thread inherits the signal mask of the thread that creates it.
#pragma once
#include <signal.h>

#include <atomic>
#include <functional>
#include <thread>

namespace palm {

class StopSignals {
 public:
  // on_signal runs on the watcher thread, once per signal received.
  explicit StopSignals(std::function<void(int)> on_signal);
  ~StopSignals();  // stops the watcher and restores this thread's signal mask as it was
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  std::function<void(int)> on_signal_;
  std::atomic<bool> done_{false};
  sigset_t previous_mask_;
  std::thread watcher_;
};

// SignalsDeferred: for code that calls palm from a program that handles signals (`import
// palm`: Python handles SIGINT). While it lives, the asynchronous signals (all but the
// faults a thread raises itself) that have a handler when it is made, and the real-time
// ones, are blocked in this thread; every asynchronous signal is blocked for good in this
// thread's OpenMP workers (of a team of current_threads()), which only compute. On
// destruction this thread's mask is restored and a signal that came meanwhile is
// delivered then. A signal left to its default action (SIGTERM's, unless the program
// handles it) still acts at once: it runs no handler.
class SignalsDeferred {
 public:
  SignalsDeferred();
  ~SignalsDeferred();
  SignalsDeferred(const SignalsDeferred&) = delete;
  SignalsDeferred& operator=(const SignalsDeferred&) = delete;

 private:
  sigset_t previous_mask_;
};

// For a thread that only computes (a worker the program made): every asynchronous signal
// blocked for good in it and its OpenMP workers, whatever handlers come later.
void block_signals_in_compute_thread();

}  // namespace palm
