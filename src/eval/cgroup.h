// One memory and process cap for a whole group of processes (an evaluation sandbox: the
// program, everything it forks, and the test runner), through the kernel's cgroup file
// system. rlimits cap each process alone; 32 processes of 2 GiB each would still be 64 GiB.
//
// cgroup v2 is used where this process's group delegates the memory controller to its
// children; otherwise cgroup v1's memory and pids hierarchies, where they are mounted and
// writable (as root in most containers). Elsewhere the group is unavailable() and says why.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace palm {

class ProcessGroupCap {
 public:
  // Creates a fresh group capped at `memory_bytes` (no swap) and `processes` tasks.
  ProcessGroupCap(std::int64_t memory_bytes, std::int64_t processes);
  ~ProcessGroupCap();  // kills whatever is left in the group and removes it
  ProcessGroupCap(const ProcessGroupCap&) = delete;
  ProcessGroupCap& operator=(const ProcessGroupCap&) = delete;

  bool available() const { return !dirs_.empty(); }
  const std::string& unavailable_reason() const { return reason_; }
  const std::string& kind() const { return kind_; }  // "cgroup v2", "cgroup v1 (memory, pids)"
  // In a freshly forked child, before exec: moves the calling process (and so everything
  // it will start) into the group. Async-signal-safe; false if a write failed.
  bool join_self() const;
  // How many times the kernel's out-of-memory killer struck inside the group.
  std::int64_t oom_kills() const;

 private:
  std::vector<std::string> dirs_;  // one per hierarchy (v2: one; v1: memory, pids)
  std::vector<int> procs_fds_;     // their cgroup.procs, opened for join_self()
  std::string reason_, kind_;

  void release();
};

// "cgroup v2", "cgroup v1 (...)", or "none (why)": neither can be used here (probed once per process).
std::string process_group_cap_kind();

}  // namespace palm
