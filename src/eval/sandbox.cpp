#include "eval/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/check.h"
#include "eval/cgroup.h"
#include "eval/sandbox_python.h"

namespace palm {

namespace {

constexpr uid_t kNobody = 65534;   // the program
constexpr uid_t kRunner = 65533;   // the test runner: any unprivileged uid but the program's
const char* const kPython = "/usr/bin/python3";

// Only async-signal-safe calls between fork and exec: write(2) and _exit.
[[noreturn]] void die(const char* what) {
  const char* e = std::strerror(errno);
  (void)!write(2, "palm sandbox: ", 14);
  (void)!write(2, what, std::strlen(what));
  (void)!write(2, ": ", 2);
  (void)!write(2, e, std::strlen(e));
  (void)!write(2, "\n", 1);
  _exit(125);
}

void set_limit(int resource, std::int64_t value) {
  rlimit r{rlim_t(value), rlim_t(value)};
  if (setrlimit(resource, &r) != 0) die("setrlimit");
}

void apply_limits(const SandboxLimits& l) {
  set_limit(RLIMIT_AS, l.memory_bytes);
  set_limit(RLIMIT_NPROC, l.processes);
  set_limit(RLIMIT_CPU, std::int64_t(l.seconds) + 1);
  set_limit(RLIMIT_FSIZE, l.file_bytes);
  set_limit(RLIMIT_NOFILE, 64);
  set_limit(RLIMIT_CORE, 0);
}

void write_file(const std::string& path, const std::string& text) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open a sandbox file");
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n <= 0) die("write a sandbox file");
    done += std::size_t(n);
  }
  close(fd);
}

// What the two processes read: the program and the candidate's server in `work`, the
// runner, its job (tests, prefix, calls) in `runner` (the program's user cannot read it
// as root: it holds the tests and their expected values).
struct SandboxFiles {
  std::string program, candidate_py, runner_py, job_json;
};

void write_files(const SandboxFiles& f, const std::string& work, const std::string& runner, bool as_root) {
  if (mkdir(work.c_str(), 0755) != 0 || mkdir(runner.c_str(), 0700) != 0) die("mkdir sandbox directories");
  write_file(work + "/program.py", f.program);
  write_file(work + "/candidate.py", f.candidate_py);
  write_file(runner + "/runner.py", f.runner_py);
  write_file(runner + "/job.json", f.job_json);
  if (as_root && (chown(work.c_str(), kNobody, kNobody) != 0 || chown(runner.c_str(), kRunner, kRunner) != 0 ||
                  chown((runner + "/runner.py").c_str(), kRunner, kRunner) != 0 ||
                  chown((runner + "/job.json").c_str(), kRunner, kRunner) != 0))
    die("chown sandbox directories");
}

// Puts `from[i]` at descriptor `first + i` and closes every other descriptor above 2.
void arrange_fds(std::initializer_list<int> from, int first) {
  std::vector<int> high;
  for (const int fd : from) {
    const int h = fcntl(fd, F_DUPFD, 100);
    if (h < 0) die("dup");
    high.push_back(h);
  }
  for (std::size_t i = 0; i < high.size(); ++i)
    if (dup2(high[i], first + int(i)) < 0) die("dup2");
  if (syscall(SYS_close_range, unsigned(first + int(high.size())), ~0u, 0u) != 0) die("close_range");
}

