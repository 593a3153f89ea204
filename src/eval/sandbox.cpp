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
#include <random>

#include "base/check.h"

namespace palm {

namespace {

constexpr uid_t kNobody = 65534;
const char* const kPython = "/usr/bin/python3";

std::string random_hex() {
  std::random_device rd;
  std::string s;
  for (int i = 0; i < 4; ++i) {
    char buf[9];
    std::snprintf(buf, sizeof buf, "%08x", unsigned(rd()));
    s += buf;
  }
  return s;
}

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

void write_program(const char* path, const std::string& text) {
  const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("open program file");
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n <= 0) die("write program file");
    done += std::size_t(n);
  }
  close(fd);
}

[[noreturn]] void exec_python(const char* token_env) {
  const char* argv[] = {"python3", "-I", "-B", "-u", "program.py", nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", "HOME=/nonexistent", "LANG=C.UTF-8", "PYTHONHASHSEED=0", token_env,
                        nullptr};
  execve(kPython, const_cast<char* const*>(argv), const_cast<char* const*>(envp));
  die("exec /usr/bin/python3");
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

// pid 1 of the new namespaces: private mounts, an empty root, drop to nobody, exec.
[[noreturn]] void namespace_init(const std::string& program, const SandboxLimits& l, const char* token_env) {
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("make mounts private");
  enter_empty_root();
  if (mkdir("/tmp/work", 0755) != 0) die("mkdir /tmp/work");
  write_program("/tmp/work/program.py", program);
  if (chown("/tmp/work", kNobody, kNobody) != 0) die("chown /tmp/work");
  if (chdir("/tmp/work") != 0) die("chdir /tmp/work");
  if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0) die("drop to nobody");
  // changing credentials clears the death signal: set it again, now that we are nobody.
  // When the helper dies (timeout, palm eval killed) this pid 1 dies, and with it every
  // process of the namespace, setsid() or not.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl");
  apply_limits(l);
  exec_python(token_env);
}

bool namespaces_available() { return geteuid() == 0; }

}  // namespace

std::string sandbox_isolation() {
  return namespaces_available() ? "namespaces (pid, mount, net, ipc) + user nobody + rlimits"
                                : "rlimits + temporary directory + process group (not root: no namespaces, "
                                  "no network isolation)";
}

SandboxResult run_python_sandboxed(const std::string& program_body, const SandboxLimits& l) {
  const std::string token = random_hex();
  const std::string token_env = "PALM_SANDBOX_TOKEN=" + token;
  // The sentinel is read from the environment before the untrusted code runs and
  // printed after it; a program that exits early never prints it.
  const std::string program = "import os as __palm_os\n__palm_token = __palm_os.environ.pop('PALM_SANDBOX_TOKEN')\n" +
                              program_body + "\n\n__palm_os.write(1, ('\\n' + __palm_token + '\\n').encode())\n";
  const bool ns = namespaces_available();
  std::string outer_dir;
  if (!ns) {
    char tmpl[] = "/tmp/palm-sandbox-XXXXXX";
    PALM_CHECK(mkdtemp(tmpl) != nullptr, "sandbox: cannot create a temporary directory: ", std::strerror(errno));
    outer_dir = tmpl;
  }
  int pipefd[2];
  PALM_CHECK(pipe2(pipefd, O_CLOEXEC) == 0, "sandbox: pipe: ", std::strerror(errno));
  const auto start = std::chrono::steady_clock::now();
  const pid_t child = fork();
  PALM_CHECK(child >= 0, "sandbox: fork: ", std::strerror(errno));
  if (child == 0) {
    setpgid(0, 0);
    // palm eval ends (or is killed): this helper, and so its namespace, ends with it
    if (ns && prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl");
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(pipefd[1], 1) < 0 || dup2(pipefd[1], 2) < 0) die("redirect");
    // nothing else of palm's: another sandbox's pipe, inherited by this fork from a
    // concurrent job, held open here would keep that sandbox's reader from its EOF
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) die("close_range");
    if (!ns) {
      if (chdir(outer_dir.c_str()) != 0) die("chdir");
      write_program("program.py", program);
      apply_limits(l);
      exec_python(token_env.c_str());
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC) != 0) die("unshare");
    const pid_t init = fork();
    if (init < 0) die("fork");
    if (init == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // our parent killed on timeout: the namespace goes with it
      namespace_init(program, l, token_env.c_str());
    }
    int st = 0;
    while (waitpid(init, &st, 0) < 0 && errno == EINTR) {
    }
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
  close(pipefd[1]);
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
    pollfd p{pipefd[0], POLLIN, 0};
    const int r = poll(&p, 1, int(left * 1000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    const ssize_t n = read(pipefd[0], buf.data(), buf.size());
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
    while (waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
  }
  close(pipefd[0]);
  if (!outer_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(outer_dir, ec);
  }
  SandboxResult res;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  res.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  // passing: the sentinel line was printed (anything the interpreter writes at exit may follow it)
  const std::size_t at = out.find("\n" + token + "\n");
  res.passed = !timed_out && at != std::string::npos;
  res.status = timed_out ? "timeout" : (res.passed ? "passed" : "failed");
  if (at != std::string::npos) out.erase(at, token.size() + 2);
  if (std::int64_t(out.size()) > l.output_bytes) out.erase(0, out.size() - std::size_t(l.output_bytes));
  res.output = out;
  return res;
}

}  // namespace palm
