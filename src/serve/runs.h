// The read-only view of training runs behind the /runs page (`palm serve --runs DIR`,
// `palm dashboard DIR...`): the runs found under the given directories and, of each,
// only what the page shows. Nothing a request says ever becomes a path: a run is chosen
// by an id out of the index, a file by a name out of a fixed list (or out of the listing
// of RUN/eval/), and a file is read only when its real path lies inside its run's real
// directory and it is a regular file, so `..` in any spelling, absolute paths and
// symlinks that lead out all end in an error, never in a byte of another file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace palm {

// An answer of the runs API: a status and a JSON (or text) body.
struct RunsReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

class RunIndex {
 public:
  // Each root must be an existing directory (Error naming it otherwise).
  explicit RunIndex(const std::vector<std::string>& roots);

  // GET /api/runs: {"runs": [{id, dir, modified, metrics_bytes}]}, newest first.
  RunsReply list() const;
  // GET /api/runs/run?id=: the run's config, which documents it has, its eval results
  // (RUN/eval/*.json) and palm launch's events (RUN/events.jsonl).
  RunsReply run(const std::string& id) const;
  // GET /api/runs/metrics?id=&from=&gen=: metrics.jsonl's records from byte `from` on
  // (at most ~1 MiB of lines per answer; `next` is where to continue). `gen` names the
  // file's identity: a rollback or a resume rewrites the file (a new inode), and an
  // answer for another gen, or a `from` past the end, starts again from 0 ("reset").
  RunsReply metrics(const std::string& id, const std::string& from, const std::string& gen) const;
  // GET /api/runs/file?id=&name=: MODEL_CARD.md or DATASHEET.md as text/markdown.
  RunsReply file(const std::string& id, const std::string& name) const;

  static constexpr std::int64_t kMetricsPageBytes = 1 << 20;
  static constexpr std::int64_t kMaxDocumentBytes = 4 << 20;

 private:
  struct Run {
    std::string id;
    std::filesystem::path real;  // canonical
    std::string dir;             // as shown: the root as given, then the path below it
  };
  std::vector<Run> discover() const;
  // The run with this id, or nullptr (and *reply set to the 404).
  bool find(const std::string& id, Run* run, RunsReply* reply) const;

  struct Root {
    std::filesystem::path real;
    std::string given, label;
  };
  std::vector<Root> roots_;
};

}  // namespace palm
