#include "serve/http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/beast/http.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "base/check.h"

namespace palm {

namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kSliceMs = 100;  // waits are cut into slices so that stop() is seen promptly

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

const char* reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < s.size() && (hi = hex_digit(s[i + 1])) >= 0 && (lo = hex_digit(s[i + 2])) >= 0) {
      out += char(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

double seconds_until(Clock::time_point t) { return std::chrono::duration<double>(t - Clock::now()).count(); }

// Waits for `events` on fd until the deadline, in slices that check `stop` (may be null).
// 1: ready; 0: deadline passed; -1: stopped or error.
int wait_for(int fd, short events, Clock::time_point deadline, const std::atomic<bool>* stop) {
  for (;;) {
    if (stop && stop->load()) return -1;
    const double left = seconds_until(deadline);
    if (left <= 0) return 0;
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, std::min(kSliceMs, int(left * 1000) + 1));
    if (r < 0 && errno != EINTR) return -1;
    if (r > 0) return (p.revents & (POLLERR | POLLNVAL)) && !(p.revents & events) ? -1 : 1;
  }
}

}  // namespace

std::string HttpRequest::header(const std::string& name) const {
  const std::string want = lower(name);
  for (const auto& [k, v] : headers)
    if (lower(k) == want) return v;
  return "";
}

std::string HttpRequest::query(const std::string& name) const {
  const std::size_t q = target.find('?');
  if (q == std::string::npos) return "";
  for (std::size_t at = q + 1; at <= target.size();) {
    std::size_t end = target.find('&', at);
    if (end == std::string::npos) end = target.size();
    const std::string field = target.substr(at, end - at);
    const std::size_t eq = field.find('=');
    std::string key = field.substr(0, eq), value = eq == std::string::npos ? "" : field.substr(eq + 1);
    std::replace(key.begin(), key.end(), '+', ' ');
    std::replace(value.begin(), value.end(), '+', ' ');
    if (percent_decode(key) == name) return percent_decode(value);
    at = end + 1;
  }
  return "";
}

bool api_key_accepted(const HttpRequest& request, const std::string& key) {
  if (key.empty()) return true;
  const std::string got = request.header("Authorization"), want = "Bearer " + key;
  unsigned char diff = got.size() == want.size() ? 0 : 1;
  for (std::size_t i = 0; i < got.size(); ++i) diff |= static_cast<unsigned char>(got[i] ^ want[i % want.size()]);
  return diff == 0;
}

// ---------------------------------------------------------------- HttpExchange

HttpExchange::HttpExchange(int fd, const HttpRequest& request, const HttpLimits& limits, bool keep_alive)
    : fd_(fd), request_(request), limits_(limits), keep_alive_(keep_alive) {}

bool HttpExchange::send_all(const std::string& data) {
  std::size_t done = 0;
  while (ok_ && done < data.size()) {
    const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += std::size_t(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      // the deadline restarts with every bit of progress: a slow reader is fine, a stalled one is not
      const auto stall = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(limits_.write_seconds));
      if (wait_for(fd_, POLLOUT, stall, nullptr) != 1) ok_ = false;
    } else {
      ok_ = false;
    }
  }
  return ok_;
}

std::string HttpExchange::head(int status, const std::string& content_type, const HttpHeaders& extra,
                               const std::string& length_or_chunked) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\n";
  if (!content_type.empty()) h += "Content-Type: " + content_type + "\r\n";
  for (const auto& [k, v] : extra) {
    if (lower(k) == "connection") keep_alive_ = keep_alive_ && lower(v) != "close";
    else h += k + ": " + v + "\r\n";
  }
  h += length_or_chunked;
  h += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return h;
}

void HttpExchange::respond(int status, const std::string& content_type, const std::string& body, const HttpHeaders& extra) {
  PALM_CHECK(!responded(), "HTTP: a second response to one request");
  status_ = status;
  body_bytes_ = body.size();
  send_all(head(status, content_type, extra, "Content-Length: " + std::to_string(body.size()) + "\r\n") + body);
}

bool HttpExchange::start_stream(const std::string& content_type) {
  PALM_CHECK(!responded(), "HTTP: a second response to one request");
  status_ = 200;
  return send_all(head(200, content_type, {{"Cache-Control", "no-cache"}}, "Transfer-Encoding: chunked\r\n"));
}

bool HttpExchange::write(const std::string& data) {
  if (data.empty()) return ok_ && !client_gone();
  char size[24];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  body_bytes_ += data.size();
  return send_all(size + data + "\r\n");
}

