// A progress line for long work: done/total, rate and ETA, redrawn in place on a
// terminal and printed at most every few seconds otherwise (logs stay readable).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace palm {

class Progress {
 public:
  Progress(std::string what, std::int64_t total, std::string unit);
  void update(std::int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");
  // Work that stopped early (a signal): the final line reports `done`, not the total.
  void finish_at(std::int64_t done, const std::string& extra = "");

 private:
  void draw(std::int64_t done, const std::string& extra, bool final);
  std::string what_, unit_;
  std::int64_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_duration(double seconds);

}  // namespace palm
