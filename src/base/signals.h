// SIGINT and SIGTERM taken by one thread (sigwait) and blocked in every other, so a
// signal never runs a handler on a compute thread inside a library (a handler on an
// OpenMP worker inside oneDNN corrupted the heap). Construct it first in a command,
// before any other thread exists (OpenMP's workers included): a thread inherits the
// signal mask of the thread that creates it.
#pragma once
#include <atomic>
#include <functional>
#include <thread>

namespace palm {

class StopSignals {
 public:
  // on_signal runs on the watcher thread, once per signal received.
  explicit StopSignals(std::function<void(int)> on_signal);
  ~StopSignals();  // stops the watcher and restores the signal mask
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  std::function<void(int)> on_signal_;
  std::atomic<bool> done_{false};
  std::thread watcher_;
};

}  // namespace palm