void HttpExchange::finish() { send_all("0\r\n\r\n"); }

bool HttpExchange::client_gone() const {
  pollfd p{fd_, POLLRDHUP, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

// ---------------------------------------------------------------- HttpServer

HttpServer::HttpServer(HttpLimits limits, Handler handler, Precheck precheck, ErrorBody error_body, Log log)
    : limits_(limits),
      handler_(std::move(handler)),
      precheck_(std::move(precheck)),
      error_body_(std::move(error_body)),
      log_(std::move(log)) {}

HttpServer::~HttpServer() {
  stop();
  std::unique_lock<std::mutex> lock(mu_);
  all_closed_.wait(lock, [&] { return connections_.load() == 0; });
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

int HttpServer::bind(const std::string& host, int port) {
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  const std::string service = std::to_string(port);
  PALM_CHECK(getaddrinfo(host.c_str(), service.c_str(), &hints, &found) == 0 && found, "cannot bind ", host, ":", port,
             " (not an address of this machine)");
  std::string why;
  for (addrinfo* a = found; a && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // a backlog of 1024: a burst of clients is not met with dropped SYNs and 1 s retransmits
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) {
      listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  freeaddrinfo(found);
  PALM_CHECK(listen_fd_ >= 0, "cannot bind ", host, ":", port, " (", why.empty() ? "no usable address" : why, ")");
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  return ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
}

void HttpServer::run() {
  PALM_CHECK(listen_fd_ >= 0, "HTTP: run() before bind()");
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, kSliceMs) <= 0) continue;
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    // No TCP_NODELAY (cpp-httplib did not set it either): measured with it, 64 streams
    // lost ~15% of their tokens/s and gained inter-token tail (a packet per SSE chunk);
    // on a connection waiting for its ACK Nagle merges chunks instead.
    char host[INET6_ADDRSTRLEN] = "?";
    if (peer.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&peer)->sin_addr, host, sizeof host);
    if (peer.ss_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr, host, sizeof host);
    if (connections_.load() >= limits_.max_connections) {
      refuse(fd, 503, "too many connections (" + std::to_string(limits_.max_connections) + "); retry later");
      continue;
    }
    ++connections_;
    std::thread([this, fd, remote = std::string(host)] { serve_connection(fd, remote); }).detach();
  }
  ::close(listen_fd_);
  listen_fd_ = -1;
  std::unique_lock<std::mutex> lock(mu_);
  all_closed_.wait(lock, [&] { return connections_.load() == 0; });
}

void HttpServer::stop() { stopping_ = true; }

