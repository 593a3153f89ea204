#include "base/signals.h"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <ctime>

namespace palm {

namespace {
sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

StopSignals::StopSignals(std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
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
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);  // a signal still pending now acts by default
}

}  // namespace palm
