#include "base/progress.h"

#include <unistd.h>

#include <cstdio>

namespace palm {

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  }
  return buf;
}

Progress::Progress(std::string what, std::int64_t total, std::string unit)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), tty_(isatty(2)),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void Progress::update(std::int64_t done, const std::string& extra) {
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since < (tty_ ? 0.2 : 5.0)) return;
  last_draw_ = now;
  draw(done, extra, false);
}

void Progress::finish(const std::string& extra) { draw(total_, extra, true); }

void Progress::finish_at(std::int64_t done, const std::string& extra) { draw(done, extra, true); }

void Progress::draw(std::int64_t done, const std::string& extra, bool final) {
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = el > 0 ? done / el : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  std::fprintf(stderr, "%s%s %lld/%lld %s  %.2f %s/s  %s %s%s%s", tty_ ? "\r\033[K" : "",
               what_.c_str(), (long long)done, (long long)total_, unit_.c_str(), rate,
               unit_.c_str(), final ? "took" : "ETA",
               format_duration(final ? el : eta).c_str(), extra.empty() ? "" : "  ",
               extra.c_str());
  if (!tty_ || final) std::fputc('\n', stderr);
  std::fflush(stderr);
}

}  // namespace palm
