// Running the real binary from the integration tests: stdout captured, stderr through a file.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

namespace palm::testing_util {

struct CmdResult {
  int status = -1;  // the exit status, -1 when killed by a signal
  std::string out, err;
};

// The exit status of a shell command whose output goes where the command sends it.
inline int run_status(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

inline CmdResult run_shell(const std::string& cmd, const std::string& stderr_file) {
  FILE* f = ::popen((cmd + " 2>" + stderr_file).c_str(), "r");
  CmdResult r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
  const int st = ::pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream e(stderr_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  return r;
}

}  // namespace palm::testing_util
