#include "train/heartbeat.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/hardware.h"

namespace palm {

namespace fs = std::filesystem;

double seconds_since_epoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

HeartbeatWriter::HeartbeatWriter(std::string dir, int rank) : dir_(std::move(dir)), host_(describe_hardware().hostname), rank_(rank) {
  fs::create_directories(dir_);
}

void HeartbeatWriter::beat(std::int64_t step, double loss, double tokens_per_s, const char* phase) {
  const nlohmann::json j = {{"rank", rank_},   {"host", host_},   {"pid", std::int64_t(::getpid())},
                            {"step", step},    {"loss", loss},    {"tokens_per_s", tokens_per_s},
                            {"phase", phase},  {"time", seconds_since_epoch()}};
  write_text_atomic((fs::path(dir_) / ("rank-" + std::to_string(rank_) + ".json")).string(), j.dump() + "\n");
}

std::vector<Heartbeat> read_heartbeats(const std::string& dir) {
  std::vector<Heartbeat> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("rank-", 0) != 0 || e.path().extension() != ".json") continue;
    std::string text;
    try {
      text = read_file(e.path().string());
    } catch (const std::exception&) {
      continue;  // replaced between listing and reading
    }
    const auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object()) continue;
    Heartbeat h;
    h.rank = j.value("rank", -1);
    h.host = j.value("host", "");
    h.pid = j.value("pid", std::int64_t(0));
    h.step = j.value("step", std::int64_t(0));
    h.loss = j.value("loss", 0.0);
    h.tokens_per_s = j.value("tokens_per_s", 0.0);
    h.phase = j.value("phase", "");
    h.time = j.value("time", 0.0);
    if (h.rank >= 0) out.push_back(h);
  }
  return out;
}

}  // namespace palm
