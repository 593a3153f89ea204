// Heartbeats: each rank of a `palm train` under `palm launch` rewrites one small JSON file
// (DIR/rank-R.json, temp file + rename, so a reader sees a whole beat or the previous one)
// after every step and around checkpoints; the controller reads them to see progress and
// to find the rank that stopped making any. Files, not sockets: they work the same on one
// host and on a shared file system, and a hung rank cannot block its reader.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace palm {

struct Heartbeat {
  int rank = 0;
  std::string host;
  std::int64_t pid = 0;
  std::int64_t step = 0;
  double loss = 0, tokens_per_s = 0;
  std::string phase;  // "ready" (set up, about to train), "step", "checkpoint"
  double time = 0;    // seconds since the epoch, when written
};

class HeartbeatWriter {
 public:
  HeartbeatWriter(std::string dir, int rank);  // creates dir
  void beat(std::int64_t step, double loss, double tokens_per_s, const char* phase);

 private:
  std::string dir_, host_;
  int rank_;
};

// Every DIR/rank-*.json that parses (a missing directory: none).
std::vector<Heartbeat> read_heartbeats(const std::string& dir);
double seconds_since_epoch();

}  // namespace palm
