#include "serve/dashboard.h"

#include <cstdio>
#include <mutex>

#include "serve/api.h"
#include "serve/http.h"
#include "serve/web.h"

namespace palm {

struct Dashboard::Impl {
  DashboardOptions o;
  WebRoutes web;
  std::unique_ptr<HttpServer> http;
  int bound_port = 0;
  std::mutex log_mu;

  Impl(const std::vector<std::string>& dirs, DashboardOptions opts) : o(std::move(opts)), web(dirs, false) {}

  HttpServer::Refusal precheck(const HttpRequest& q) const {
    HttpServer::Refusal r;
    if (!web.owns(q.path) && q.path != "/health") {
      r.status = 404;
      r.message = "no route " + q.method + " " + q.path + " (palm dashboard serves /runs and /api/runs)";
    } else if (q.method != "GET") {
      r.status = 405;
      r.message = q.method + " is not allowed on " + q.path + " (use GET)";
      r.headers.emplace_back("Allow", "GET");
    } else if (WebRoutes::needs_key(q.path) && !api_key_accepted(q, o.api_key)) {
      r.status = 401;
      r.message = "missing or wrong API key (Authorization: Bearer KEY)";
    }
    return r;
  }

  void handle(HttpExchange& x) const {
    if (x.request().path == "/health") return x.respond(200, "application/json", "{\"status\":\"ok\"}\n");
    web.handle(x);
  }

  void log(const HttpRequest& q, int status, std::size_t bytes) {
    if (!o.log) return;
    std::lock_guard<std::mutex> l(log_mu);
    std::string path;
    for (unsigned char c : q.path) path += (c < 0x20 || c == 0x7f) ? '?' : char(c);  // one request, one line
    std::fprintf(stderr, "palm dashboard: %s %s %d %zu bytes\n", q.remote.c_str(), path.c_str(), status, bytes);
  }
};

Dashboard::Dashboard(const std::vector<std::string>& run_dirs, DashboardOptions o)
    : impl_(std::make_unique<Impl>(run_dirs, std::move(o))) {
  Impl& s = *impl_;
  HttpLimits limits;
  limits.max_body_bytes = 4096;  // GET only: a body is never read (other methods are refused first)
  limits.max_connections = s.o.max_connections;
  s.http = std::make_unique<HttpServer>(
      limits, [&s](HttpExchange& x) { s.handle(x); }, [&s](const HttpRequest& q) { return s.precheck(q); },
      [](int status, const std::string& m) {
        return ApiError(status, m).body().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      },
      [&s](const HttpRequest& q, int status, std::size_t bytes) { s.log(q, status, bytes); });
}

Dashboard::~Dashboard() = default;

void Dashboard::bind() {
  Impl& s = *impl_;
  s.bound_port = s.http->bind(s.o.host, s.o.port);
  std::fprintf(stderr, "palm dashboard: listening on http://%s:%d/runs\n", s.o.host.c_str(), s.bound_port);
  std::fflush(stderr);
}

void Dashboard::listen() { impl_->http->run(); }
void Dashboard::stop() { impl_->http->stop(); }
int Dashboard::port() const { return impl_->bound_port; }

}  // namespace palm
