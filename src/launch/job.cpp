#include "launch/job.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/check.h"

namespace palm {

namespace {

constexpr std::size_t kTailBytes = 64 * 1024;
using Clock = std::chrono::steady_clock;

}  // namespace

Job::Job(const std::vector<std::string>& argv, const std::string& launch_id, bool echo) : echo_(echo), id_(launch_id) {
  PALM_CHECK(!argv.empty(), "empty launcher command");
  int fds[2];
  PALM_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string env = "PALM_LAUNCH_ID=" + id_;
  pid_ = ::fork();
  PALM_CHECK(pid_ >= 0, "fork: ", std::strerror(errno));
  if (pid_ == 0) {
    sigset_t none;  // StopSignals blocks SIGINT/SIGTERM in our threads; an exec keeps the mask
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setsid();  // its own session and process group: one kill reaches the launcher's tree
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::putenv(const_cast<char*>(env.c_str()));
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "palm launch: cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(fds[1]);
  out_fd_ = fds[0];
}

Job::~Job() {
  if (!exited_) stop(2.0);
  if (out_fd_ >= 0) ::close(out_fd_);
}

void Job::drain(int timeout_ms) {
  if (out_fd_ < 0) {
    if (timeout_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
    return;
  }
  pollfd p{out_fd_, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return;
  char buf[8192];
  const ssize_t n = ::read(out_fd_, buf, sizeof buf);
  if (n <= 0) {  // every writer has closed it
    ::close(out_fd_);
    out_fd_ = -1;
    return;
  }
  if (echo_) std::fwrite(buf, 1, std::size_t(n), stderr);
  tail_.append(buf, std::size_t(n));
  if (tail_.size() > kTailBytes) tail_.erase(0, tail_.size() - kTailBytes);
}

bool Job::wait_for(double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (!exited_) {
    const int ms = int(std::max(0.0, std::chrono::duration<double, std::milli>(end - Clock::now()).count()));
    drain(std::min(ms, 100));
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
      exited_ = true;
      for (int i = 0; i < 50 && out_fd_ >= 0; ++i) drain(10);  // what it wrote last
      break;
    }
    if (Clock::now() >= end) break;
  }
  return exited_;
}

int Job::exit_code() const {
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

void Job::signal(int sig) {
  if (!exited_) ::kill(-pid_, sig);
}

void Job::stop(double grace) {
  signal(SIGTERM);
  wait_for(grace);
  for (int round = 0; round < 100; ++round) {
    if (!exited_) ::kill(-pid_, SIGKILL);
    const auto left = processes_of_launch(id_);
    for (const pid_t p : left) ::kill(p, SIGKILL);  // stopped ones too: SIGKILL needs no SIGCONT
    wait_for(0.05);
    if (exited_ && left.empty()) return;
  }
  std::fprintf(stderr, "palm launch: warning: processes of launch %s survived SIGKILL for 5 s\n", id_.c_str());
}

std::vector<pid_t> processes_of_launch(const std::string& id) {
  std::vector<pid_t> out;
  const std::string needle = "PALM_LAUNCH_ID=" + id;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == ::getpid()) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/environ", std::ios::binary);
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string env = ss.str();
    for (std::size_t at = 0; at < env.size();) {
      const std::size_t z = env.find('\0', at);
      const std::size_t len = (z == std::string::npos ? env.size() : z) - at;
      if (len == needle.size() && env.compare(at, len, needle) == 0) {
        // a zombie keeps its environ readable as empty; one that is listed is alive
        out.push_back(pid_t(pid));
        break;
      }
      if (z == std::string::npos) break;
      at = z + 1;
    }
  }
  ::closedir(d);
  return out;
}

}  // namespace palm