// Answers without reading the request (best effort: the socket is non-blocking) and closes.
void HttpServer::refuse(int fd, int status, const std::string& message) {
  const std::string body = error_body_(status, message);
  const std::string text = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
                           "\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  (void)!::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

void HttpServer::serve_connection(int fd, std::string remote) {
  std::string buffer;  // bytes received and not yet parsed (pipelined requests)
  auto deadline_in = [](double s) {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  // Reads more bytes into `buffer` before the deadline. 1: got some; 0: timed out;
  // -1: closed, stopped (only while `stoppable`) or failed.
  auto fill = [&](Clock::time_point deadline, bool stoppable) {
    const int w = wait_for(fd, POLLIN, deadline, stoppable ? &stopping_ : nullptr);
    if (w <= 0) return w;
    char chunk[16384];
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer.append(chunk, std::size_t(n));
      return 1;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR) ? 1 : -1;
  };
  bool first = true;
  for (bool keep_alive = true; keep_alive && !stopping_;) {
    HttpRequest req;
    req.remote = remote;
    // ---- wait for a request: the idle limit between requests, the header deadline for the first
    if (buffer.empty()) {
      if (fill(deadline_in(first ? limits_.header_seconds : limits_.idle_seconds), true) != 1) break;
    }
    first = false;
    // ---- its line and headers, within header_seconds and max_header_bytes
    http::request_parser<http::string_body> parser;
    parser.header_limit(std::uint32_t(limits_.max_header_bytes));
    parser.body_limit(std::uint64_t(limits_.max_body_bytes));
    parser.eager(false);  // stop after the headers: precheck() sees them before any of the body is parsed
    const auto header_deadline = deadline_in(limits_.header_seconds);
    boost::beast::error_code ec;
    int status = 0;
    std::string problem;
    HttpHeaders extra;
    bool gone = false;
    for (;;) {
      const std::size_t used = parser.put(boost::asio::buffer(buffer), ec);
      buffer.erase(0, used);
      if (ec == http::error::need_more) ec = {};
      if (ec || parser.is_header_done()) break;
      if (std::int64_t(buffer.size()) > limits_.max_header_bytes) {
        ec = http::error::header_limit;
        break;
      }
      const int got = fill(header_deadline, true);
      if (got == 0) {
        status = 408;
        problem = "the request's headers did not arrive within " + std::to_string(int(limits_.header_seconds)) + " s";
        break;
      }
      if (got < 0) {
        gone = true;  // closed by the client, or the server is stopping
        break;
      }
    }
    if (gone) break;
    if (ec == http::error::header_limit) {
      status = 431;
      problem = "the request line and headers exceed " + std::to_string(limits_.max_header_bytes) + " bytes";
    } else if (ec == http::error::body_limit) {
      status = 413;
      problem = "the request body exceeds " + std::to_string(limits_.max_body_bytes) + " bytes";
    } else if (ec) {
      status = 400;
      problem = "malformed HTTP request (" + ec.message() + ")";
    }
    if (status == 0) {
      const auto& h = parser.get();
      req.method = std::string(h.method_string());
      req.target = std::string(h.target());
      req.path = percent_decode(req.target.substr(0, req.target.find('?')));
      for (const auto& field : h) req.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
      keep_alive = parser.keep_alive();
      Refusal refusal = precheck_(req);
      if (refusal.status > 0) {
        status = refusal.status;  // answered before the body is read; the connection then closes
        problem = refusal.message;
        extra = std::move(refusal.headers);
      }
    }
    // ---- its body, within body_seconds (Beast enforces max_body_bytes, chunked or not)
    if (status == 0 && !parser.is_done()) {
      parser.eager(true);
      if (lower(req.header("Expect")) == "100-continue") (void)!::send(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, MSG_NOSIGNAL);
      const auto body_deadline = deadline_in(limits_.body_seconds);
      while (!parser.is_done()) {
        const std::size_t used = parser.put(boost::asio::buffer(buffer), ec);
        buffer.erase(0, used);
        if (ec == http::error::need_more) ec = {};
        if (ec) break;
        if (parser.is_done()) break;
        const int got = fill(body_deadline, false);
        if (got == 0) {
          status = 408;
          problem = "the request body did not arrive within " + std::to_string(int(limits_.body_seconds)) + " s";
          break;
        }
        if (got < 0) {
          if (parser.need_eof()) parser.put_eof(ec);
          if (!parser.is_done()) break;
        }
      }
      if (status == 0 && ec == http::error::body_limit) {
        status = 413;
        problem = "the request body exceeds " + std::to_string(limits_.max_body_bytes) + " bytes";
      } else if (status == 0 && (ec || !parser.is_done())) {
        status = 400;
        problem = ec ? "malformed HTTP request body (" + ec.message() + ")" : "the request body ended early";
      }
    }
    if (status != 0) {
      // an error before the handler: answer and close (what follows on the wire is unread)
      HttpExchange x(fd, req, limits_, false);
      x.respond(status, "application/json", error_body_(status, problem), extra);
      if (log_) log_(req, status, x.body_bytes());
      linger(fd);
      break;
    }
    req.body = std::move(parser.get().body());
    HttpExchange x(fd, req, limits_, keep_alive && !stopping_);
    handler_(x);
    if (!x.responded()) x.respond(500, "application/json", error_body_(500, "no response"));
    if (log_) log_(req, x.status(), x.body_bytes());
    keep_alive = x.keep_alive();
  }
  closed(fd);
}

// After an early answer the client may still be sending what we will not read: closing
// with unread bytes would reset the connection and could destroy the answer before the
// client reads it. Half-close, then read and discard until the client closes too, for
// at most 2 s (nothing is kept).
void HttpServer::linger(int fd) {
  ::shutdown(fd, SHUT_WR);
  const auto until = Clock::now() + std::chrono::seconds(2);
  char sink[16384];
  while (wait_for(fd, POLLIN, until, nullptr) == 1) {
    const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
  }
}

void HttpServer::closed(int fd) {
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
  std::lock_guard<std::mutex> lock(mu_);
  // The last connection gone: give what a burst allocated back to the system (glibc
  // keeps freed memory in per-thread arenas, so the server would stay at its peak).
  if (--connections_ == 0) malloc_trim(0);
  all_closed_.notify_all();
}

}  // namespace palm
