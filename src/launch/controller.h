// `palm launch`: one controller that starts a training job on the existing launchers
// (OpenMPI's mpirun with a hostfile, or srun inside a Slurm allocation), watches every
// rank's heartbeat, stops the whole job when a rank dies or hangs, restarts it from the
// last complete checkpoint (on fewer hosts when some keep failing), records what it did
// in RUN/events.jsonl, and runs the --then stages on the result (docs/scaling.md).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace palm {

struct LaunchOptions {
  std::string run;                       // --out
  int np = 1;
  std::string hostfile;                  // OpenMPI format: "host [slots=N]" per line
  int min_np = 0;                        // 0: np (never shrink)
  int max_restarts = 3;
  double hang_timeout = 300;             // seconds without progress of a rank that has reported
  double start_timeout = 600;            // seconds for a rank's first heartbeat
  std::vector<std::string> then;         // "eval --task ...": palm subcommands after training
  std::vector<std::string> train_args;   // after `-- train`
  std::string launcher_args;             // extra mpirun / srun options, split as a shell would
  std::string palm_binary;               // the palm the ranks run
};

// Runs the job to its end; returns the exit status for `palm launch` (0: trained and every
// stage done). Bad input throws Error before anything starts.
int run_launch(const LaunchOptions& o);

// RUN/launch/status.json, with the state corrected when its controller is gone, and the
// restarts from events.jsonl (palm launch status).
nlohmann::json launch_status(const std::string& run);

}  // namespace palm
