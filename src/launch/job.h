// One attempt of a launched job: the launcher (mpirun or srun) in a session of its own,
// its output passed through to ours with the last 64 KiB kept for diagnosis. Every process
// it starts carries PALM_LAUNCH_ID=<id> in its environment, so stop() finds them all on
// this host (a rank re-parented after its launcher died, a SIGSTOPped one) and leaves none.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace palm {

class Job {
 public:
  // echo: pass the output through to our stderr (else only keep its tail)
  Job(const std::vector<std::string>& argv, const std::string& launch_id, bool echo = true);
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // Passes output through for up to `seconds`; true once the launcher has exited.
  bool wait_for(double seconds);
  bool exited() const { return exited_; }
  int exit_code() const;    // 128 + signal when killed
  const std::string& output_tail() const { return tail_; }
  void signal(int sig);     // to the launcher's whole session
  // SIGTERM to the session (mpirun forwards it to the ranks), then after `grace` seconds
  // SIGKILL to the session and to every process of this host with our launch id; returns
  // once none is left.
  void stop(double grace);

 private:
  void drain(int timeout_ms);
  pid_t pid_ = -1;
  int out_fd_ = -1;
  bool exited_ = false;
  int status_ = 0;
  bool echo_ = true;
  std::string id_, tail_;
};

// Processes of this host whose environment holds PALM_LAUNCH_ID=id (readable ones: ours,
// or all as root).
std::vector<pid_t> processes_of_launch(const std::string& id);

}  // namespace palm
