// base/signals.h's SignalsDeferred: asynchronous signals wait while palm computes (the
// caller's thread for the scope, its OpenMP workers for good), so no handler runs inside
// oneDNN's JIT GEMM, whose stack pointer may point into the heap (oneDNN #4845).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "base/signals.h"
#include "base/threads.h"
#include "kernels/backend.h"

namespace palm {
namespace {

std::atomic<long> g_hits{0}, g_off_stack{0};
std::atomic<char*> g_stack_lo{nullptr}, g_stack_hi{nullptr};
// Counts, and counts the runs whose frame is not on the thread's stack (rsp elsewhere).
void count_hit(int) {
  g_hits++;
  char* frame = static_cast<char*>(__builtin_frame_address(0));
  if (g_stack_lo && (frame < g_stack_lo || frame > g_stack_hi)) g_off_stack++;
}

void note_this_threads_stack() {
  pthread_attr_t attr;
  pthread_getattr_np(pthread_self(), &attr);
  void* lo = nullptr;
  std::size_t size = 0;
  pthread_attr_getstack(&attr, &lo, &size);
  pthread_attr_destroy(&attr);
  g_stack_lo = static_cast<char*>(lo);
  g_stack_hi = static_cast<char*>(lo) + size;
}

// Installs a counting SIGUSR1 handler for the test's duration (SA_RESTART, as a program would).
struct CountingHandler {
  struct sigaction previous {};
  CountingHandler() {
    g_hits = 0;
    g_off_stack = 0;
    note_this_threads_stack();
    struct sigaction sa {};
    sa.sa_handler = count_hit;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &previous);
  }
  ~CountingHandler() { sigaction(SIGUSR1, &previous, nullptr); }
};

bool blocked_here(int sig) {
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, nullptr, &now);
  return sigismember(&now, sig) == 1;
}

// SigBlk of every thread of this process but the calling one, from /proc.
std::vector<std::uint64_t> other_threads_blocked_masks() {
  std::vector<std::uint64_t> masks;
  const std::string self = std::to_string(gettid());
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    if (task.path().filename() == self) continue;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("SigBlk:", 0) == 0) masks.push_back(std::stoull(line.substr(7), nullptr, 16));
  }
  return masks;
}

TEST(SignalsDeferred, HoldsSignalsUntilTheScopeEndsAndBlocksTheWorkersForGood) {
  const CountingHandler handler;
  set_threads(2);
  ASSERT_FALSE(blocked_here(SIGUSR1));
  {
    const SignalsDeferred deferred;
    EXPECT_TRUE(blocked_here(SIGUSR1));   // handled: deferred
    EXPECT_TRUE(blocked_here(SIGRTMIN));  // real-time: deferred
    EXPECT_FALSE(blocked_here(SIGTERM));  // its default action: acts at once
    EXPECT_FALSE(blocked_here(SIGSEGV));  // a fault is not deferred
    pthread_kill(pthread_self(), SIGUSR1);
    pthread_kill(pthread_self(), SIGUSR1);
    EXPECT_EQ(g_hits.load(), 0);
  }
  EXPECT_FALSE(blocked_here(SIGUSR1));
  EXPECT_EQ(g_hits.load(), 1);  // delivered once the scope ended (a standard signal pends once)
  const auto masks = other_threads_blocked_masks();
  ASSERT_GE(masks.size(), 1u) << "two threads: one OpenMP worker expected";
  for (const std::uint64_t m : masks) {
    EXPECT_TRUE(m >> (SIGUSR1 - 1) & 1) << std::hex << m;
    EXPECT_TRUE(m >> (SIGTERM - 1) & 1) << std::hex << m;  // workers: every asynchronous signal
    EXPECT_FALSE(m >> (SIGSEGV - 1) & 1) << std::hex << m;
  }
}

TEST(SignalsDeferred, AComputeThreadBlocksEveryAsynchronousSignalForGood) {
  set_threads(2);
  bool usr1 = false, term = false, segv = true;
  std::thread worker([&] {
    block_signals_in_compute_thread();
    usr1 = blocked_here(SIGUSR1);  // no handler now: blocked all the same (one may come later)
    term = blocked_here(SIGTERM);
    segv = blocked_here(SIGSEGV);
  });
  worker.join();
  EXPECT_TRUE(usr1);
  EXPECT_TRUE(term);
  EXPECT_FALSE(segv);
  EXPECT_FALSE(blocked_here(SIGUSR1));  // the test's own thread untouched
}

// Without this guard a handler ran with its frame off the stack within the first second
// of these products (1024 x 128 x 128, a tiny model's projection; oneDNN's sgemm path)
// and glibc then aborted in free; with it, thousands of signals sent during them are
// delivered between products, on the stack, and the heap stays intact.
TEST(SignalsDeferred, SignalsSentDuringOneDnnProductsLeaveTheHeapIntact) {
  const CountingHandler handler;
  set_threads(2);
  Backend& be = process_backend("cpu");
  const std::int64_t m = 1024, n = 128, k = 128;
  std::vector<float> a(std::size_t(m * k), 0.5f), b(std::size_t(n * k), 0.25f), c(std::size_t(m * n));
  std::atomic<bool> stop{false};
  const pthread_t target = pthread_self();
  std::thread spammer([&] {
    while (!stop) {
      pthread_kill(target, SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  const auto start = std::chrono::steady_clock::now();
  int products = 0;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(3)) {
    const SignalsDeferred deferred;
    be.gemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
    std::vector<char> churn(std::size_t(1) << 20);  // malloc and free: a corrupt heap aborts here
    churn[0] = 1;
    ++products;
  }
  stop = true;
  spammer.join();
  EXPECT_GT(g_hits.load(), 0);
  EXPECT_EQ(g_off_stack.load(), 0) << "a handler ran with the stack pointer off the stack";
  EXPECT_GT(products, 0);
  EXPECT_FLOAT_EQ(c[0], float(k) * 0.125f);
}

}  // namespace
}  // namespace palm
