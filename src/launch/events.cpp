#include "launch/events.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/check.h"
#include "train/heartbeat.h"

namespace palm {

std::string events_path(const std::string& run) { return (std::filesystem::path(run) / "events.jsonl").string(); }

void append_event(const std::string& run, const std::string& event, nlohmann::json fields) {
  nlohmann::json j = {{"time", seconds_since_epoch()}, {"event", event}};
  j.update(fields);
  const std::string line = j.dump() + "\n";
  const std::string path = events_path(run);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  PALM_CHECK(fd >= 0, path, ": cannot append");
  // one write of a whole line: a reader never sees half an event
  const bool ok = ::write(fd, line.data(), line.size()) == ssize_t(line.size()) && ::fsync(fd) == 0;
  ::close(fd);
  PALM_CHECK(ok, path, ": write failed");
}

std::vector<nlohmann::json> read_events(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(events_path(run));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

}  // namespace palm
