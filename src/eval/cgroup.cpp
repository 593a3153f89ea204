#include "eval/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace palm {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool write_text(const std::string& path, const std::string& value) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = write(fd, value.data(), value.size()) == ssize_t(value.size());
  close(fd);
  return ok;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Where this process sits in a hierarchy: "0::/a/b" (v2) or "4:memory:/a/b" (v1).
std::string own_path(const std::string& controller) {
  std::istringstream in(read_text("/proc/self/cgroup"));
  for (std::string line; std::getline(in, line);) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string list = line.substr(a + 1, b - a - 1);
    if (controller.empty() ? list.empty() : ("," + list + ",").find("," + controller + ",") != std::string::npos)
      return line.substr(b + 1);
  }
  return "";
}

// Mount points by file-system type and (v1) controller, from /proc/self/mountinfo.
std::string mount_of(const std::string& fstype, const std::string& controller) {
  std::istringstream in(read_text("/proc/self/mountinfo"));
  for (std::string line; std::getline(in, line);) {
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream left(line.substr(0, dash)), right(line.substr(dash + 3));
    std::string id, parent, dev, root, point, type, source, options;
    left >> id >> parent >> dev >> root >> point;
    right >> type >> source >> options;
    if (type != fstype) continue;
    if (controller.empty() || ("," + options + ",").find("," + controller + ",") != std::string::npos) return point;
  }
  return "";
}

// The directory under which our groups go for one hierarchy: our own group when it is
// visible under the mount, else the mount's root.
std::string base_dir(const std::string& mount, const std::string& path) {
  const std::string own = mount + path;
  return path.size() > 1 && is_dir(own) ? own : mount;
}

std::string next_name() {
  static std::atomic<std::uint64_t> counter{0};
  return "palm-sandbox-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

}  // namespace

ProcessGroupCap::ProcessGroupCap(std::int64_t memory_bytes, std::int64_t processes) {
  const std::string name = next_name();
  auto make = [&](const std::string& base, const std::vector<std::pair<std::string, std::string>>& settings) {
    const std::string dir = base + "/" + name;
    if (mkdir(dir.c_str(), 0755) != 0) {
      reason_ = "cannot create " + dir + ": " + std::strerror(errno);
      return false;
    }
    dirs_.push_back(dir);
    for (const auto& [file, value] : settings) {
      if (file.front() == '?') {  // optional (swap accounting may be off)
        write_text(dir + "/" + file.substr(1), value);
      } else if (!write_text(dir + "/" + file, value)) {
        reason_ = "cannot write " + dir + "/" + file + ": " + std::strerror(errno);
        return false;
      }
    }
    const int fd = open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      reason_ = "cannot open " + dir + "/cgroup.procs";
      return false;
    }
    procs_fds_.push_back(fd);
    return true;
  };
  const std::string mem = std::to_string(memory_bytes), pids = std::to_string(processes);
  bool ok = false;
  if (const std::string v2 = mount_of("cgroup2", ""); !v2.empty()) {
    // our own group when it delegates memory to its children; else the hierarchy's root,
    // where root may make groups (systemd enables memory there but not in a session scope)
    for (const std::string& base : {base_dir(v2, own_path("")), v2}) {
      if (ok || !dirs_.empty()) break;
      if (("\n" + read_text(base + "/cgroup.subtree_control")).find("memory") != std::string::npos) {
        ok = make(base, {{"memory.max", mem}, {"?memory.swap.max", "0"}, {"?pids.max", pids}});
        kind_ = "cgroup v2";
      } else if (reason_.empty()) {
        reason_ = "cgroup v2 at " + base + " does not delegate the memory controller";
      }
    }
  }
  if (!ok && dirs_.empty()) {
    const std::string mm = mount_of("cgroup", "memory"), pm = mount_of("cgroup", "pids");
    if (mm.empty()) {
      if (reason_.empty()) reason_ = "no cgroup memory controller mounted";
    } else {
      ok = make(base_dir(mm, own_path("memory")),
                {{"memory.limit_in_bytes", mem}, {"?memory.memsw.limit_in_bytes", mem}, {"?memory.swappiness", "0"}}) &&
           (pm.empty() || make(base_dir(pm, own_path("pids")), {{"pids.max", pids}}));
      kind_ = pm.empty() ? "cgroup v1 (memory)" : "cgroup v1 (memory, pids)";
    }
  }
  if (ok) {
    reason_.clear();
  } else {
    release();
  }
}

ProcessGroupCap::~ProcessGroupCap() { release(); }

void ProcessGroupCap::release() {
  for (const int fd : procs_fds_) close(fd);
  procs_fds_.clear();
  for (const std::string& dir : dirs_) {
    // The sandbox's pid namespace is gone by now; anything still listed is on its way out
    // or escaped it: kill it, then remove the group once the kernel has let go of it.
    for (int attempt = 0; attempt < 200; ++attempt) {
      std::istringstream procs(read_text(dir + "/cgroup.procs"));
      for (long pid; procs >> pid;) kill(pid_t(pid), SIGKILL);
      if (rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  dirs_.clear();
}

bool ProcessGroupCap::join_self() const {
  char buf[24];
  int n = 0;
  for (long v = long(getpid()); v > 0; v /= 10) buf[n++] = char('0' + v % 10);
  char text[24];
  for (int i = 0; i < n; ++i) text[i] = buf[n - 1 - i];
  for (const int fd : procs_fds_)
    if (write(fd, text, std::size_t(n)) != n) return false;
  return true;
}

std::int64_t ProcessGroupCap::oom_kills() const {
  if (dirs_.empty()) return 0;
  for (const char* file : {"/memory.events", "/memory.oom_control"}) {
    std::istringstream in(read_text(dirs_.front() + file));
    for (std::string key; in >> key;) {
      std::int64_t v = 0;
      in >> v;
      if (key == "oom_kill") return v;
    }
  }
  return 0;
}

std::string process_group_cap_kind() {
  static const std::string kind = [] {
    const ProcessGroupCap probe(64ll << 20, 8);
    return probe.available() ? probe.kind() : "none (" + probe.unavailable_reason() + ")";
  }();
  return kind;
}

}  // namespace palm
