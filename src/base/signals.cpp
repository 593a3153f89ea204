#include "base/signals.h"

#include <omp.h>
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <ctime>

#include "base/threads.h"

namespace palm {

namespace {
sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

sigset_t asynchronous_set() {
  sigset_t set;
  sigfillset(&set);
  for (const int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) sigdelset(&set, fault);
  return set;
}

// In the calling thread's OpenMP workers (a team of current_threads()), for good.
void block_in_openmp_workers(const sigset_t& set) {
#pragma omp parallel num_threads(current_threads())
  if (omp_get_thread_num() != 0) pthread_sigmask(SIG_BLOCK, &set, nullptr);
}
}  // namespace

StopSignals::StopSignals(std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, &previous_mask_);
  watcher_ = std::thread([this, set] {
    const timespec tick{0, 100 * 1000 * 1000};  // how often the destructor's request is seen
    while (!done_) {
      siginfo_t info;
      const int sig = sigtimedwait(&set, &info, &tick);
      if (sig > 0 && on_signal_) on_signal_(sig);
    }
  });
}

StopSignals::~StopSignals() {
  done_ = true;
  watcher_.join();
  pthread_sigmask(SIG_SETMASK, &previous_mask_, nullptr);  // a signal still pending now acts as it would have
}

SignalsDeferred::SignalsDeferred() {
  const sigset_t all = asynchronous_set();
  // This thread: the standard signals that have a handler now, and the real-time ones; one
  // left to its default action (SIGTERM's, SIGQUIT's) acts at once, as no frame is pushed.
  sigset_t here = all;
  for (int sig = 1; sig < 32; ++sig) {
    struct sigaction action {};
    if (sigismember(&all, sig) == 1 && sigaction(sig, nullptr, &action) == 0 &&
        (action.sa_handler == SIG_DFL || action.sa_handler == SIG_IGN))
      sigdelset(&here, sig);
  }
  pthread_sigmask(SIG_BLOCK, &here, &previous_mask_);
  block_in_openmp_workers(all);
}

SignalsDeferred::~SignalsDeferred() { pthread_sigmask(SIG_SETMASK, &previous_mask_, nullptr); }

void block_signals_in_compute_thread() {
  const sigset_t all = asynchronous_set();
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  block_in_openmp_workers(all);
}

}  // namespace palm
