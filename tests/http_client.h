// The integration tests' view of palm's HTTP servers: a minimal HTTP/1.1 client over a
// socket (Connection: close, chunked bodies decoded) and a server started as a child
// process on a free port (the port read from its "listening on" line).
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace palm::testing_util {

struct Reply {
  int status = 0;
  std::string headers, body;
};

inline int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline std::string request_text(const std::string& method, const std::string& path, const std::string& body,
                         const std::string& extra_headers) {
  return method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

inline std::string dechunk(const std::string& s) {
  std::string out;
  std::size_t at = 0;
  while (at < s.size()) {
    const std::size_t nl = s.find("\r\n", at);
    if (nl == std::string::npos) break;
    const std::size_t n = std::stoul(s.substr(at, nl - at), nullptr, 16);
    if (n == 0) break;
    out += s.substr(nl + 2, n);
    at = nl + 2 + n + 2;
  }
  return out;
}

// One request on a new connection; status 0 when the server closed without an answer.
inline Reply http_request(int port, const std::string& method, const std::string& path, const std::string& body,
                          const std::string& headers) {
  Reply r;
  const int fd = connect_to(port);
  if (fd < 0) return r;
  const std::string req = request_text(method, path, body, headers);
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string raw;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, std::size_t(n));
  ::close(fd);
  const std::size_t end = raw.find("\r\n\r\n");
  if (raw.size() < 12 || end == std::string::npos) return r;
  r.status = std::stoi(raw.substr(9, 3));
  r.headers = raw.substr(0, end);
  r.body = raw.substr(end + 4);
  if (r.headers.find("Transfer-Encoding: chunked") != std::string::npos) r.body = dechunk(r.body);
  return r;
}

// SSE "data: ..." payloads of a stream, [DONE] included
inline std::vector<std::string> events(const std::string& body) {
  std::vector<std::string> out;
  for (std::size_t at = 0; (at = body.find("data: ", at)) != std::string::npos;) {
    const std::size_t end = body.find("\n\n", at);
    out.push_back(body.substr(at + 6, end - at - 6));
    at = end;
  }
  return out;
}

inline std::string slurp(const std::string& f) {
  std::ifstream in(f);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// `exec COMMAND 2>LOG` in a child; waits (12 s at most) for "listening on http://127.0.0.1:PORT".
struct ServerProcess {
  pid_t pid = -1;
  int port = 0;
  std::string log;
  ServerProcess(const std::string& command, const std::string& log_path) : log(log_path) {
    pid = ::fork();
    if (pid == 0) {
      const std::string cmd = "exec " + command + " 2>" + log;
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 600 && port == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const std::string s = slurp(log);
      const std::size_t at = s.find("listening on http://127.0.0.1:");
      if (at != std::string::npos) port = std::stoi(s.substr(at + 30));
    }
    EXPECT_GT(port, 0) << slurp(log);
  }
  int stop() {  // SIGTERM; the exit status
    if (pid <= 0) return -1;
    ::kill(pid, SIGTERM);
    int st = 0;
    ::waitpid(pid, &st, 0);
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  ~ServerProcess() { stop(); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
};

}  // namespace palm::testing_util