// The runner needs only the standard library: no site (-S), which saves ~5 ms a program.
[[noreturn]] void exec_python(const char* script) {
  const bool runner = std::strcmp(script, "runner.py") == 0;
  const char* argv[] = {"python3", "-I", "-B", "-u", runner ? "-S" : script, runner ? script : nullptr, nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", "HOME=/nonexistent", "LANG=C.UTF-8", "PYTHONHASHSEED=0", nullptr};
  execve(kPython, const_cast<char* const*>(argv), const_cast<char* const*>(envp));
  die("exec /usr/bin/python3");
}

// Becomes `uid` (as root), dies with its parent, takes the limits, execs the script.
[[noreturn]] void become(const char* dir, uid_t uid, bool as_root, const SandboxLimits& l, const char* script) {
  if (chdir(dir) != 0) die("chdir");
  if (as_root && (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0)) die("drop privileges");
  // changing credentials clears the death signal: set it now, as the new user
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl");
  apply_limits(l);
  exec_python(script);
}

void wait_for(pid_t pid, int& status) {
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// Starts the runner (verdict on descriptor 3, already in place), then the program, and
// ends with the runner's exit status once it exits. The program is killed then; in a pid
// namespace everything else goes when this process, its init, exits.
[[noreturn]] void run_pair(const std::string& work, const std::string& runner, bool as_root, const SandboxLimits& l) {
  int requests[2], replies[2], ready[2];
  if (pipe2(requests, O_CLOEXEC) != 0 || pipe2(replies, O_CLOEXEC) != 0 || pipe2(ready, O_CLOEXEC) != 0) die("pipe");
  const pid_t r = fork();
  if (r < 0) die("fork");
  if (r == 0) {
    arrange_fds({3, requests[1], replies[0], ready[1]}, 3);  // verdict, requests, replies, ready
    become(runner.c_str(), kRunner, as_root, l, "runner.py");
  }
  close(ready[1]);
  close(3);  // the verdict pipe: the runner's alone from here on
  // As root the program's user cannot touch the runner's process at all, so both start at
  // once; without root (one user) the program may start only once the runner is
  // non-dumpable, or it could open the runner's verdict descriptor through /proc.
  char byte = 'r';
  ssize_t n = 1;
  while (!as_root && (n = read(ready[0], &byte, 1)) < 0 && errno == EINTR) {
  }
  int status = 0;
  if (n != 1) {  // the runner failed to start: its exit status says so
    wait_for(r, status);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  const pid_t c = fork();
  if (c < 0) die("fork");
  if (c == 0) {
    arrange_fds({requests[0], replies[1]}, 3);  // requests, replies: nothing of the runner's
    become(work.c_str(), kNobody, as_root, l, "candidate.py");
  }
  for (const int fd : {requests[0], requests[1], replies[0], replies[1], ready[0]}) close(fd);
  wait_for(r, status);
  kill(c, SIGKILL);
  int ignored = 0;
  wait_for(c, ignored);
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

void bind_read_only(const char* from, const char* to) {
  if (mount(from, to, nullptr, MS_BIND | MS_REC, nullptr) != 0) die("bind mount");
  if (mount(nullptr, to, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0)
    die("remount read-only");
}

// The program's whole file system: a tmpfs root holding read-only binds of what the
// interpreter needs (/usr, /etc, the merged-/usr links, three devices), a fresh /proc of
// its own pid namespace and a private /tmp. Nothing of the host else: not the repository,
// not the data set's solutions, not /run, not the host's processes or unix sockets.
void enter_empty_root() {
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=0755") != 0) die("mount tmpfs");
  const char* root = "/tmp/root";
  if (mkdir(root, 0755) != 0 || mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0755") != 0)
    die("new root");
  if (chdir(root) != 0) die("chdir new root");
  for (const char* d : {"usr", "etc", "proc", "tmp", "dev", "oldroot"})
    if (mkdir(d, 0755) != 0) die("mkdir in new root");
  bind_read_only("/usr", "usr");
  bind_read_only("/etc", "etc");
  for (const char* link : {"bin", "lib", "lib64", "sbin"}) {  // Debian 12: links into /usr
    char target[256];
    const ssize_t n = readlink((std::string("/") + link).c_str(), target, sizeof target - 1);
    if (n > 0) {
      target[n] = '\0';
      if (symlink(target, link) != 0) die("symlink");
    }
  }
  for (const char* dev : {"null", "zero", "urandom"}) {
    const std::string to = std::string("dev/") + dev;
    const int fd = open(to.c_str(), O_WRONLY | O_CREAT, 0666);
    if (fd < 0) die("device file");
    close(fd);
    if (mount((std::string("/dev/") + dev).c_str(), to.c_str(), nullptr, MS_BIND, nullptr) != 0) die("bind device");
  }
  if (syscall(SYS_pivot_root, ".", "oldroot") != 0) die("pivot_root");
  if (chdir("/") != 0) die("chdir /");
  if (umount2("/oldroot", MNT_DETACH) != 0 || rmdir("/oldroot") != 0) die("detach the old root");
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) die("mount proc");
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777") != 0) die("mount tmpfs");
  if (mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0) die("root read-only");
}

// pid 1 of the new namespaces: private mounts, an empty root, the two processes.
[[noreturn]] void namespace_init(const SandboxFiles& files, const SandboxLimits& l) {
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("make mounts private");
  enter_empty_root();
  write_files(files, "/tmp/work", "/tmp/runner", true);
  run_pair("/tmp/work", "/tmp/runner", true, l);
}

bool namespaces_available() { return geteuid() == 0; }

}  // namespace

std::string sandbox_isolation() {
  const std::string cap = "memory and process cap on the whole sandbox: " + process_group_cap_kind();
  return namespaces_available()
             ? "namespaces (pid, mount, net, ipc) + empty root + separate users for program and tests + rlimits; " + cap
             : "not root: no namespaces, no network isolation; rlimits + temporary directory + process group, the "
               "test runner non-dumpable; " + cap;
}

SandboxResult run_python_sandboxed(const SandboxProgram& p, const SandboxLimits& l) {
  SandboxFiles files;
  files.program = p.program;
  files.candidate_py = std::string(kSandboxWirePy) + "\n" + kSandboxCandidatePy;
  files.runner_py = std::string(kSandboxWirePy) + "\n" + kSandboxRunnerPy;
  const bool ns = namespaces_available();
  files.job_json = nlohmann::json{{"tests", p.tests}, {"prefix", p.prefix}, {"calls", p.calls}, {"same_user", !ns}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string outer_dir;
  if (!ns) {
    char tmpl[] = "/tmp/palm-sandbox-XXXXXX";
    PALM_CHECK(mkdtemp(tmpl) != nullptr, "sandbox: cannot create a temporary directory: ", std::strerror(errno));
    outer_dir = tmpl;
  }
  const ProcessGroupCap cap(l.group_memory_bytes, l.processes);
  int output[2], verdict[2];
  PALM_CHECK(pipe2(output, O_CLOEXEC) == 0 && pipe2(verdict, O_CLOEXEC) == 0, "sandbox: pipe: ", std::strerror(errno));
  const auto start = std::chrono::steady_clock::now();
  const pid_t child = fork();
  PALM_CHECK(child >= 0, "sandbox: fork: ", std::strerror(errno));
  if (child == 0) {
    // no signal blocked: palm may call this with signals blocked (base/signals.h), and the
    // programs below would inherit that mask through exec
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    setpgid(0, 0);
    // palm eval ends (or is killed): this helper, and so its namespace, ends with it
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl");
    if (cap.available() && !cap.join_self()) die("join the sandbox's cgroup");
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(output[1], 1) < 0 || dup2(output[1], 2) < 0) die("redirect");
    // descriptor 3: the verdict; nothing else of palm's (another sandbox's pipe, inherited
    // by this fork from a concurrent job, held open here would keep that sandbox's reader
    // from its EOF)
    arrange_fds({verdict[1]}, 3);
    if (!ns) {
      write_files(files, outer_dir + "/work", outer_dir + "/runner", false);
      run_pair(outer_dir + "/work", outer_dir + "/runner", false, l);
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC) != 0) die("unshare");
    const pid_t init = fork();
    if (init < 0) die("fork");
    if (init == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // our parent killed on timeout: the namespace goes with it
      namespace_init(files, l);
    }
    close(3);
    int st = 0;
    wait_for(init, st);
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
  close(output[1]);
  close(verdict[1]);
  const auto deadline = start + std::chrono::duration<double>(l.seconds);
  std::string out;
  bool timed_out = false, eof = false;
  std::array<char, 4096> buf{};
  while (!eof) {
    const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd pf{output[0], POLLIN, 0};
    const int r = poll(&pf, 1, int(left * 1000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    const ssize_t n = read(output[0], buf.data(), buf.size());
    if (n <= 0) {
      eof = true;
    } else {
      out.append(buf.data(), std::size_t(n));
      if (std::int64_t(out.size()) > 2 * l.output_bytes) out.erase(0, out.size() - std::size_t(l.output_bytes));
    }
  }
  // Output closed (or the deadline passed): wait for the exit until the deadline.
  int st = 0;
  pid_t done = 0;
  while (!timed_out && (done = waitpid(child, &st, WNOHANG)) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    usleep(2000);
  }
  if (timed_out || done <= 0) {
    kill(-child, SIGKILL);
    kill(child, SIGKILL);
    wait_for(child, st);
  }
  kill(-child, SIGKILL);  // without namespaces: whatever of its process group is left
  // The verdict: at most a few bytes, written before the runner exited.
  std::string said;
  fcntl(verdict[0], F_SETFL, O_NONBLOCK);
  for (ssize_t n; (n = read(verdict[0], buf.data(), buf.size())) > 0 && said.size() < 64;) said.append(buf.data(), std::size_t(n));
  close(verdict[0]);
  close(output[0]);
  if (!outer_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(outer_dir, ec);
  }
  SandboxResult res;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  res.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  res.out_of_memory = cap.oom_kills() > 0;
  res.passed = !timed_out && said == "passed\n" && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  res.status = timed_out ? "timeout" : (res.passed ? "passed" : "failed");
  if (res.out_of_memory)
    out += "\npalm sandbox: out of memory (the sandbox's cap is " + std::to_string(l.group_memory_bytes >> 20) + " MiB)\n";
  if (std::int64_t(out.size()) > l.output_bytes) out.erase(0, out.size() - std::size_t(l.output_bytes));
  res.output = out;
  return res;
}

}  // namespace palm
