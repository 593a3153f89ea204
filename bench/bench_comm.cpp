// palm bench comm (under mpirun -np N): all-reduce, reduce-scatter and all-gather over
// the job's processes, by message size: time per call, algorithm bandwidth (bytes / time)
// and bus bandwidth (NCCL's convention: the bytes each link carries, so the numbers of
// different collectives and process counts compare with the link's speed).
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/check.h"
#include "common.h"
#include "dist/comm.h"

namespace palm {

namespace {

using Clock = std::chrono::steady_clock;

struct BenchCommOptions {
  std::int64_t max_mb = 64;
  bool json = false;
};

void run(const BenchCommOptions& o) {
  const auto world = make_world_comm();
  const int n = world->size(), rank = world->rank();
  PALM_CHECK(n > 1, "palm bench comm measures collectives between processes: run it under mpirun -np N (N >= 2)");
  nlohmann::json rows = nlohmann::json::array();
  if (rank == 0)
    fmt::print("bench comm  {} processes (OpenMPI)\n  {:>10} {:>16} {:>12} {:>14} {:>14}\n", n, "bytes", "collective",
               "time", "algo GB/s", "bus GB/s");
  for (std::int64_t bytes = 4096; bytes <= o.max_mb * (1 << 20); bytes *= 4) {
    const std::int64_t count = bytes / 4 / n * n;  // divisible by n for the scatter/gather shapes
    std::vector<float> a(std::size_t(count), 1.0f), b(std::size_t(count), 0.0f);
    for (const char* what : {"all_reduce", "reduce_scatter", "all_gather"}) {
      const std::string w = what;
      auto call = [&] {
        if (w == "all_reduce") world->all_reduce_sum(a.data(), count);
        else if (w == "reduce_scatter") world->reduce_scatter_sum(a.data(), b.data(), count / n);
        else world->all_gather(a.data(), b.data(), count / n);
      };
      call();  // warm-up (connections, buffers)
      world->barrier();
      int reps = 0;
      const auto t0 = Clock::now();
      double el = 0;
      do {
        call();
        ++reps;
        // everyone agrees on when to stop: rank 0's clock decides
        double go[1] = {rank == 0 && std::chrono::duration<double>(Clock::now() - t0).count() < 0.3 ? 1.0 : 0.0};
        world->all_reduce_sum(go, 1);
        el = std::chrono::duration<double>(Clock::now() - t0).count();
        if (go[0] == 0) break;
      } while (true);
      const double t = el / reps;
      const double algo = double(count) * 4 / t;
      const double factor = w == "all_reduce" ? 2.0 * (n - 1) / n : double(n - 1) / n;
      if (rank == 0) {
        fmt::print("  {:>10} {:>16} {:>10.1f}us {:>14.2f} {:>14.2f}\n", count * 4, w, 1e6 * t, algo / 1e9, algo * factor / 1e9);
        rows.push_back({{"bytes", count * 4}, {"collective", w}, {"seconds", t}, {"algo_bytes_per_s", algo},
                        {"bus_bytes_per_s", algo * factor}});
      }
    }
  }
  if (rank == 0 && o.json) fmt::print("{}\n", nlohmann::json({{"processes", n}, {"results", rows}}).dump());
}

}  // namespace

void register_bench_comm(CLI::App& bench) {
  auto o = std::make_shared<BenchCommOptions>();
  auto* cmd = bench.add_subcommand("comm", "Collective bandwidth by message size (run under mpirun -np N)");
  cmd->add_option("--max-mb", o->max_mb, "Largest message in MiB")->capture_default_str();
  cmd->add_flag("--json", o->json, "End with one JSON line");
  cmd->callback([o] { run(*o); });
}

}  // namespace palm
