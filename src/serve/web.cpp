#include "serve/web.h"

#include <cstring>

#include "serve/api.h"

namespace palm {

namespace {

// The pages load their scripts, styles and data from this server and nothing else
// (uPlot sizes its elements through inline styles: style-src allows them).
const HttpHeaders kPageHeaders = {
    {"Content-Security-Policy",
     "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
     "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"},
    {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"},
    {"Cache-Control", "no-cache"}};

std::string error_json(int status, const std::string& message) {
  return ApiError(status, message).body().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

bool starts_with(const std::string& s, const char* prefix) { return s.compare(0, std::strlen(prefix), prefix) == 0; }

}  // namespace

WebRoutes::WebRoutes(const std::vector<std::string>& run_dirs, bool playground) : playground_(playground) {
  if (!run_dirs.empty()) runs_ = std::make_unique<RunIndex>(run_dirs);
}

bool WebRoutes::owns(const std::string& path) const {
  return path == "/" || path == "/runs" || starts_with(path, "/assets/") || path == "/api/runs" ||
         starts_with(path, "/api/runs/");
}

bool WebRoutes::needs_key(const std::string& path) { return starts_with(path, "/api/"); }

void WebRoutes::handle(HttpExchange& x) const {
  const HttpRequest& q = x.request();
  const std::string& path = q.path;
  auto page = [&](const char* asset) {
    const WebAsset* a = find_web_asset(asset);
    x.respond(200, a->content_type, std::string(reinterpret_cast<const char*>(a->data), a->size), kPageHeaders);
  };
  if (path == "/") {
    if (playground_) return page("/playground.html");
    return x.respond(302, "text/plain", "the runs: /runs\n", {{"Location", "/runs"}});
  }
  if (path == "/runs") return page("/runs.html");
  if (starts_with(path, "/assets/")) {
    if (const WebAsset* a = find_web_asset(path))
      return x.respond(200, a->content_type, std::string(reinterpret_cast<const char*>(a->data), a->size), kPageHeaders);
    return x.respond(404, "application/json", error_json(404, "no asset " + path));
  }
  RunsReply r;
  if (!runs_ && path == "/api/runs") {
    r.body = nlohmann::json{{"runs", nlohmann::json::array()},
                            {"note", "no run directories are served (palm serve --runs DIR, or palm dashboard DIR...)"}}
                 .dump() +
             "\n";
  } else if (!runs_) {
    r = {404, "application/json", error_json(404, "no run directories are served")};
  } else if (path == "/api/runs") {
    r = runs_->list();
  } else if (path == "/api/runs/run") {
    r = runs_->run(q.query("id"));
  } else if (path == "/api/runs/metrics") {
    r = runs_->metrics(q.query("id"), q.query("from"), q.query("gen"));
  } else if (path == "/api/runs/file") {
    r = runs_->file(q.query("id"), q.query("name"));
  } else {
    r = {404, "application/json", error_json(404, "no route GET " + path)};
  }
  x.respond(r.status, r.content_type, r.body, {{"Cache-Control", "no-store"}, {"X-Content-Type-Options", "nosniff"}});
}

}  // namespace palm
