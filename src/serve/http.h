// The HTTP/1.1 layer of `palm serve`: a thread per connection, requests parsed by
// Boost.Beast's parser, and every limit enforced before anything is buffered past it:
// header bytes (so 200,000 header lines cost nothing), body bytes (Content-Length and
// chunked alike), a deadline for a request's headers and another for its body (a client
// trickling a header line every few seconds is cut off), an idle limit on keep-alive
// connections, a stall limit on writes, and a connection limit answered with 503 at once.
// Stopping closes idle and half-sent connections immediately and lets handlers finish.
// docs/serving.md says why this layer replaced cpp-httplib.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace palm {

struct HttpLimits {
  std::int64_t max_body_bytes = 1 << 20;
  std::int64_t max_header_bytes = 16 << 10;  // request line and every header field together
  double header_seconds = 10;                // from a request's first byte (or the accept) to its last header
  double body_seconds = 30;                  // from the headers to the body's last byte
  double idle_seconds = 5;                   // keep-alive: closed after this long without a new request
  double write_seconds = 10;                 // a response that makes no progress for this long is abandoned
  int max_connections = 512;                 // more are answered 503 and closed
};

struct HttpRequest {
  std::string method;
  std::string target;  // as sent: path and query, still %-encoded
  std::string path;    // %-decoded, without the query
  std::vector<std::pair<std::string, std::string>> headers;  // names as sent
  std::string body;
  std::string remote;  // the peer's address
  // The first header field of that name (case-insensitive), or "".
  std::string header(const std::string& name) const;
  // The first query parameter of that name, %-decoded ('+' is a space), or "".
  std::string query(const std::string& name) const;
};

// Whether the request may pass: no key is set, or it sends "Authorization: Bearer KEY".
// Compared in time independent of where the strings differ (no timing oracle).
bool api_key_accepted(const HttpRequest& request, const std::string& key);

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// A handler's view of one request: answer it once, whole or as a chunked stream.
class HttpExchange {
 public:
  HttpExchange(int fd, const HttpRequest& request, const HttpLimits& limits, bool keep_alive);
  const HttpRequest& request() const { return request_; }

  void respond(int status, const std::string& content_type, const std::string& body, const HttpHeaders& extra = {});
  // A chunked response; write() returns false once the client is gone or has stalled for
  // write_seconds (stop writing then), finish() ends the stream.
  bool start_stream(const std::string& content_type);
  bool write(const std::string& data);
  void finish();
  // Whether the client has closed its side or reset (a waiting handler checks this to
  // cancel work nobody will read).
  bool client_gone() const;

  bool responded() const { return status_ != 0; }
  int status() const { return status_; }
  std::size_t body_bytes() const { return body_bytes_; }
  bool keep_alive() const { return keep_alive_ && ok_; }

 private:
  bool send_all(const std::string& data);
  std::string head(int status, const std::string& content_type, const HttpHeaders& extra, const std::string& length_or_chunked);

  int fd_;
  const HttpRequest& request_;
  const HttpLimits& limits_;
  bool keep_alive_;
  bool ok_ = true;  // every write so far went out whole
  int status_ = 0;
  std::size_t body_bytes_ = 0;
};

class HttpServer {
 public:
  using Handler = std::function<void(HttpExchange&)>;
  // Checked once the headers are in, before the body is read (authentication, routing):
  // a status > 0 answers at once with `error_body(status, message)` and closes.
  struct Refusal {
    int status = 0;
    std::string message;
    HttpHeaders headers;
  };
  using Precheck = std::function<Refusal(const HttpRequest&)>;
  using ErrorBody = std::function<std::string(int status, const std::string& message)>;
  using Log = std::function<void(const HttpRequest&, int status, std::size_t bytes)>;

  HttpServer(HttpLimits limits, Handler handler, Precheck precheck, ErrorBody error_body, Log log);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (0: any free port) and returns the port; throws Error when it cannot.
  int bind(const std::string& host, int port);
  // Accepts until stop(); returns when every connection has closed.
  void run();
  // Stops accepting and closes connections that are idle or still sending a request;
  // requests being handled finish. Safe from any thread.
  void stop();
  int connections() const { return connections_.load(); }

 private:
  void serve_connection(int fd, std::string remote);
  void closed(int fd);
  static void linger(int fd);
  void refuse(int fd, int status, const std::string& message);

  HttpLimits limits_;
  Handler handler_;
  Precheck precheck_;
  ErrorBody error_body_;
  Log log_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::condition_variable all_closed_;
};

}  // namespace palm
