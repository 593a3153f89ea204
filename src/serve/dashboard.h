// `palm dashboard RUN_DIR...`: the runs page and its read-only API without a model
// loaded (the same routes `palm serve --runs` adds next to the OpenAI API; serve/web.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace palm {

struct DashboardOptions {
  std::string host = "127.0.0.1";
  int port = 8080;           // 0: any free port (printed when listening)
  std::string api_key;       // non-empty: the runs API needs "Authorization: Bearer KEY"
  int max_connections = 512;
  bool log = true;           // one line per request on stderr
};

class Dashboard {
 public:
  Dashboard(const std::vector<std::string>& run_dirs, DashboardOptions o);
  ~Dashboard();
  Dashboard(const Dashboard&) = delete;
  Dashboard& operator=(const Dashboard&) = delete;

  void bind();       // throws Error naming the address when it cannot; prints the address
  void listen();     // until stop()
  void stop();       // safe from another thread
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace palm
